import BackgroundWorkerContract
import UVConcurrency

/// What one worker's rules need to know of the supervisor as a whole.
struct SupervisorFacts {
    /// The supervisor clock's time since it was created.
    var now: Duration
    /// The latest start phase reached; nil before the supervisor runs.
    var phase: BackgroundWorker.StartTime?
    /// Running, stopping, and how.
    var mode: SupervisorMode
    /// A crash reset waits for shared-memory workers to exit.
    var crashResetInProgress: Bool
    /// Configuration: keep never-restart static workers across a crash reset.
    var keepStaticWorkersAcrossCrashReset: Bool
    /// Configuration: how long SIGQUIT may take before SIGKILL.
    var quitGracePeriod: Duration
    /// A number in 0..<1 for the backoff's jitter, drawn only when a backoff with jitter needs one.
    var random: () -> Double
}

/// Where the supervisor is in its own life.
enum SupervisorMode: Hashable, Sendable {
    /// Created; registrations are static.
    case idle
    /// `run()` began; registrations are dynamic.
    case running
    /// Shutting down in this mode: nothing starts, nothing restarts.
    case stopping(ShutdownMode)
    /// Every worker was reaped after a shutdown in this mode.
    case stopped(ShutdownMode)

    var isStopping: Bool {
        switch self {
        case .stopping, .stopped: true
        case .idle, .running: false
        }
    }
}

/// One worker's lifecycle as a pure value: inputs in, actions out (PG-SEMANTICS 7–24).
///
/// Every rule about a single worker lives here: when it may start, what an exit means (done, restart, crash,
/// give up), how long a restart waits, what terminate and shutdown do, what its status and detail are, and
/// how each kind of waiter is answered. ``SupervisorStateMachine`` owns one per slot and adds the rules that
/// span workers (slots, phases, crash resets, the end of a shutdown). Neither knows processes or clocks: the
/// supervisor actor feeds them inputs and carries out the actions.
struct WorkerStateMachine: Equatable {
    /// The lifecycle. Exactly one of these at a time; nothing else says whether the worker runs.
    enum State: Equatable {
        /// Registered; waits for its start phase, for the supervisor to run, or for a crash reset to let
        /// shared-memory workers start.
        case waitingForPhase
        /// A spawn was asked for; `spawned` or `spawnFailed` comes next, before any other input.
        case starting
        /// A process runs.
        case running(Running)
        /// Exited (or failed to spawn); restarts when the restart deadline comes.
        case restartScheduled(after: Duration, spawnError: UVError?)
        /// Not running; waits for the crash reset under way to finish.
        case waitingForCrashReset
        /// The restart budget ran out; stays until ``Input/resetBudget``.
        case gaveUp
        /// Gone for good, its slot freed.
        case unregistered(UnregisterReason)
    }

    /// A running process.
    struct Running: Equatable {
        var pid: Int32
        var startedAt: Duration
        var ready = false
        /// It said it takes SIGUSR1 (`NOTIFY=1`): it may be named as a notify pid.
        var acceptsNotifications = false
        /// For a built-in entry point: the binary handed the process over (`BUILTIN=1`).
        var builtinStarted = false
        var terminateRequested = false
        /// The signals the supervisor sent to stop this process: a death by one of them is no crash.
        var stopSignals: SignalSet = []
        /// SIGQUIT by a crash reset, which waits for this exit.
        var inCrashReset = false
        /// A SIGKILL deadline is armed.
        var killArmed = false
    }

    /// What can happen to a worker.
    enum Input: Equatable {
        /// The supervisor runs, reached a later start phase, or finished a crash reset: start if allowed now.
        case phaseReached
        /// The spawn asked for succeeded.
        case spawned(pid: Int32)
        /// The spawn asked for failed.
        case spawnFailed(UVError)
        /// The worker wrote `READY=1`.
        case ready
        /// The worker wrote an `ERROR=` line.
        case reportedError(String)
        /// The worker wrote `NOTIFY=1`: it takes SIGUSR1.
        case acceptsNotifications
        /// A built-in worker's binary handed the process over (`BUILTIN=1`).
        case builtinStarted
        /// The process was reaped.
        case exited(UVExitStatus)
        /// Its handle asked to terminate it (PG-22).
        case terminate
        /// The restart deadline came.
        case restartDeadline
        /// The grace period after a stop signal is over.
        case killDeadline
        /// Another shared-memory worker crashed (PG-13).
        case crashReset
        /// The crash reset is over: every shared-memory worker has exited.
        case crashResetFinished
        /// The supervisor shuts down (PG-23).
        case shutdown(ShutdownMode)
        /// Its handle cleared a spent restart budget.
        case resetBudget
        /// The process with this pid is gone: it can no longer be notified.
        case processGone(pid: Int32)
    }

