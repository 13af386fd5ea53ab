import UVConcurrency

/// One generation of one slot: a registration, for as long as anyone holds its handle.
struct WorkerID: Hashable, Sendable, CustomStringConvertible {
    let slot: Int
    let generation: UInt64

    var description: String { "\(self.slot)/\(self.generation)" }
}

/// The two deadlines a worker can have.
enum DeadlineKind: Hashable, Sendable {
    /// A restart is due.
    case restart
    /// The stop signal's grace period is over: SIGKILL.
    case kill
}

/// What the metrics count beyond the events.
enum Counted: Equatable {
    /// A restart began (after an exit, a failed spawn or a crash reset).
    case restart
    /// An exit, by cause: `done` (code 0), `restart` (code 1, or a stop the supervisor asked for), `crash`.
    case exit(cause: String)
}

/// What the rules ask the supervisor actor to do. The actor owns the processes, timers, waiters and
/// subscribers, and carries these out in order; it decides nothing itself.
enum SupervisorAction: Equatable {
    /// Start the worker's process, then report `spawned` or `spawnFailed` before anything else.
    case spawn(WorkerID)
    /// Send a signal to the worker's process group.
    case signal(WorkerID, pid: Int32, UVSignal)
    /// Arm (or re-arm) a deadline this long from now; it comes back as the matching input.
    case arm(WorkerID, DeadlineKind, after: Duration)
    /// Disarm a deadline.
    case disarm(WorkerID, DeadlineKind)
    /// Resume the tasks waiting for the worker's startup.
    case resumeStartup(WorkerID, Result<Int32, SupervisorError>)
    /// Resume the tasks waiting for the worker's next exit.
    case resumeShutdown(WorkerID, WorkerStatus)
    /// Resume the tasks waiting for the worker's readiness.
    case resumeReady(WorkerID, Result<Int32, SupervisorError>)
    /// Send SIGUSR1 to this process.
    case notify(pid: Int32)
    /// Publish an event (subscribers, log, metrics).
    case emit(WorkerID, WorkerEvent.Kind)
    /// Count something the events alone do not tell (metrics).
    case count(Counted)
    /// The worker's slot is free: release what the actor holds for it; its handles keep this final state.
    case released(WorkerStateMachine)
    /// A crash reset has finished: replace the shared-memory segment.
    case rebuildSharedMemory
    /// Shutdown has finished: every worker is reaped and unregistered.
    case stopped(ShutdownMode)
}
