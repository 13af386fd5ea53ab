import Synchronization

/// Tasks suspended until code on a loop's thread resumes them: each resumed exactly once, by a value, by an
/// error, or by cancellation.
///
/// The list itself is not synchronised: keep it where only one thread touches it (a ``UVEventLoop``'s thread,
/// or an actor whose executor is the loop). Register a waiter with ``UVEventLoop/wait(isolation:register:cancel:)``,
/// which checks the awaited state and adds the waiter in the same synchronous step, so that nothing published
/// in between is missed.
public struct UVWaiterList<Value: Sendable> {
    private var entries: [(token: UVWaitToken, continuation: CheckedContinuation<Value, any Error>)] = []

    /// An empty list.
    public init() {}

    /// Whether no task is waiting.
    public var isEmpty: Bool { self.entries.isEmpty }

    /// Adds a waiter, identified by `token`.
    public mutating func add(_ token: UVWaitToken, _ continuation: CheckedContinuation<Value, any Error>) {
        self.entries.append((token, continuation))
    }

    /// Removes and returns the waiter of `token`, or nil when it was already resumed.
    public mutating func remove(_ token: UVWaitToken) -> CheckedContinuation<Value, any Error>? {
        guard let index = self.entries.firstIndex(where: { $0.token === token }) else { return nil }
        return self.entries.remove(at: index).continuation
    }

    /// Resumes every waiter with `result` and empties the list.
    public mutating func resumeAll(with result: Result<Value, any Error>) {
        guard !self.entries.isEmpty else { return }
        let entries = self.entries
        self.entries.removeAll()
        for entry in entries { entry.continuation.resume(with: result) }
    }

    /// Removes the waiter of `token`, if it still waits, and resumes it with `CancellationError`.
    public mutating func cancel(_ token: UVWaitToken) {
        self.remove(token)?.resume(throwing: CancellationError())
    }
}

/// Identifies one waiter of a ``UVWaiterList``; flagged from any thread when its task is cancelled.
public final class UVWaitToken: Sendable {
    private let cancelled = Atomic(false)

    /// A token for a new waiter.
    public init() {}

    /// Whether the waiting task was cancelled.
    public var isCancelled: Bool { self.cancelled.load(ordering: .acquiring) }

    /// Marks the waiter as cancelled.
    public func cancel() { self.cancelled.store(true, ordering: .releasing) }
}

extension UVEventLoop {
    /// Suspends the calling task until a waiter list on this loop resumes it, or until the task is cancelled.
    ///
    /// `register` runs once on the loop thread: synchronously when the caller is already there (an actor on
    /// this loop), otherwise through ``execute(_:)``. It either resumes the continuation at once (the awaited
    /// state is already there) or adds it to a ``UVWaiterList`` under the token, in the same synchronous step.
    /// A task cancelled before `register` runs is resumed with `CancellationError` without calling it. When the
    /// task is cancelled later, `cancel` runs on the loop thread with the token, and should call
    /// ``UVWaiterList/cancel(_:)``: a token no longer in the list means "already resumed", so nothing is
    /// resumed twice.
    public func wait<Value: Sendable>(
        isolation: isolated (any Actor)? = #isolation,
        register: @escaping @Sendable (UVWaitToken, CheckedContinuation<Value, any Error>) -> Void,
        cancel: @escaping @Sendable (UVWaitToken) -> Void
    ) async throws -> Value {
        let token = UVWaitToken()
        return try await withTaskCancellationHandler(
            operation: {
                try await withCheckedThrowingContinuation(isolation: isolation) { continuation in
                    let step: @Sendable () -> Void = {
                        if token.isCancelled {
                            continuation.resume(throwing: CancellationError())
                        } else {
                            register(token, continuation)
                        }
                    }
                    if self.inEventLoop { step() } else { self.execute(step) }
                }
            },
            onCancel: {
                // On the cancelling thread: flag first (a registration still on its way sees it), then hop.
                token.cancel()
                self.execute { cancel(token) }
            },
            isolation: isolation
        )
    }
}
