/// Tasks waiting for a value that the loop thread publishes once (an exit status, the end of a stream).
final class LoopWaiters<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `list` is touched only on the loop thread.
    private var list = UVWaiterList<Value>()

    /// Waits for the value that `current` returns on the loop thread (nil: not yet).
    func wait(on loop: UVEventLoop, current: @escaping @Sendable () -> Value?) async throws -> Value {
        try await loop.wait { token, continuation in
            if let value = current() {
                continuation.resume(returning: value)
            } else {
                self.list.add(token, continuation)
            }
        } cancel: { token in
            self.list.cancel(token)
        }
    }

    /// Loop thread: resumes every waiter with `value`.
    func resumeAll(returning value: Value) {
        self.list.resumeAll(with: .success(value))
    }
}
