/// A registered worker, as PostgreSQL's `BackgroundWorkerHandle`: its slot and the slot's generation.
///
/// A handle stays valid forever and answers for its own worker only: once that worker is gone it reports
/// `.stopped` with how it ended (its exit status, or why it was unregistered), also after the slot was reused
/// by another registration, and ``terminate()`` through it does nothing (no ABA). The supervisor keeps nothing
/// for it: the outcome lives in the handle. Every wait resolves: with the awaited state, with a
/// ``SupervisorError`` that says why it cannot come (the worker stopped, the supervisor stopped), or with
/// `CancellationError` when the waiting task is cancelled.
public struct BackgroundWorkerHandle: Sendable, Hashable, CustomStringConvertible {
    /// The worker's slot, 0 ..< `maxWorkerProcesses`.
    public let slot: Int
    /// The slot's generation when the worker was registered.
    public let generation: UInt64
    /// The supervisor that owns the worker.
    public let supervisor: WorkerSupervisor
    /// Where the supervisor leaves the worker's final state when it unregisters it.
    let record: WorkerRecord

    init(id: WorkerID, supervisor: WorkerSupervisor, record: WorkerRecord) {
        self.slot = id.slot
        self.generation = id.generation
        self.supervisor = supervisor
        self.record = record
    }

    var id: WorkerID { WorkerID(slot: self.slot, generation: self.generation) }

    /// Equal when slot, generation and supervisor are.
    public static func == (lhs: BackgroundWorkerHandle, rhs: BackgroundWorkerHandle) -> Bool {
        lhs.slot == rhs.slot && lhs.generation == rhs.generation && lhs.supervisor === rhs.supervisor
    }

    /// Hashes slot, generation and supervisor.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.slot)
        hasher.combine(self.generation)
        hasher.combine(ObjectIdentifier(self.supervisor))
    }

    /// `slot/generation`.
    public var description: String { "worker \(self.slot)/\(self.generation)" }

    /// The PostgreSQL status (`GetBackgroundWorkerPid`).
    public var status: WorkerStatus {
        get async { await self.supervisor.status(of: self) }
    }

    /// Everything known of the worker's state.
    public var detail: WorkerStatusDetail {
        get async { await self.supervisor.detail(of: self) }
    }

    /// The last `ERROR=` line the worker wrote to its status descriptor (the worker runtime writes one when
    /// the body throws, `bgworker-host` when a library or function is missing), or nil. Descriptor 4 is open
    /// for workers with `reportsReadiness` and for library and built-in entry points.
    public var lastReportedError: String? {
        get async { await self.supervisor.lastReportedError(of: self) }
    }

    /// Waits until the worker has a process (`WaitForBackgroundWorkerStartup`) and returns its pid.
    /// - Throws: ``SupervisorError`` ``SupervisorError/Code/workerStopped`` when it stopped or was never started
    ///   (the error's detail says why), ``SupervisorError/Code/supervisorStopped``, or `CancellationError`.
    public func waitForStartup() async throws -> Int32 {
        try await self.supervisor.waitForStartup(self)
    }

    /// Waits until the worker stops (`WaitForBackgroundWorkerShutdown`): for a restartable worker, its next exit.
    /// - Returns: `.stopped`, or `.supervisorDied` when the supervisor stopped first.
    /// - Throws: `CancellationError` only.
    public func waitForShutdown() async throws -> WorkerStatus {
        try await self.supervisor.waitForShutdown(self)
    }

    /// Waits until the worker reports readiness (a `READY=1` line on its readiness descriptor); returns its pid.
    /// A worker that exits and will be restarted is waited for through the restart.
    /// - Throws: ``SupervisorError`` ``SupervisorError/Code/notReportingReadiness`` for a worker registered
    ///   without `reportsReadiness`, ``SupervisorError/Code/workerStopped`` when it was unregistered or gave up,
    ///   ``SupervisorError/Code/supervisorStopped``, or `CancellationError`.
    public func waitForReady() async throws -> Int32 {
        try await self.supervisor.waitForReady(self)
    }

    /// Terminates the worker (`TerminateBackgroundWorker`): SIGTERM to its process group, SIGKILL after its
    /// grace period, never restarted. A worker that is not running is unregistered at once. A stale handle's
    /// terminate does nothing.
    public func terminate() async {
        await self.supervisor.terminate(self)
    }

    /// Clears a "gave up" state: the worker is started again with a fresh restart budget. Does nothing otherwise.
    public func resetRestartBudget() async {
        await self.supervisor.resetRestartBudget(self)
    }
}
