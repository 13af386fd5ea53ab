import CLibUV
import CWorkerSupport
import Synchronization

/// Watches one signal on a ``UVEventLoop`` and runs a closure on the loop thread each time it arrives.
///
/// Standard signals coalesce (several arrivals may give one callback) and say nothing of their sender: treat
/// a callback as "at least one arrived since the last one".
///
/// SIGUSR1 is special: once any watcher of it has started in the process, the process never returns to
/// SIGUSR1's default action (which kills), even after every watcher stopped and every loop shut down. libuv
/// restores the default action when the last watcher of a signal closes, so this package keeps one hidden
/// watcher of SIGUSR1 for the life of the process.
public final class UVSignalWatcher: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// The loop the watcher runs on.
    public let loop: UVEventLoop
    /// The watched signal.
    public let signal: UVSignal
    private var handle: UnsafeMutablePointer<uv_signal_t>?
    private var body: (() -> Void)?
    private var onClose: (() -> Void)?

    init(loop: UVEventLoop, signal: UVSignal, body: @escaping () -> Void, onClose: (() -> Void)?) throws(UVError) {
        self.loop = loop
        self.signal = signal
        if signal.rawValue == SIGUSR1 {
            try SignalKeeper.keepWatched(signal)
        }
        let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
        uv_signal_init(loop.uvLoop, handle)
        self.handle = handle
        self.body = body
        self.onClose = onClose
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = uv_signal_start(
            handle,
            { handle, _ in
                Unmanaged<UVSignalWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue().body?()
            },
            signal.rawValue
        )
        guard status == 0 else {
            self.onClose = nil
            self.close()
            throw UVError(.signalFailed, uvStatus: status, context: "watching \(signal)")
        }
        // The loop thread must be able to take the signal, whatever mask it inherited.
        var number = signal.rawValue
        _ = cws_unblock_signals(&number, 1)
        loop.register(self)
    }

    /// Whether the watcher still runs its closure. Loop thread only.
    public var isActive: Bool {
        self.loop.preconditionInEventLoop()
        return self.handle != nil
    }

    /// Stops watching. Does nothing when already stopped. Loop thread only.
    public func cancel() {
        self.loop.preconditionInEventLoop()
        self.close()
    }

    func closeForShutdown() {
        self.close()
    }

    private func close() {
        self.body = nil
        guard let handle = self.handle else { return }
        self.handle = nil
        self.loop.unregister(self)
        uvCloseReleasingOwner(handle)
        let onClose = self.onClose
        self.onClose = nil
        onClose?()
    }
}

extension UVEventLoop {
    /// Runs `body` on the loop thread whenever `signal` arrives, until the returned watcher is cancelled or the
    /// loop shuts down. Loop thread only.
    ///
    /// Do not watch SIGCHLD to reap children (libuv reaps its own), and never watch one signal both here and
    /// with Dispatch or ServiceLifecycle: Dispatch blocks the signal and this watcher would starve.
    ///
    /// - Throws: ``UVError`` with ``UVError/Code/loopStopped`` once shutdown began, or
    ///   ``UVError/Code/signalFailed`` when libuv refuses the signal number.
    public func watchSignal(_ signal: UVSignal, _ body: @escaping () -> Void) throws(UVError) -> UVSignalWatcher {
        self.preconditionInEventLoop()
        try self.throwIfStopping("watching \(signal)")
        return try UVSignalWatcher(loop: self, signal: signal, body: body, onClose: nil)
    }

}

/// Keeps one never-stopped libuv watcher of certain signals for the life of the process, so that libuv never
/// restores their default action (SIGUSR1's default kills the process).
///
/// The watcher lives on a private loop that is never run: libuv's handler still sees a watcher and keeps its
/// disposition; the messages for that loop are dropped once its (close-on-exec) signal pipe is full.
enum SignalKeeper {
    private struct State: ~Copyable {
        var loop: UnsafeMutablePointer<uv_loop_t>? = nil
        var kept: Set<Int32> = []
    }

    private static let state = Mutex(State())

    static func keepWatched(_ signal: UVSignal) throws(UVError) {
        let status: Int32 = Self.state.withLock { state in
            if state.kept.contains(signal.rawValue) { return 0 }
            if state.loop == nil {
                let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
                let status = uv_loop_init(loop)
                guard status == 0 else {
                    loop.deallocate()
                    return status
                }
                state.loop = loop
            }
            let handle = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
            uv_signal_init(state.loop, handle)
            let status = uv_signal_start(handle, { _, _ in }, signal.rawValue)
            guard status == 0 else {
                // The handle is registered with the never-run keeper loop; it stays allocated with it.
                return status
            }
            state.kept.insert(signal.rawValue)
            return 0
        }
        guard status == 0 else {
            throw UVError(.signalFailed, uvStatus: status, context: "keeping a process-wide watcher of \(signal)")
        }
    }
}

extension UVSignal {
    /// Makes this process handle the signal for the rest of its life, so that its default action (SIGUSR1's
    /// terminates the process) never applies again: libuv keeps one watcher of it that is never stopped, and
    /// any loop's watchers and sequences of the signal still see every arrival. Calling it again does nothing.
    ///
    /// A process that may receive the signal before anything watches it calls this first: a supervisor that
    /// can be its own notify pid does, at creation.
    /// - Throws: ``UVError`` with ``UVError/Code/signalFailed`` when libuv refuses the signal number.
    public func keepHandledForProcessLifetime() throws(UVError) {
        try SignalKeeper.keepWatched(self)
    }
}
