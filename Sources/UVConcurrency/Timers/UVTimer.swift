import CLibUV

/// A one-shot timer on a ``UVEventLoop``: runs a closure on the loop thread after a delay, unless cancelled.
///
/// Create one with ``UVEventLoop/scheduleTimer(after:_:)`` on the loop thread. Timers due at the same
/// millisecond fire in the order they were scheduled. Delays are rounded up to whole milliseconds (libuv's
/// resolution) and measured on libuv's monotonic clock.
public final class UVTimer: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// The loop the timer runs on.
    public let loop: UVEventLoop
    private var handle: UnsafeMutablePointer<uv_timer_t>?
    private var body: (() -> Void)?

    init(loop: UVEventLoop, delay: Duration, body: @escaping () -> Void) throws(UVError) {
        self.loop = loop
        let milliseconds = try Self.milliseconds(delay)
        let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop.uvLoop, handle)
        self.handle = handle
        self.body = body
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = uv_timer_start(
            handle,
            { handle in
                Unmanaged<UVTimer>.fromOpaque(handle!.pointee.data).takeUnretainedValue().fire()
            },
            milliseconds,
            0
        )
        guard status == 0 else {
            self.close()
            throw UVError(.timerFailed, uvStatus: status, context: "starting a timer of \(delay)")
        }
        loop.register(self)
    }

    static func milliseconds(_ delay: Duration) throws(UVError) -> UInt64 {
        guard delay >= .zero else {
            throw UVError(.invalidArgument, context: "timer delay \(delay) is negative; use .zero to run on the next loop turn")
        }
        let (seconds, attoseconds) = delay.components
        let (wholeMilliseconds, remainder) = attoseconds.quotientAndRemainder(dividingBy: 1_000_000_000_000_000)
        let (total, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1000)
        guard !overflow else {
            throw UVError(.invalidArgument, context: "timer delay \(delay) is too long")
        }
        return total + UInt64(wholeMilliseconds) + (remainder > 0 ? 1 : 0)
    }

    /// Whether the timer is still waiting to fire (neither fired nor cancelled). Loop thread only.
    public var isPending: Bool {
        self.loop.preconditionInEventLoop()
        return self.body != nil
    }

    /// Cancels the timer: its closure will not run. Does nothing when it already fired or was cancelled.
    /// Loop thread only.
    public func cancel() {
        self.loop.preconditionInEventLoop()
        self.close()
    }

    private func fire() {
        let body = self.body
        self.close()
        body?()
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
    /// Runs `body` on the loop thread once `delay` has passed, unless the returned timer is cancelled first.
    /// Loop thread only.
    ///
    /// - Parameters:
    ///   - delay: How long to wait; rounded up to whole milliseconds. `.zero` runs on the next loop turn.
    ///   - body: What to run, on the loop thread.
    /// - Throws: ``UVError`` with ``UVError/Code/loopStopped`` once shutdown began, or
    ///   ``UVError/Code/invalidArgument`` for a negative delay.
    @discardableResult
    public func scheduleTimer(after delay: Duration, _ body: @escaping () -> Void) throws(UVError) -> UVTimer {
        self.preconditionInEventLoop()
        try self.throwIfStopping("scheduling a timer")
        return try UVTimer(loop: self, delay: delay, body: body)
    }

    /// Milliseconds on libuv's monotonic clock, as cached at the start of this loop turn. Loop thread only.
    public var now: UInt64 {
        self.preconditionInEventLoop()
        return uv_now(self.uvLoop)
    }
}
