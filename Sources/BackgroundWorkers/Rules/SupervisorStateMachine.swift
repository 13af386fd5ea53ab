import BackgroundWorkerContract
import UVConcurrency

/// The supervisor's rules as a pure value: the slot table of ``WorkerStateMachine``s and the rules that span
/// workers (registration, start phases, crash resets, the end of a shutdown). Inputs in, actions out; no
/// processes, timers or clocks: the ``WorkerSupervisor`` actor feeds it the time and carries out the actions.
struct SupervisorStateMachine {
    /// The settings the rules read.
    struct Settings: Equatable {
        var maxWorkerProcesses: Int
        var keepStaticWorkersAcrossCrashReset: Bool
        var quitGracePeriod: Duration
        /// This process: always a valid notify pid (the supervisor keeps it safe from SIGUSR1).
        var supervisorPID: Int32
    }

    /// The readings an input comes with: the supervisor clock's time and a source of random numbers in 0..<1
    /// for jitter.
    struct Readings {
        var now: Duration
        var random: () -> Double
    }

    let settings: Settings
    private(set) var mode = SupervisorMode.idle
    /// The latest start phase reached; nil before `run()`.
    private(set) var phase: BackgroundWorker.StartTime?
    private var slots: SlotTable<WorkerStateMachine>
    private var registrations: UInt64 = 0
    /// Control-socket clients that said they take SIGUSR1, by pid, with how many of their connections are open.
    private var notifiablePeers: [Int32: Int] = [:]

    init(settings: Settings) {
        self.settings = settings
        self.slots = SlotTable(capacity: settings.maxWorkerProcesses)
    }

    // MARK: - Queries

    /// The live registration `id`, or nil once it was unregistered.
    func worker(_ id: WorkerID) -> WorkerStateMachine? { self.slots[id] }

    /// Every live registration, in slot order.
    var workers: some Sequence<WorkerStateMachine> { self.slots.all }

    var slotsInUse: Int { self.slots.used }
    /// Whether a registration would find a free slot.
    var hasFreeSlot: Bool { self.slots.used < self.slots.capacity }

    var capacity: Int { self.slots.capacity }

    /// How the supervisor stopped, once it has.
    var stoppedBy: ShutdownMode? {
        if case .stopped(let mode) = self.mode { return mode }
        return nil
    }

    /// Whether a crash reset still waits for a shared-memory worker to exit.
    var crashResetInProgress: Bool { self.slots.all.contains { $0.isHeldByCrashReset } }

    /// How many workers have a process.
    var runningCount: Int { self.slots.all.reduce(0) { $0 + ($1.pid == nil ? 0 : 1) } }

    /// Whether `pid` may be named as a notify pid: this process (which keeps SIGUSR1 handled), or a running
    /// worker that said it takes SIGUSR1 (PostgreSQL: a live postmaster child, all of which handle it). Any
    /// other process could be killed by SIGUSR1's default action.
    func isNotifiable(_ pid: Int32) -> Bool {
        pid == self.settings.supervisorPID || self.notifiablePeers[pid] != nil
            || self.slots.all.contains { $0.notifiablePID == pid }
    }

    /// Why `pid` may not be named as a notify pid, for the refusal.
    func notNotifiableReason(_ pid: Int32) -> String {
        if let worker = self.slots.all.first(where: { $0.pid == pid }) {
            return "is worker '\(worker.registration.name)', which has not said it takes SIGUSR1 (a NOTIFY=1 line on its status descriptor, which the Swift worker runtime writes; SIGUSR1's default action would end it)"
        }
        return "is neither this supervisor (pid \(self.settings.supervisorPID)), one of its running workers, nor a connected control client that takes SIGUSR1"
    }

    // MARK: - Control clients (PG-19 across processes)

    /// A control-socket client that takes SIGUSR1 connected: it may be a notify pid while connected.
    mutating func peerConnected(pid: Int32) {
        self.notifiablePeers[pid, default: 0] += 1
    }

