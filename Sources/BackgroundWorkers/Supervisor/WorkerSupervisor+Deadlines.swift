import Logging
import UVConcurrency

extension WorkerSupervisor {
    /// Arms a worker's deadline: a libuv timer on the loop with the real clock, a deadline on the injected
    /// clock otherwise. Either way it comes back on a later turn of the loop, never on the arming stack: a zero
    /// delay cannot recurse.
    func arm(_ id: WorkerID, _ kind: DeadlineKind, after delay: Duration) {
        self.disarm(id, kind)
        guard let resources = self.resources(id) else { return }
        guard self.clock.isContinuous else {
            self.clockDeadlines.arm(id, kind, at: self.clock.now() + delay)
            self.scheduleClockDeadlines()
            return
        }
        do {
            let timer = try self.loop.scheduleTimer(after: delay) {
                self.assumeIsolated { $0.deadlineCame(id, kind) }
            }
            switch kind {
            case .restart: resources.restartTimer = timer
            case .kill: resources.killTimer = timer
            }
        } catch {
            // Only a stopping loop refuses, and a loop stops only after the supervisor did.
            self.logger.error("cannot arm the \(kind) deadline: \(error)", metadata: resources.metadata)
        }
    }

    func disarm(_ id: WorkerID, _ kind: DeadlineKind) {
        guard self.clock.isContinuous else {
            self.clockDeadlines.disarm(id, kind)
            return
        }
        guard let resources = self.resources(id) else { return }
        switch kind {
        case .restart:
            resources.restartTimer?.cancel()
            resources.restartTimer = nil
        case .kill:
            resources.killTimer?.cancel()
            resources.killTimer = nil
        }
    }

    private func deadlineCame(_ id: WorkerID, _ kind: DeadlineKind) {
        if let resources = self.resources(id) {
            switch kind {
            case .restart: resources.restartTimer = nil
            case .kill: resources.killTimer = nil
            }
        }
        self.apply(id, kind == .restart ? .restartDeadline : .killDeadline)
    }

    // MARK: - An injected clock

    /// With an injected clock one task sleeps until the earliest deadline, then the due ones come in order.
    private func scheduleClockDeadlines() {
        guard let earliest = self.clockDeadlines.earliest else {
            self.clockDeadlines.sleeper?.cancel()
            self.clockDeadlines.sleeper = nil
            self.clockDeadlines.sleepingUntil = nil
            return
        }
        if let current = self.clockDeadlines.sleepingUntil, current <= earliest, self.clockDeadlines.sleeper != nil { return }
        self.clockDeadlines.sleeper?.cancel()
        self.clockDeadlines.sleepingUntil = earliest
        let clock = self.clock
        self.clockDeadlines.sleeper = Task {
            do {
                try await clock.sleep(earliest)
            } catch {
                return  // replaced by an earlier deadline, or none is left
            }
            self.clockDeadlinesDue()
        }
    }

    private func clockDeadlinesDue() {
        self.clockDeadlines.sleeper = nil
        self.clockDeadlines.sleepingUntil = nil
        let now = self.clock.now()
        while let (id, kind) = self.clockDeadlines.takeDue(now: now) {
            self.apply(id, kind == .restart ? .restartDeadline : .killDeadline)
        }
        self.scheduleClockDeadlines()
    }
}

/// The deadlines of a supervisor whose clock was injected (tests, simulations), in the order they are due.
struct ClockDeadlines {
    private var entries: [(id: WorkerID, kind: DeadlineKind, at: Duration)] = []
    /// The one task sleeping on the clock, and until when.
    var sleeper: Task<Void, Never>?
    var sleepingUntil: Duration?

    var earliest: Duration? { self.entries.first?.at }

    mutating func arm(_ id: WorkerID, _ kind: DeadlineKind, at deadline: Duration) {
        self.disarm(id, kind)
        // Stable: equal deadlines come in the order they were armed.
        let index = self.entries.firstIndex { $0.at > deadline } ?? self.entries.endIndex
        self.entries.insert((id, kind, deadline), at: index)
    }

    mutating func disarm(_ id: WorkerID, _ kind: DeadlineKind) {
        self.entries.removeAll { $0.id == id && $0.kind == kind }
    }

    mutating func removeAll(of id: WorkerID) {
        self.entries.removeAll { $0.id == id }
    }

    /// Removes and returns the earliest deadline that is due.
    mutating func takeDue(now: Duration) -> (WorkerID, DeadlineKind)? {
        guard let first = self.entries.first, first.at <= now else { return nil }
        self.entries.removeFirst()
        return (first.id, first.kind)
    }
}
