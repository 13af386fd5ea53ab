import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// Reads newline-terminated lines from a descriptor on a ``UVEventLoop`` (made by
/// ``UVEventLoop/readLines(from:maxLineLength:incompleteLineTimeout:onLine:onEnd:)``).
///
/// The reader owns the descriptor from then on and closes it when reading ends. Each line is delivered without
/// its `\n` (and without a `\r` before it); bytes after the last newline at end of file are delivered as a
/// final line. Invalid UTF-8 is repaired with U+FFFD. A line longer than the limit ends reading with
/// ``EndReason/lineTooLong(limit:)``: a peer that breaks the line protocol is not buffered without bound. With
/// an `incompleteLineTimeout`, a line whose first bytes came but whose newline does not come within it ends
/// reading with ``EndReason/lineIncomplete(bytes:after:)``: a peer that sends half a message and stops holds
/// nothing for long.
public final class UVLineReader: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// Why reading ended. Reported once, through `onEnd`.
    public enum EndReason: Hashable, Sendable, CustomStringConvertible {
        /// Every writer closed its end (for a "supervisor alive" pipe: the other side died).
        case endOfFile
        /// ``UVLineReader/cancel()`` was called, or the loop shut down.
        case closed
        /// A line exceeded the limit; nothing after it was read.
        case lineTooLong(limit: Int)
        /// Reading failed.
        case readFailed(UVError)
        /// A line's first bytes came, and its newline did not come within the reader's
        /// `incompleteLineTimeout`; `bytes` were waiting.
        case lineIncomplete(bytes: Int, after: Duration)

        /// A short explanation.
        public var description: String {
            switch self {
            case .endOfFile: "end of file"
            case .closed: "closed"
            case .lineTooLong(let limit): "a line was longer than \(limit) bytes"
            case .readFailed(let error): "\(error)"
            case .lineIncomplete(let bytes, let after): "a line stayed incomplete for \(after) (\(bytes) bytes without a newline)"
            }
        }
    }

    /// The loop the reader runs on.
    public let loop: UVEventLoop
    /// The longest line accepted, in bytes, without its newline.
    public let maxLineLength: Int
    /// How long a started line may wait for its newline; nil: as long as it takes.
    public let incompleteLineTimeout: Duration?

    private var handle: UnsafeMutablePointer<uv_pipe_t>?
    private var onLine: ((String) -> Void)?
    private var onEnd: ((EndReason) -> Void)?
    private var pending: [UInt8] = []
    /// Runs out when the line in `pending` stays incomplete for `incompleteLineTimeout`.
    private var incompleteTimer: UVTimer?
    private let buffer: UnsafeMutableRawBufferPointer

    init(
        loop: UVEventLoop,
        descriptor: Int32,
        maxLineLength: Int,
        incompleteLineTimeout: Duration?,
        onLine: @escaping (String) -> Void,
        onEnd: @escaping (EndReason) -> Void
    ) throws(UVError) {
        guard maxLineLength > 0 else {
            throw UVError(.invalidArgument, context: "maxLineLength \(maxLineLength) must be at least 1")
        }
        if let timeout = incompleteLineTimeout, timeout <= .zero {
            throw UVError(.invalidArgument, context: "incompleteLineTimeout \(timeout) must be positive")
        }
        self.loop = loop
        self.maxLineLength = maxLineLength
        self.incompleteLineTimeout = incompleteLineTimeout
        self.buffer = .allocate(byteCount: 4096, alignment: 16)
        let handle = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        uv_pipe_init(loop.uvLoop, handle, 0)
        self.handle = handle
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        var status = uv_pipe_open(handle, descriptor)
        if status == 0 {
            status = uv_read_start(
                cuv_pipe_as_stream(handle),
                { handle, _, buffer in
                    let reader = Unmanaged<UVLineReader>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                    buffer!.pointee.base = reader.buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
                    buffer!.pointee.len = reader.buffer.count
                },
                { stream, count, _ in
                    Unmanaged<UVLineReader>.fromOpaque(stream!.pointee.data).takeUnretainedValue().didRead(count)
                }
            )
        }
        guard status == 0 else {
            self.close(reason: nil)
            throw UVError(.pipeFailed, uvStatus: status, context: "reading lines from descriptor \(descriptor)")
        }
        self.onLine = onLine
        self.onEnd = onEnd
        loop.register(self)
    }

    deinit {
        self.buffer.deallocate()
    }

    /// Stops reading and closes the descriptor; `onEnd` gets ``EndReason/closed``. Loop thread only.
    public func cancel() {
        self.loop.preconditionInEventLoop()
        self.close(reason: .closed)
    }

    /// Reads, without waiting, every byte already in the descriptor and delivers its lines (a last unterminated
    /// line too, when the writer is gone), then stops reading. For a pipe whose writer has exited: what it wrote
    /// before exiting is not lost to a race between its exit and this reader's next turn. `onEnd` gets
    /// ``EndReason/endOfFile`` or ``EndReason/closed``. Loop thread only.
    public func drainAndClose() {
        self.loop.preconditionInEventLoop()
        guard let handle = self.handle else { return }
        var descriptor: uv_os_fd_t = -1
        guard uv_fileno(cuv_pipe_as_handle(handle), &descriptor) == 0 else {
            self.close(reason: .closed)
            return
        }
        while self.handle != nil {
            let count = read(descriptor, self.buffer.baseAddress, self.buffer.count)
            if count > 0 {
                self.didRead(count)
            } else if count == 0 {
                self.didRead(Int(cuv_eof()))  // delivers the last partial line and closes
                return
            } else if errno == EINTR {
                continue
            } else {
                break  // EAGAIN: a writer is still alive; what was there has been delivered
            }
        }
        self.close(reason: .closed)
    }

    func closeForShutdown() {
        self.close(reason: .closed)
    }

    private func didRead(_ count: Int) {
        if count < 0 {
            if count == Int(cuv_eof()) {
                if !self.pending.isEmpty { self.deliver(self.pending[...]) }
                self.pending.removeAll()
                self.close(reason: .endOfFile)
            } else {
                let error = UVError(.readFailed, uvStatus: Int32(count), context: "reading lines")
                self.close(reason: .readFailed(error))
            }
            return
        }
        var bytes = UnsafeRawBufferPointer(rebasing: self.buffer[0..<count])
        var completedLine = false
        while let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
            let head = bytes[bytes.startIndex..<newline]
            guard self.pending.count + head.count <= self.maxLineLength else {
                self.close(reason: .lineTooLong(limit: self.maxLineLength))
                return
            }
            if self.pending.isEmpty {
                self.deliver(head)
            } else {
                self.pending.append(contentsOf: head)
                self.deliver(self.pending[...])
                self.pending.removeAll(keepingCapacity: true)
            }
            guard self.handle != nil else { return }  // `onLine` cancelled the reader
            completedLine = true
            bytes = UnsafeRawBufferPointer(rebasing: bytes[(newline + 1)...])
        }
        guard self.pending.count + bytes.count <= self.maxLineLength else {
            self.close(reason: .lineTooLong(limit: self.maxLineLength))
            return
        }
        self.pending.append(contentsOf: bytes)
        self.timeIncompleteLine(startedAnew: completedLine)
    }

    /// Starts the incomplete-line timer when a line has begun (again, when the bytes after a completed line
    /// begin the next one), stops it when no line is pending.
    private func timeIncompleteLine(startedAnew: Bool) {
        guard let timeout = self.incompleteLineTimeout else { return }
        if self.pending.isEmpty || startedAnew {
            self.incompleteTimer?.cancel()
            self.incompleteTimer = nil
        }
        guard !self.pending.isEmpty, self.incompleteTimer == nil else { return }
        self.incompleteTimer = try? self.loop.scheduleTimer(after: timeout) { [weak self] in
            guard let self else { return }
            self.incompleteTimer = nil
            self.close(reason: .lineIncomplete(bytes: self.pending.count, after: timeout))
        }
    }

    private func deliver<Bytes: Collection<UInt8>>(_ line: Bytes) {
        var text = String(decoding: line, as: UTF8.self)
        if text.utf8.last == UInt8(ascii: "\r") { text.removeLast() }
        self.onLine?(text)
    }

    private func close(reason: EndReason?) {
        guard let handle = self.handle else { return }
        self.handle = nil
        self.onLine = nil
        self.incompleteTimer?.cancel()
        self.incompleteTimer = nil
        self.loop.unregister(self)
        uvCloseReleasingOwner(handle)
        let onEnd = self.onEnd
        self.onEnd = nil
        if let reason { onEnd?(reason) }
    }
}

