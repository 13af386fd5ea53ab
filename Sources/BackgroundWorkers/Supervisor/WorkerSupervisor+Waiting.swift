import UVConcurrency

extension WorkerSupervisor {
    /// Answers at once from the rules when the awaited state is there (or cannot come), otherwise waits on the
    /// worker's list; the rules' actions resume it. The check and the registration happen in one synchronous
    /// step on the loop thread, so nothing that happens in between is missed.
    private func wait<Value: Sendable>(
        _ handle: BackgroundWorkerHandle,
        _ list: any ReferenceWritableKeyPath<WorkerResources, UVWaiterList<Value>> & Sendable,
        answer: @escaping @Sendable (WorkerStateMachine, ShutdownMode?) -> Result<Value, SupervisorError>?
    ) async throws -> Value {
        let worker = self.ownState(of: handle)
        if let result = answer(worker, self.machine.stoppedBy) { return try result.get() }
        let id = handle.id
        return try await self.loop.wait { token, continuation in
            self.assumeIsolated { supervisor in
                if let worker = supervisor.state(of: handle), let result = answer(worker, supervisor.machine.stoppedBy) {
                    continuation.resume(with: result.mapError { $0 })
                } else if let resources = supervisor.resources(id) {
                    resources[keyPath: list].add(token, continuation)
                } else {
                    continuation.resume(throwing: SupervisorError(.workerStopped, "\(handle) is no longer registered"))
                }
            }
        } cancel: { token in
            self.assumeIsolated { supervisor in
                guard let resources = supervisor.resources(id) else { return }
                resources[keyPath: list].cancel(token)
            }
        }
    }

    func waitForStartup(_ handle: BackgroundWorkerHandle) async throws -> Int32 {
        try await self.wait(handle, \.startupWaiters) { $0.startupAnswer(stoppedBy: $1) }
    }

    func waitForShutdown(_ handle: BackgroundWorkerHandle) async throws -> WorkerStatus {
        try await self.wait(handle, \.shutdownWaiters) { worker, mode in worker.shutdownAnswer(stoppedBy: mode).map { .success($0) } }
    }

    func waitForReady(_ handle: BackgroundWorkerHandle) async throws -> Int32 {
        try await self.wait(handle, \.readyWaiters) { $0.readyAnswer(stoppedBy: $1) }
    }

    /// Terminates a worker through its handle (PG-22); a stale handle's terminate does nothing.
    func terminate(_ handle: BackgroundWorkerHandle) {
        guard handle.supervisor === self else { return }
        self.apply(handle.id, .terminate)
    }

    /// Clears a spent restart budget.
    func resetRestartBudget(_ handle: BackgroundWorkerHandle) {
        guard handle.supervisor === self else { return }
        self.apply(handle.id, .resetBudget)
    }
}