    /// One of its connections ended. With its last one, it can no longer be notified: notify pids naming it
    /// are cleared, as for a process that ended.
    mutating func peerDisconnected(pid: Int32, _ readings: Readings, _ actions: inout [SupervisorAction]) {
        guard let count = self.notifiablePeers[pid] else { return }
        guard count <= 1 else {
            self.notifiablePeers[pid] = count - 1
            return
        }
        self.notifiablePeers[pid] = nil
        guard !self.isNotifiable(pid) else { return }
        for worker in self.slots.all where worker.notifyPID == pid {
            self.handle(worker.id, .processGone(pid: pid), readings, &actions)
        }
    }

    private func facts(_ readings: Readings) -> SupervisorFacts {
        SupervisorFacts(
            now: readings.now,
            phase: self.phase,
            mode: self.mode,
            crashResetInProgress: self.crashResetInProgress,
            keepStaticWorkersAcrossCrashReset: self.settings.keepStaticWorkersAcrossCrashReset,
            quitGracePeriod: self.settings.quitGracePeriod,
            random: readings.random
        )
    }

    // MARK: - Registration (PG-2–5, 18)

    /// Registers a worker: static before `run()`, dynamic after. Starts it at once when its phase is reached.
    /// Refusals change nothing (a refusal at shutdown wakes a notifiable notify pid, PG-17). `check` looks at
    /// what the rules cannot see (whether the entry point's files exist), after the rules passed.
    mutating func register(
        _ worker: BackgroundWorker,
        _ readings: Readings,
        check: (BackgroundWorker) throws(RegistrationError) -> Void = { _ in },
        _ actions: inout [SupervisorAction]
    ) -> Result<WorkerID, SupervisorError> {
        let isStatic: Bool
        switch self.mode {
        case .idle:
            isStatic = true
        case .running:
            isStatic = false
        case .stopping, .stopped:
            if let pid = worker.notifyPID, self.isNotifiable(pid) { actions.append(.notify(pid: pid)) }
            return .failure(
                SupervisorError(.shuttingDown, "the supervisor is shutting down and takes no new registrations (worker '\(worker.name)')")
            )
        }
        do {
            try worker.validate(isStatic: isStatic)
            try check(worker)
        } catch {
            return .failure(SupervisorError(.invalidRegistration, error.description, registrationError: error))
        }
        if let pid = worker.notifyPID, !self.isNotifiable(pid) {
            return .failure(
                SupervisorError(
                    .notifyPIDRefused,
                    "notifyPID \(pid) of worker '\(worker.name)' \(self.notNotifiableReason(pid))"
                )
            )
        }
        let order = self.registrations
        guard
            let id = self.slots.insert({ id in
                WorkerStateMachine(id: id, registration: worker, isStatic: isStatic, order: order)
            })
        else {
            return .failure(
                SupervisorError(
                    .noFreeSlot,
                    "no free worker slot: \(self.slots.used) of \(self.slots.capacity) in use; raise maxWorkerProcesses or wait for a worker to stop (worker '\(worker.name)')"
                )
            )
        }
        self.registrations += 1
        actions.append(.emit(id, .registered))
        self.handle(id, .phaseReached, readings, &actions)
        return .success(id)
    }

    // MARK: - Phases (PG-7, PG-8)

    /// `run()` began: static workers of the first phase start.
    mutating func run(_ readings: Readings, _ actions: inout [SupervisorAction]) {
        guard self.mode == .idle else { return }
        self.mode = .running
        self.reachPhase(.supervisorStart, readings, &actions)
    }

    /// The startup step moved the supervisor to a later phase: the workers it admits start, in registration
    /// order.
    mutating func reachPhase(_ phase: BackgroundWorker.StartTime, _ readings: Readings, _ actions: inout [SupervisorAction]) {
        guard self.mode == .running else { return }
        if let current = self.phase, current >= phase { return }
        self.phase = phase
        self.startEligible(readings, &actions)
    }

