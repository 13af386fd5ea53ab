// Re-exported: its one type is the element-agnostic sequence behind this module's public sequences, so that
// iterating them needs no import of its own.
@_exported import StreamSequences

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
/// when iteration ends, or when the sequence and its iterators are dropped. Iterate it from one task.
public typealias UVSignalSequence = StreamSequence<UVSignal>

/// Owns a signal sequence's watcher: stops it when the last holder of the sequence is gone.
final class SignalRegistration: @unchecked Sendable {
    // @unchecked Sendable: `watcher` is touched only on the loop thread.
    let loop: UVEventLoop
    var watcher: UVSignalWatcher?

    init(loop: UVEventLoop) {
        self.loop = loop
    }

    deinit {
        guard let watcher = self.watcher else { return }
        // On the loop thread, where the watcher may be touched; a no-op when already closed.
        self.loop.execute { watcher.cancel() }
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
        let registration = SignalRegistration(loop: self)
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
        return UVSignalSequence(stream, keepingAlive: registration)
    }
}