    let id: WorkerID
    let registration: BackgroundWorker
    let isStatic: Bool
    /// Registration order: workers start in this order (PG-8).
    let order: UInt64
    private(set) var state = State.waitingForPhase
    /// The process to wake with SIGUSR1, until that process is gone.
    private(set) var notifyPID: Int32?
    private(set) var hasEverStarted = false
    /// How many processes it has had.
    private(set) var starts = 0
    private(set) var lastExit: UVExitStatus?
    /// The last `ERROR=` line of any of its processes.
    private(set) var lastReportedError: String?
    /// When its restarts happened, within the budget's window.
    private(set) var restartTimes: [Duration] = []
    /// Restarts since the last run that lasted the backoff's `resetAfter`.
    private(set) var backoffAttempts = 0
    /// Consecutive runs shorter than the throttle's `stableAfter` (a failed spawn counts as one).
    private(set) var shortRuns = 0

    init(id: WorkerID, registration: BackgroundWorker, isStatic: Bool, order: UInt64) {
        self.id = id
        self.registration = registration
        self.isStatic = isStatic
        self.order = order
        self.notifyPID = registration.notifyPID
    }

    var usesSharedMemory: Bool { self.registration.flags.contains(.sharedMemoryAccess) }

    /// The pid of a running process that said it takes SIGUSR1.
    var notifiablePID: Int32? {
        if case .running(let running) = self.state, running.acceptsNotifications { return running.pid }
        return nil
    }

    /// When the running process started, on the supervisor clock.
    var startedAt: Duration? {
        if case .running(let running) = self.state { return running.startedAt }
        return nil
    }

    /// The running process's pid.
    var pid: Int32? {
        if case .running(let running) = self.state { return running.pid }
        return nil
    }

    /// Whether a crash reset still waits for this worker's exit.
    var isHeldByCrashReset: Bool {
        if case .running(let running) = self.state { return running.inCrashReset }
        return false
    }

    var isUnregistered: Bool {
        if case .unregistered = self.state { return true }
        return false
    }

    /// Whether the worker may start now: the supervisor runs, its phase is reached, and no crash reset holds
    /// shared-memory workers back.
    func canStart(_ facts: SupervisorFacts) -> Bool {
        guard facts.mode == .running, let phase = facts.phase, self.registration.startTime <= phase else { return false }
        return !(facts.crashResetInProgress && self.usesSharedMemory)
    }

    // MARK: - Inputs

