import BackgroundWorkerControl

/// What local and remote worker handles have in common: code written against it works with a
/// ``BackgroundWorkerHandle`` of an in-process ``WorkerSupervisor`` and with a ``RemoteWorkerHandle`` of a
/// supervisor reached through ``SupervisorClient``.
///
/// The requirements throw because a remote handle can lose its connection
/// (``SupervisorError/Code/controlFailed``); a local handle's `status`, `detail` and `terminate()` never do.
public protocol WorkerHandleProtocol: Sendable {
    /// The worker's slot.
    var slot: Int { get }
    /// The slot's generation when the worker was registered.
    var generation: UInt64 { get }
    /// The PostgreSQL status (`GetBackgroundWorkerPid`).
    var status: WorkerStatus { get async throws }
    /// Everything known of the worker's state.
    var detail: WorkerStatusDetail { get async throws }
    /// Waits until the worker has a process and returns its pid (`WaitForBackgroundWorkerStartup`).
    func waitForStartup() async throws -> Int32
    /// Waits until the worker reports readiness and returns its pid.
    func waitForReady() async throws -> Int32
    /// Waits until the worker stops (`WaitForBackgroundWorkerShutdown`).
    func waitForShutdown() async throws -> WorkerStatus
    /// Terminates the worker (`TerminateBackgroundWorker`).
    func terminate() async throws
}

extension BackgroundWorkerHandle: WorkerHandleProtocol {}

/// A worker of a supervisor in another process, reached through a ``SupervisorClient``: the same API as a
/// ``BackgroundWorkerHandle``, each call one request on the client's connection.
///
/// It answers for its own registration (slot and generation) only. Once that worker is gone it reports
/// `.stopped` and how it ended for as long as the connection that registered it is open; through another
/// connection, a finished worker that is no longer registered is `unknownWorker`. Errors are
/// ``SupervisorError``s with the same codes as local ones (`workerStopped`, `supervisorStopped`, ...), plus
/// ``SupervisorError/Code/controlFailed`` when the connection ends.
public struct RemoteWorkerHandle: WorkerHandleProtocol, Hashable, CustomStringConvertible {
    /// The worker's slot.
    public let slot: Int
    /// The slot's generation when the worker was registered.
    public let generation: UInt64
    /// The connection it is reached through.
    public let client: SupervisorClient

    /// The reference the protocol uses for it.
    public var reference: WorkerReference { WorkerReference(slot: self.slot, generation: self.generation) }

    /// Equal when slot, generation and client are.
    public static func == (lhs: RemoteWorkerHandle, rhs: RemoteWorkerHandle) -> Bool {
        lhs.slot == rhs.slot && lhs.generation == rhs.generation && lhs.client === rhs.client
    }

    /// Hashes slot, generation and client.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.slot)
        hasher.combine(self.generation)
        hasher.combine(ObjectIdentifier(self.client))
    }

    /// `remote worker slot/generation`.
    public var description: String { "remote worker \(self.slot)/\(self.generation)" }

    /// Everything the supervisor says of the worker.
    public var info: WorkerInfo {
        get async throws { try await self.client.info(self.reference) }
    }

    /// The PostgreSQL status.
    public var status: WorkerStatus {
        get async throws {
            let info = try await self.info
            guard let status = WorkerStatus(wireName: info.status, pid: info.pid) else {
                throw SupervisorError(.controlFailed, "the supervisor reported an unknown status '\(info.status)'")
            }
            return status
        }
    }

    /// Everything known of the worker's state.
    public var detail: WorkerStatusDetail {
        get async throws {
            let info = try await self.info
            guard let detail = info.state.detail else {
                throw SupervisorError(.controlFailed, "the supervisor reported a state that is not understood: \(info.state)")
            }
            return detail
        }
    }

    /// The last `ERROR=` line the worker wrote, or nil.
    public var lastReportedError: String? {
        get async throws { try await self.info.lastReportedError }
    }

    /// Waits (as long as it takes) until the supervisor answers `until`.
    private func wait(_ until: WaitParams.Until) async throws -> WaitResult {
        while true {
            do {
                return try await self.client.wait(for: self.reference, until: until, timeout: .seconds(86_400))
            } catch let error as SupervisorError where (error.underlying as? ControlError)?.code == .timedOut {
                continue
            }
        }
    }

    /// Waits until the worker has a process and returns its pid.
    /// - Throws: ``SupervisorError`` `workerStopped`, `supervisorStopped`, `controlFailed`, or `CancellationError`.
    public func waitForStartup() async throws -> Int32 {
        guard let pid = try await self.wait(.started).pid else {
            throw SupervisorError(.controlFailed, "the supervisor's wait reply has no pid")
        }
        return pid
    }

    /// Waits until the worker reports readiness and returns its pid.
    /// - Throws: ``SupervisorError`` `notReportingReadiness`, `workerStopped`, `supervisorStopped`,
    ///   `controlFailed`, or `CancellationError`.
    public func waitForReady() async throws -> Int32 {
        guard let pid = try await self.wait(.ready).pid else {
            throw SupervisorError(.controlFailed, "the supervisor's wait reply has no pid")
        }
        return pid
    }

    /// Waits until the worker stops: `.stopped`, or `.supervisorDied` when the supervisor stopped first.
    public func waitForShutdown() async throws -> WorkerStatus {
        let result = try await self.wait(.stopped)
        return result.status == "supervisorDied" ? .supervisorDied : .stopped
    }

    /// Terminates the worker: SIGTERM, SIGKILL after its grace period, never restarted.
    public func terminate() async throws {
        try await self.client.terminate(self.reference)
    }

    /// Clears a spent restart budget.
    public func resetRestartBudget() async throws {
        try await self.client.resetRestartBudget(self.reference)
    }
}
