/// The arrivals of one signal, as an `AsyncSequence` (made by ``UVEventLoop/signals(_:)``).
///
/// The watcher is already active when the sequence is returned: a signal that arrives afterwards is not
/// missed, even before iteration starts.
///
/// **Buffering:** at most one arrival is held for a consumer that has not asked for the next element yet;
/// further arrivals before it does are merged into that one. Signals already coalesce in the kernel, so an
/// element means "the signal arrived at least once since the previous element", never a count.
///
/// The sequence finishes when the loop shuts down. The watcher stops when the iterating task is cancelled,
/// when iteration ends, or when the sequence and its iterator are dropped. Iterate it from one task only.
public struct UVSignalSequence: AsyncSequence, Sendable {
    /// Each element is the watched signal.
    public typealias Element = UVSignal
    /// Never fails.
    public typealias Failure = Never

    /// The watched signal.
    public let signal: UVSignal
    private let registration: Registration

    init(signal: UVSignal, registration: Registration) {
        self.signal = signal
        self.registration = registration
    }

    /// The sequence's iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        fileprivate var base: AsyncStream<UVSignal>.Iterator
        fileprivate let registration: Registration

        /// The next arrival, or `nil` once the watcher stopped.
        public mutating func next() async -> UVSignal? {
            await self.base.next()
        }

        /// The next arrival, or `nil` once the watcher stopped.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> UVSignal? {
            await self.base.next(isolation: actor)
        }
    }

    /// Makes the iterator.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: self.registration.stream.makeAsyncIterator(), registration: self.registration)
    }

    /// Owns the watcher: stops it when the stream terminates or when the last holder is gone.
    final class Registration: @unchecked Sendable {
        // @unchecked Sendable: `watcher` is touched only on the loop thread; `stream` is Sendable.
        let loop: UVEventLoop
        let stream: AsyncStream<UVSignal>
        var watcher: UVSignalWatcher?

        init(loop: UVEventLoop, stream: AsyncStream<UVSignal>) {
            self.loop = loop
            self.stream = stream
        }

        deinit {
            guard let watcher = self.watcher else { return }
            // On the loop thread, where the watcher may be touched; a no-op when already closed.
            self.loop.execute { watcher.cancel() }
        }
    }
}

extension UVEventLoop {
    /// Starts watching `signal` and returns its arrivals as an asynchronous sequence. Callable from any thread.
    ///
    /// The watcher is active when this returns, stops when iteration ends or the sequence is dropped, and the
    /// sequence finishes when the loop shuts down. See ``UVSignalSequence`` for its buffering.
    ///
    /// - Throws: ``UVError`` with ``UVError/Code/loopStopped`` once shutdown began, or
    ///   ``UVError/Code/signalFailed``.
    public func signals(_ signal: UVSignal) async throws(UVError) -> UVSignalSequence {
        let (stream, continuation) = AsyncStream<UVSignal>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let registration = UVSignalSequence.Registration(loop: self, stream: stream)
        let result: Result<Void, UVError> = await withCheckedContinuation { started in
            self.execute {
                do throws(UVError) {
                    try self.throwIfStopping("watching \(signal)")
                    let watcher = try UVSignalWatcher(
                        loop: self,
                        signal: signal,
                        body: { continuation.yield(signal) },
                        onClose: { continuation.finish() }
                    )
                    registration.watcher = watcher
                    continuation.onTermination = { [weak watcher] _ in
                        guard let watcher else { return }
                        self.execute { watcher.cancel() }
                    }
                    started.resume(returning: .success(()))
                } catch {
                    continuation.finish()
                    started.resume(returning: .failure(error))
                }
            }
        }
        try result.get()
        return UVSignalSequence(signal: signal, registration: registration)
    }
}