    /// Applies one input and appends what the supervisor must do. Returns true when this input was a crash of
    /// a shared-memory worker, which resets every other one (the supervisor machine's part).
    @discardableResult
    mutating func handle(_ input: Input, _ facts: SupervisorFacts, _ actions: inout [SupervisorAction]) -> Bool {
        switch (self.state, input) {
        case (.unregistered, _):
            // Gone: nothing happens to it any more.
            return false

        case (_, .processGone(let pid)):
            if self.notifyPID == pid { self.notifyPID = nil }

        case (.starting, .spawned(let pid)):
            self.state = .running(Running(pid: pid, startedAt: facts.now))
            self.hasEverStarted = true
            self.starts += 1
            actions.append(.emit(self.id, .started(pid: pid)))
            self.notify(&actions)
            actions.append(.resumeStartup(self.id, .success(pid)))

        case (.starting, .spawnFailed(let error)):
            actions.append(.emit(self.id, .spawnFailed(error)))
            guard RestartPolicy.isTransient(error), let interval = self.registration.restartInterval.duration else {
                self.unregister(.spawnFailed(error), &actions)
                return false
            }
            self.shortRuns += 1
            self.scheduleRestart(base: interval, spawnError: error, facts, &actions)

        case (.starting, _):
            // Only the spawn's result may follow a spawn (the supervisor reports it at once).
            return false

        case (.waitingForPhase, .phaseReached):
            if self.canStart(facts) { self.start(&actions) }

        case (.running(var running), .ready):
            guard self.registration.reportsReadiness, !running.ready else { return false }
            running.ready = true
            self.state = .running(running)
            actions.append(.emit(self.id, .ready(pid: running.pid)))
            actions.append(.resumeReady(self.id, .success(running.pid)))

        case (.running(var running), .acceptsNotifications):
            guard !running.acceptsNotifications else { return false }
            running.acceptsNotifications = true
            self.state = .running(running)

        case (.running(var running), .builtinStarted):
            guard self.registration.entryPoint.builtinName != nil, !running.builtinStarted else { return false }
            running.builtinStarted = true
            self.state = .running(running)

        case (.running, .reportedError(let text)):
            // Only a process writes to its status descriptor (its last lines are read before its exit counts).
            self.lastReportedError = text
            actions.append(.emit(self.id, .reportedError(text)))

        case (.running(let running), .exited(let status)):
            return self.exited(running, status, facts, &actions)

        case (.running(var running), .terminate):
            guard !running.terminateRequested else { return false }
            running.terminateRequested = true
            self.state = .running(running)
            // Already being stopped (a fast shutdown, a crash reset): the exit will not restart it.
            if running.stopSignals.isEmpty {
                self.stop(signal: .terminate, grace: self.registration.stopGracePeriod, &actions)
            }

        case (.waitingForPhase, .terminate), (.restartScheduled, .terminate), (.waitingForCrashReset, .terminate),
            (.gaveUp, .terminate):
            // Not running: unregistered at once; its notify pid hears of it (PG-17, PG-22).
            self.unregister(.terminated, &actions)

        case (.restartScheduled, .restartDeadline):
            if self.canStart(facts) {
                self.restartTimes.append(facts.now)
                self.backoffAttempts += 1
                actions.append(.count(.restart))
                self.start(&actions)
            } else {
                self.state = .waitingForPhase
            }

        case (.running(var running), .killDeadline):
            guard running.killArmed else { return false }
            running.killArmed = false
            running.stopSignals.insert(.kill)
            self.state = .running(running)
            actions.append(.signal(self.id, pid: running.pid, .kill))

        case (.running(var running), .crashReset):
            guard self.usesSharedMemory, !running.inCrashReset else { return false }
            running.inCrashReset = true
            self.state = .running(running)
            self.stop(signal: .quit, grace: facts.quitGracePeriod, &actions)

        case (.restartScheduled, .crashReset), (.waitingForPhase, .crashReset):
            guard self.usesSharedMemory else { return false }
            if case .restartScheduled = self.state { actions.append(.disarm(self.id, .restart)) }
            self.state = .waitingForCrashReset

        case (.waitingForCrashReset, .crashResetFinished):
            self.crashResetFinished(facts, &actions)

        case (.running(let running), .shutdown(let mode)):
            switch mode {
            case .fast where running.stopSignals.isEmpty:
                self.stop(signal: .terminate, grace: self.registration.stopGracePeriod, &actions)
            case .immediate where !running.stopSignals.contains(.quit) && !running.stopSignals.contains(.kill):
                self.stop(signal: .quit, grace: facts.quitGracePeriod, &actions)
            default:
                break  // smart: it exits by itself; or already being stopped at least this hard
            }

        case (_, .shutdown(let mode)):
            // Not running: nothing will start it again (PG-23).
            self.unregister(.shutdown(mode), &actions)

        case (.gaveUp, .resetBudget):
            self.restartTimes.removeAll()
            self.backoffAttempts = 0
            self.shortRuns = 0
            if self.canStart(facts) {
                self.start(&actions)
            } else {
                self.state = .waitingForPhase
            }

        default:
            // Every other pair does nothing: a deadline or a reset that no longer applies, readiness from a
            // worker registered without it, a terminate of a worker already asked to stop.
            return false
        }
        return false
    }

    // MARK: - Exits

