import Synchronization

/// Tasks waiting for a value that the loop thread publishes once (an exit status, the end of a stream).
///
/// The check for the value and the registration of the waiter happen in one synchronous step on the loop
/// thread, so a value published in between cannot be missed. Cancellation is by token: a waiter removed by
/// cancellation is never resumed again, and a token that is no longer registered means "already resumed".
final class LoopWaiters<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `entries` is touched only on the loop thread.
    private var entries: [(token: WaitToken, continuation: CheckedContinuation<Value, any Error>)] = []

    /// Waits for the value that `current` returns on the loop thread (nil: not yet).
    func wait(on loop: UVEventLoop, current: @escaping @Sendable () -> Value?) async throws -> Value {
        let token = WaitToken()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                loop.execute {
                    if let value = current() {
                        continuation.resume(returning: value)
                    } else if token.isCancelled {
                        continuation.resume(throwing: CancellationError())
                    } else {
                        self.entries.append((token, continuation))
                    }
                }
            }
        } onCancel: {
            // On the cancelling thread: flag first (a registration still on its way sees it), then hop.
            token.cancel()
            loop.execute { self.cancel(token) }
        }
    }

    /// Loop thread: resumes every waiter with `value`.
    func resumeAll(returning value: Value) {
        guard !self.entries.isEmpty else { return }
        let entries = self.entries
        self.entries.removeAll()
        for entry in entries {
            entry.continuation.resume(returning: value)
        }
    }

    private func cancel(_ token: WaitToken) {
        guard let index = self.entries.firstIndex(where: { $0.token === token }) else { return }
        let entry = self.entries.remove(at: index)
        entry.continuation.resume(throwing: CancellationError())
    }
}

/// Identifies one waiter; flagged from any thread when its task is cancelled.
final class WaitToken: Sendable {
    private let cancelled = Atomic(false)

    var isCancelled: Bool { self.cancelled.load(ordering: .acquiring) }

    func cancel() { self.cancelled.store(true, ordering: .releasing) }
}