    private mutating func startEligible(_ readings: Readings, _ actions: inout [SupervisorAction]) {
        for id in self.slots.all.sorted(by: { $0.order < $1.order }).map(\.id) {
            self.handle(id, .phaseReached, readings, &actions)
        }
    }

    // MARK: - Inputs

    /// Applies an input to one worker, then the rules that span workers: notify pids pointing at a process
    /// that ended are cleared (PG-19); a crash of a shared-memory worker resets the others (PG-13); a reset
    /// that has no worker left to wait for finishes (PG-14); a shutdown with no process left ends.
    mutating func handle(
        _ id: WorkerID,
        _ input: WorkerStateMachine.Input,
        _ readings: Readings,
        _ actions: inout [SupervisorAction]
    ) {
        guard var worker = self.slots[id] else { return }  // unregistered already: a stale handle, a late deadline
        let endedPID = if case .exited = input { worker.pid } else { Int32?.none }
        let wasHeldByReset = worker.isHeldByCrashReset
        let crashed = worker.handle(input, self.facts(readings), &actions)
        self.store(worker, &actions)

        if let endedPID {
            for other in self.slots.all where other.notifyPID == endedPID {
                self.handle(other.id, .processGone(pid: endedPID), readings, &actions)
            }
        }
        if crashed {
            for other in self.slots.all.sorted(by: { $0.order < $1.order }) where other.usesSharedMemory {
                self.handle(other.id, .crashReset, readings, &actions)
            }
        }
        if (crashed || wasHeldByReset) && !self.crashResetInProgress {
            self.finishCrashReset(readings, &actions)
        }
        self.finishShutdownIfIdle(&actions)
    }

    /// Every shared-memory worker has exited: new shared memory, then the waiting workers come back or are
    /// forgotten, and workers registered meanwhile may start.
    private mutating func finishCrashReset(_ readings: Readings, _ actions: inout [SupervisorAction]) {
        actions.append(.rebuildSharedMemory)
        for id in self.slots.all.sorted(by: { $0.order < $1.order }).map(\.id) {
            self.handle(id, .crashResetFinished, readings, &actions)
        }
        self.startEligible(readings, &actions)
    }

    /// Writes a worker back, or frees its slot once it is unregistered (before anyone is told: PG-15).
    private mutating func store(_ worker: WorkerStateMachine, _ actions: inout [SupervisorAction]) {
        if worker.isUnregistered {
            self.slots.remove(worker.id)
            actions.append(.released(worker))
        } else {
            self.slots.update(worker.id, worker)
        }
    }

    // MARK: - Shutdown (PG-23, PG-24)

    /// Starts shutting down, or moves to a stronger mode (smart → fast → immediate). Workers that are not
    /// running are unregistered at once; running ones are signalled as the mode says.
    mutating func shutdown(_ mode: ShutdownMode, _ readings: Readings, _ actions: inout [SupervisorAction]) {
        switch self.mode {
        case .idle, .running:
            self.mode = .stopping(mode)
        case .stopping(let current):
            guard mode.isStronger(than: current) else { return }
            self.mode = .stopping(mode)
        case .stopped:
            return
        }
        for id in self.slots.all.sorted(by: { $0.order < $1.order }).map(\.id) {
            self.handle(id, .shutdown(mode), readings, &actions)
        }
        self.finishShutdownIfIdle(&actions)
    }

    /// Shutdown ends when no registration is left: every worker that was not running was unregistered when
    /// it began, and every running one is unregistered at its exit.
    private mutating func finishShutdownIfIdle(_ actions: inout [SupervisorAction]) {
        guard case .stopping(let mode) = self.mode, self.slots.used == 0 else { return }
        self.mode = .stopped(mode)
        actions.append(.stopped(mode))
    }
}