    /// The bgworker rules for an exit (PG-11–16, 22, 24), in order of precedence.
    private mutating func exited(
        _ running: Running,
        _ status: UVExitStatus,
        _ facts: SupervisorFacts,
        _ actions: inout [SupervisorAction]
    ) -> Bool {
        self.lastExit = status
        let uptime = facts.now - running.startedAt
        if let backoff = self.registration.restartBackoff, uptime >= backoff.resetAfter { self.backoffAttempts = 0 }
        if let throttle = self.registration.restartThrottle, uptime >= throttle.stableAfter {
            self.shortRuns = 0
        } else if running.stopSignals.isEmpty {
            // A short run that the supervisor did not end itself (a stop or a crash reset is not the worker's
            // failure).
            self.shortRuns += 1
        }
        if running.killArmed { actions.append(.disarm(self.id, .kill)) }
        actions.append(.emit(self.id, .exited(pid: running.pid, status: status)))
        actions.append(.count(.exit(cause: RestartPolicy.metricCause(status, stopSignals: running.stopSignals))))
        let crash = RestartPolicy.isCrash(status, stopSignals: running.stopSignals) && self.usesSharedMemory

        if running.inCrashReset {
            // A crash reset stopped it (or it died meanwhile: the same reset covers it).
            if running.terminateRequested {
                self.unregister(.terminated, &actions)
            } else {
                self.waitForCrashReset(&actions)
            }
            return false
        }
        if case .stopping(let mode) = facts.mode {
            // Exits during shutdown are no crashes and restart nothing (PG-24).
            self.unregister(.shutdown(mode), &actions)
            return false
        }
        if crash {
            // PG-13: every shared-memory worker is reset. A terminated one is still never restarted.
            actions.append(.emit(self.id, .crashReset))
            if running.terminateRequested {
                self.unregister(.terminated, &actions)
            } else {
                self.waitForCrashReset(&actions)
            }
            return true
        }
        if self.registration.entryPoint.builtinName != nil && !running.builtinStarted && running.stopSignals.isEmpty {
            // Its binary ran its own main: restarting would run it again, and again.
            self.unregister(.builtinNotHandled, &actions)
        } else if running.terminateRequested {
            self.unregister(.terminated, &actions)
        } else if status == .exited(0) {
            self.unregister(.completed, &actions)
        } else if let interval = self.registration.restartInterval.duration {
            self.scheduleRestart(base: interval, spawnError: nil, facts, &actions)
            if case .restartScheduled = self.state { self.notifyExit(&actions) }
        } else {
            self.unregister(.noRestart, &actions)
        }
        return false
    }

    private mutating func waitForCrashReset(_ actions: inout [SupervisorAction]) {
        self.state = .waitingForCrashReset
        self.notifyExit(&actions)
    }

    /// PG-14: never-restart workers are forgotten (static ones kept when configured so); the others come back
    /// at once, ignoring their interval, subject only to the throttle and the budget.
    private mutating func crashResetFinished(_ facts: SupervisorFacts, _ actions: inout [SupervisorAction]) {
        let keep = self.isStatic && facts.keepStaticWorkersAcrossCrashReset
        if case .stopping(let mode) = facts.mode {
            self.unregister(.shutdown(mode), &actions)
        } else if self.registration.restartInterval == .never && !keep {
            self.unregister(.crashReset, &actions)
        } else if !self.hasEverStarted {
            // It never ran: it simply waits for its phase again.
            self.state = .waitingForPhase
            if self.canStart(facts) { self.start(&actions) }
        } else {
            self.scheduleRestart(base: .zero, spawnError: nil, facts, useBackoff: false, &actions)
        }
    }

    // MARK: - Steps

    private mutating func start(_ actions: inout [SupervisorAction]) {
        self.state = .starting
        actions.append(.spawn(self.id))
    }

    /// Restarts after the computed delay (through a deadline, even a zero one: never on the same stack), or
    /// gives up when the budget is spent.
    private mutating func scheduleRestart(
        base: Duration,
        spawnError: UVError?,
        _ facts: SupervisorFacts,
        useBackoff: Bool = true,
        _ actions: inout [SupervisorAction]
    ) {
        if let budget = self.registration.restartBudget {
            self.restartTimes.removeAll { facts.now - $0 > budget.window }
            if self.restartTimes.count >= budget.maxRestarts {
                self.state = .gaveUp
                actions.append(.emit(self.id, .gaveUp))
                let error = self.stoppedError()
                actions.append(.resumeStartup(self.id, .failure(error)))
                actions.append(.resumeReady(self.id, .failure(error)))
                self.notifyExit(&actions)
                return
            }
        }
        let delay = RestartPolicy.delay(
            self.registration,
            base: base,
            useBackoff: useBackoff,
            backoffAttempts: self.backoffAttempts,
            shortRuns: self.shortRuns,
            random: facts.random
        )
        self.state = .restartScheduled(after: delay, spawnError: spawnError)
        actions.append(.emit(self.id, .restartScheduled(after: delay)))
        actions.append(.arm(self.id, .restart, after: delay))
    }

    /// Sends a stop signal to the running process and arms SIGKILL after `grace`.
    private mutating func stop(signal: UVSignal, grace: Duration, _ actions: inout [SupervisorAction]) {
        guard case .running(var running) = self.state else { return }
        running.stopSignals.insert(signal)
        running.killArmed = true
        self.state = .running(running)
        actions.append(.signal(self.id, pid: running.pid, signal))
        actions.append(.arm(self.id, .kill, after: grace))
    }