extension UVEventLoop {
    /// Reads newline-terminated lines from `descriptor` on the loop thread. Loop thread only.
    ///
    /// The reader takes ownership of `descriptor` (it is made non-blocking and closed when reading ends).
    /// - Parameters:
    ///   - descriptor: A pipe's read end, or another stream descriptor.
    ///   - maxLineLength: The longest line accepted, in bytes; a longer one ends reading.
    ///   - incompleteLineTimeout: How long a line whose first bytes came may wait for its newline before
    ///     reading ends with ``UVLineReader/EndReason/lineIncomplete(bytes:after:)``; nil: no limit.
    ///   - onLine: Runs on the loop thread for each line.
    ///   - onEnd: Runs once on the loop thread when reading ends, with the reason.
    /// - Throws: ``UVError`` with ``UVError/Code/pipeFailed`` (the descriptor is then still the caller's), or
    ///   ``UVError/Code/loopStopped`` once shutdown began.
    public func readLines(
        from descriptor: Int32,
        maxLineLength: Int = 4096,
        incompleteLineTimeout: Duration? = nil,
        onLine: @escaping (String) -> Void,
        onEnd: @escaping (UVLineReader.EndReason) -> Void
    ) throws(UVError) -> UVLineReader {
        self.preconditionInEventLoop()
        try self.throwIfStopping("reading lines from descriptor \(descriptor)")
        return try UVLineReader(
            loop: self,
            descriptor: descriptor,
            maxLineLength: maxLineLength,
            incompleteLineTimeout: incompleteLineTimeout,
            onLine: onLine,
            onEnd: onEnd
        )
    }
}
