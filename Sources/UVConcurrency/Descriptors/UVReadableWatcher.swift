import CLibUV

/// Watches a descriptor on a ``UVEventLoop`` and runs a closure on the loop thread each time it is readable (or
/// at end of file, or on an error: reading then says which), until cancelled. The descriptor stays the caller's:
/// the watcher neither reads nor closes it. Cancel the watcher before closing the descriptor.
public final class UVReadableWatcher: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// The loop the watcher runs on.
    public let loop: UVEventLoop
    /// The watched descriptor.
    public let descriptor: Int32
    private var handle: UnsafeMutablePointer<uv_poll_t>?
    private var body: (() -> Void)?

    init(loop: UVEventLoop, descriptor: Int32, body: @escaping () -> Void) throws(UVError) {
        self.loop = loop
        self.descriptor = descriptor
        let handle = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let status = uv_poll_init(loop.uvLoop, handle, descriptor)
        guard status == 0 else {
            handle.deallocate()
            throw UVError(.pipeFailed, uvStatus: status, context: "watching descriptor \(descriptor)")
        }
        self.handle = handle
        self.body = body
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let started = uv_poll_start(handle, Int32(UV_READABLE.rawValue)) { handle, _, _ in
            Unmanaged<UVReadableWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue().body?()
        }
        guard started == 0 else {
            self.close()
            throw UVError(.pipeFailed, uvStatus: started, context: "watching descriptor \(descriptor)")
        }
        loop.register(self)
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
    }
}

extension UVEventLoop {
    /// Runs `body` on the loop thread whenever `descriptor` is readable, until the returned watcher is cancelled
    /// or the loop shuts down. Loop thread only.
    /// - Throws: ``UVError`` with ``UVError/Code/loopStopped`` once shutdown began, or
    ///   ``UVError/Code/pipeFailed`` when libuv cannot watch the descriptor.
    public func watchReadable(_ descriptor: Int32, _ body: @escaping () -> Void) throws(UVError) -> UVReadableWatcher {
        self.preconditionInEventLoop()
        try self.throwIfStopping("watching descriptor \(descriptor)")
        return try UVReadableWatcher(loop: self, descriptor: descriptor, body: body)
    }
}