    /// PG-15 then PG-17: the slot is freed (by the supervisor machine, before any of these actions run), then
    /// everyone is told.
    private mutating func unregister(_ reason: UnregisterReason, _ actions: inout [SupervisorAction]) {
        if case .restartScheduled = self.state { actions.append(.disarm(self.id, .restart)) }
        self.state = .unregistered(reason)
        actions.append(.emit(self.id, .unregistered(reason)))
        self.notify(&actions)
        let error = self.stoppedError()
        actions.append(.resumeStartup(self.id, .failure(error)))
        actions.append(.resumeShutdown(self.id, .stopped))
        actions.append(.resumeReady(self.id, .failure(error)))
    }

    /// An exit that keeps the worker registered: the notify pid and the shutdown waiters hear of it (PG-17,
    /// PG-21: the first exit of a restartable worker ends `waitForShutdown`).
    private func notifyExit(_ actions: inout [SupervisorAction]) {
        self.notify(&actions)
        actions.append(.resumeShutdown(self.id, .stopped))
    }

    private func notify(_ actions: inout [SupervisorAction]) {
        if let pid = self.notifyPID { actions.append(.notify(pid: pid)) }
    }

    // MARK: - Answers

    /// The PostgreSQL status (`GetBackgroundWorkerPid`); `.supervisorDied` once the supervisor stopped.
    func status(supervisorStopped: Bool) -> WorkerStatus {
        if supervisorStopped { return .supervisorDied }
        switch self.state {
        case .running(let running): return .started(pid: running.pid)
        case .unregistered, .gaveUp: return .stopped
        case .waitingForPhase, .starting, .restartScheduled, .waitingForCrashReset:
            return self.hasEverStarted ? .stopped : .notYetStarted
        }
    }

    /// Everything known of the worker's state.
    var detail: WorkerStatusDetail {
        switch self.state {
        case .waitingForPhase, .starting:
            return .waitingForStartPhase
        case .running(let running):
            return running.stopSignals.isEmpty ? .running(pid: running.pid, ready: running.ready) : .stopping(pid: running.pid)
        case .restartScheduled(let after, let spawnError):
            return .restartScheduled(after: after, lastExit: spawnError == nil ? self.lastExit : nil, spawnError: spawnError)
        case .waitingForCrashReset:
            return .waitingForCrashReset
        case .gaveUp:
            let budget = self.registration.restartBudget
            return .gaveUp(lastExit: self.lastExit, restarts: budget?.maxRestarts ?? 0, window: budget?.window ?? .zero)
        case .unregistered(let reason):
            return .unregistered(reason, lastExit: self.lastExit)
        }
    }

    /// `waitForStartup()`: the pid, an error saying why it will not come, or nil to wait.
    func startupAnswer(stoppedBy mode: ShutdownMode?) -> Result<Int32, SupervisorError>? {
        if let mode { return .failure(self.supervisorStoppedError(mode)) }
        switch self.state {
        case .running(let running): return .success(running.pid)
        case .unregistered, .gaveUp: return .failure(self.stoppedError())
        default: return self.hasEverStarted ? .failure(self.stoppedError()) : nil
        }
    }

    /// `waitForShutdown()`: `.stopped`, `.supervisorDied`, or nil to wait for the next exit.
    func shutdownAnswer(stoppedBy mode: ShutdownMode?) -> WorkerStatus? {
        if mode != nil { return .supervisorDied }
        return self.pid == nil && (self.hasEverStarted || self.isUnregistered) ? .stopped : nil
    }

    /// `waitForReady()`: the pid of a ready process, an error saying why it will not come, or nil to wait
    /// (also through restarts).
    func readyAnswer(stoppedBy mode: ShutdownMode?) -> Result<Int32, SupervisorError>? {
        guard self.registration.reportsReadiness else {
            return .failure(
                SupervisorError(
                    .notReportingReadiness,
                    "worker '\(self.registration.name)' was registered without reportsReadiness; await waitForStartup() instead"
                )
            )
        }
        if let mode { return .failure(self.supervisorStoppedError(mode)) }
        switch self.state {
        case .running(let running) where running.ready: return .success(running.pid)
        case .unregistered, .gaveUp: return .failure(self.stoppedError())
        default: return nil
        }
    }

    func stoppedError() -> SupervisorError {
        SupervisorError(.workerStopped, "worker '\(self.registration.name)' \(self.detail)", detail: self.detail)
    }

    func supervisorStoppedError(_ mode: ShutdownMode) -> SupervisorError {
        SupervisorError(
            .supervisorStopped,
            "the supervisor stopped after a \(mode) shutdown; worker '\(self.registration.name)' \(self.detail)",
            detail: self.detail
        )
    }
}
