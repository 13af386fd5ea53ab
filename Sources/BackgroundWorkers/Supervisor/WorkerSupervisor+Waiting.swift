import Synchronization
import UVConcurrency

extension WorkerSupervisor {
    /// Which list a waiter is in.
    enum WaitKind {
        case startup
        case shutdown
        case ready
    }

    /// Waits on a worker's state with the check and the registration in one synchronous step on the loop
    /// thread, and removes the waiter by token when the task is cancelled (resumed exactly once either way).
    private func wait<Value: Sendable>(
        _ handle: BackgroundWorkerHandle,
        _ kind: WaitKind,
        immediate: (ManagedWorker?) throws -> Value?,
        add: @escaping @Sendable (ManagedWorker, ObjectIdentifier, CheckedContinuation<Value, any Error>) -> Void
    ) async throws -> Value {
        if let value = try immediate(self.worker(handle)) { return value }
        let token = CancelToken()
        let loop = self.loop
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                // Still on the loop thread, in the same synchronous step as the check above.
                self.assumeIsolated { supervisor in
                    guard !token.isCancelled else {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    guard let worker = supervisor.worker(handle) else {
                        continuation.resume(throwing: SupervisorError(.supervisorStopped, "the worker is gone"))
                        return
                    }
                    add(worker, ObjectIdentifier(token), continuation)
                }
            }
        } onCancel: {
            token.cancel()
            loop.execute {
                self.assumeIsolated { $0.cancelWaiter(handle, kind, ObjectIdentifier(token)) }
            }
        }
    }

    private func cancelWaiter(_ handle: BackgroundWorkerHandle, _ kind: WaitKind, _ token: ObjectIdentifier) {
        guard let worker = self.worker(handle) else { return }
        switch kind {
        case .startup: worker.startupWaiters.remove(token)?.resume(throwing: CancellationError())
        case .shutdown: worker.shutdownWaiters.remove(token)?.resume(throwing: CancellationError())
        case .ready: worker.readyWaiters.remove(token)?.resume(throwing: CancellationError())
        }
    }

    private var supervisorStoppedError: SupervisorError {
        SupervisorError(.supervisorStopped, "the supervisor has stopped")
    }

    private func goneError(_ handle: BackgroundWorkerHandle) -> SupervisorError {
        let detail = self.detail(of: handle)
        return SupervisorError(.workerStopped, "\(handle) \(detail)", detail: detail)
    }

    func waitForStartup(_ handle: BackgroundWorkerHandle) async throws -> Int32 {
        try await self.wait(handle, .startup) { worker -> Int32? in
            if case .stopped = self.runState { throw self.supervisorStoppedError }
            guard let worker else { throw self.goneError(handle) }
            if let process = worker.process { return process.pid }
            if worker.hasEverStarted || worker.gaveUp { throw self.stoppedError(worker) }
            return nil
        } add: { worker, token, continuation in
            worker.startupWaiters.add(token, continuation)
        }
    }

    func waitForShutdown(_ handle: BackgroundWorkerHandle) async throws -> WorkerStatus {
        try await self.wait(handle, .shutdown) { worker -> WorkerStatus? in
            if case .stopped = self.runState { return .supervisorDied }
            guard let worker else { return .stopped }
            if worker.process == nil && worker.hasEverStarted { return .stopped }
            return nil
        } add: { worker, token, continuation in
            worker.shutdownWaiters.add(token, continuation)
        }
    }

    func waitForReady(_ handle: BackgroundWorkerHandle) async throws -> Int32 {
        try await self.wait(handle, .ready) { worker -> Int32? in
            if case .stopped = self.runState { throw self.supervisorStoppedError }
            guard let worker else { throw self.goneError(handle) }
            guard worker.registration.reportsReadiness else {
                throw SupervisorError(
                    .notReportingReadiness,
                    "worker '\(worker.registration.name)' was registered without reportsReadiness; await waitForStartup() instead"
                )
            }
            if worker.ready, let process = worker.process { return process.pid }
            if worker.gaveUp { throw self.stoppedError(worker) }
            return nil
        } add: { worker, token, continuation in
            worker.readyWaiters.add(token, continuation)
        }
    }
}

/// Identifies one waiter; flagged from any thread when its task is cancelled.
final class CancelToken: Sendable {
    private let cancelled = Atomic(false)

    var isCancelled: Bool { self.cancelled.load(ordering: .acquiring) }

    func cancel() { self.cancelled.store(true, ordering: .releasing) }
}
