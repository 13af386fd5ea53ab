import CLibUV
import CWorkerSupport

#if canImport(Glibc)
import Glibc
#endif

/// Who is at the other end of a Unix domain socket, as the kernel says (`SO_PEERCRED`), not as the peer
/// claims.
public struct UVPeerCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The peer's process id when it connected.
    public let pid: Int32
    /// The peer's user id.
    public let uid: UInt32
    /// The peer's group id.
    public let gid: UInt32

    /// `pid 42, uid 1000, gid 1000`.
    public var description: String { "pid \(self.pid), uid \(self.uid), gid \(self.gid)" }
}

/// A listening Unix domain socket on a ``UVEventLoop`` (made by ``UVEventLoop/listenUnix(path:mode:backlog:onConnection:)``).
/// Each accepted connection is handed over with its peer's credentials, before anything is read from it.
public final class UVUnixListener: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// The loop it runs on.
    public let loop: UVEventLoop
    /// The socket's path.
    public let path: String

    private var handle: UnsafeMutablePointer<uv_pipe_t>?
    private var onConnection: ((UVUnixConnection) -> Void)?
    /// Whether this listener made the socket file (and so removes it).
    private var bound = false

    init(loop: UVEventLoop, path: String, mode: mode_t, backlog: Int32, onConnection: @escaping (UVUnixConnection) -> Void) throws(UVError) {
        self.loop = loop
        self.path = path
        let handle = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        uv_pipe_init(loop.uvLoop, handle, 0)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        var status = uv_pipe_bind(handle, path)
        self.bound = status == 0
        if status == 0 && chmod(path, mode) != 0 { status = -errno }
        if status == 0 {
            status = uv_listen(cuv_pipe_as_stream(handle), backlog) { server, status in
                guard let server, status == 0 else { return }
                Unmanaged<UVUnixListener>.fromOpaque(server.pointee.data).takeUnretainedValue().accept()
            }
        }
        guard status == 0 else {
            self.close()
            throw UVError(.pipeFailed, uvStatus: status, context: "listening on Unix socket '\(path)'")
        }
        self.onConnection = onConnection
        loop.register(self)
    }

    private func accept() {
        guard let server = self.handle else { return }
        let client = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        uv_pipe_init(self.loop.uvLoop, client, 0)
        client.pointee.data = nil
        guard uv_accept(cuv_pipe_as_stream(server), cuv_pipe_as_stream(client)) == 0 else {
            uvCloseReleasingOwner(client)
            return
        }
        var descriptor: uv_os_fd_t = -1
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard uv_fileno(cuv_pipe_as_handle(client), &descriptor) == 0,
            cws_peer_credentials(descriptor, &pid, &uid, &gid) == 0
        else {
            uvCloseReleasingOwner(client)
            return
        }
        let peer = UVPeerCredentials(pid: pid, uid: uid, gid: gid)
        let connection = UVUnixConnection(loop: self.loop, handle: client, peer: peer)
        self.onConnection?(connection)
    }

    /// Stops listening and removes the socket file. Connections already accepted stay open. Loop thread only.
    public func close() {
        guard let handle = self.handle else { return }
        self.handle = nil
        self.onConnection = nil
        self.loop.unregister(self)
        uvCloseReleasingOwner(handle)
        if self.bound { unlink(self.path) }
    }

    func closeForShutdown() {
        self.close()
    }
}

/// A connection of a Unix domain socket, accepted by a ``UVUnixListener`` or made by
/// ``UVEventLoop/connectUnix(path:)``: newline-delimited reading with a line-length limit, and writes in order.
/// Loop thread only.
public final class UVUnixConnection: UVHandleOwner, @unchecked Sendable {
    // @unchecked Sendable: every `var` is touched only on the loop thread.

    /// The loop it runs on.
    public let loop: UVEventLoop
    /// The process at the other end: who connected, for an accepted connection; the listening process, for
    /// one made by ``UVEventLoop/connectUnix(path:)``.
    public let peer: UVPeerCredentials

    private var handle: UnsafeMutablePointer<uv_pipe_t>?
    private var reader: UVLineReader?
    private var onEnd: ((UVLineReader.EndReason) -> Void)?

    init(loop: UVEventLoop, handle: UnsafeMutablePointer<uv_pipe_t>, peer: UVPeerCredentials) {
        self.loop = loop
        self.peer = peer
        self.handle = handle
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.register(self)
    }

    /// Whether it is still open.
    public var isOpen: Bool { self.handle != nil }

    /// Starts reading lines; `onEnd` runs once when the peer closed its end, a line was too long or stayed
    /// incomplete longer than `incompleteLineTimeout`, reading failed or ``close()`` was called. Call it once.
    /// - Throws: ``UVError`` when the connection is closed or reading cannot start.
    public func readLines(
        maxLineLength: Int,
        incompleteLineTimeout: Duration? = nil,
        onLine: @escaping (String) -> Void,
        onEnd: @escaping (UVLineReader.EndReason) -> Void
    ) throws(UVError) {
        guard let handle = self.handle, self.reader == nil else {
            throw UVError(.invalidArgument, context: "reading a connection that is closed or already read")
        }
        var descriptor: uv_os_fd_t = -1
        guard uv_fileno(cuv_pipe_as_handle(handle), &descriptor) == 0 else {
            throw UVError(.pipeFailed, context: "reading a connection without a descriptor")
        }
        // The reader owns a duplicate; this handle keeps the original for writing.
        let duplicate = fcntl(descriptor, F_DUPFD_CLOEXEC, 3)
        guard duplicate >= 0 else { throw UVError(.pipeFailed, errno: errno, context: "duplicating a connection's descriptor") }
        self.onEnd = onEnd
        do {
            self.reader = try self.loop.readLines(
                from: duplicate,
                maxLineLength: maxLineLength,
                incompleteLineTimeout: incompleteLineTimeout,
                onLine: onLine
            ) { [weak self] reason in
                guard let self else { return }
                let onEnd = self.onEnd
                self.onEnd = nil
                self.reader = nil
                onEnd?(reason)
            }
        } catch {
            _ = Glibc.close(duplicate)
            self.onEnd = nil
            throw error
        }
    }

    /// Writes `bytes` after what was written before; nothing happens once the connection is closed.
    public func write(_ bytes: [UInt8]) {
        guard let handle = self.handle, !bytes.isEmpty else { return }
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 1)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        request.pointee.data = storage
        var buffer = uv_buf_init(storage.assumingMemoryBound(to: CChar.self), UInt32(bytes.count))
        let status = uv_write(request, cuv_pipe_as_stream(handle), &buffer, 1) { request, _ in
            request!.pointee.data.deallocate()
            request!.deallocate()
        }
        if status != 0 {
            storage.deallocate()
            request.deallocate()
        }
    }

    /// Bytes written but not yet taken by the kernel: what a peer that does not read lets pile up.
    public var pendingWriteBytes: Int {
        guard let handle = self.handle else { return 0 }
        return uv_stream_get_write_queue_size(cuv_pipe_as_stream(handle))
    }

    /// Closes once what was written so far has been sent (an error reply before a refusal, say): reading stops
    /// now, the descriptor closes after the last write.
    public func closeAfterWriting() {
        guard let handle = self.handle else { return }
        self.reader?.cancel()
        self.reader = nil
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let status = uv_shutdown(request, cuv_pipe_as_stream(handle)) { request, _ in
            let connection = Unmanaged<UVUnixConnection>.fromOpaque(request!.pointee.data).takeRetainedValue()
            request!.deallocate()
            connection.close()
        }
        if status != 0 {
            Unmanaged<UVUnixConnection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            self.close()
        }
    }

    /// Closes both directions; a reader still running ends with ``UVLineReader/EndReason/closed``.
    public func close() {
        guard let handle = self.handle else { return }
        self.handle = nil
        self.loop.unregister(self)
        self.reader?.cancel()
        self.reader = nil
        uvCloseReleasingOwner(handle)
    }

    func closeForShutdown() {
        self.close()
    }
}

extension UVEventLoop {
    /// Connects to the Unix domain socket at `path`. Loop thread only.
    /// - Throws: ``UVError`` with ``UVError/Code/pipeFailed``: `ENOENT` when nothing is at `path`,
    ///   `ECONNREFUSED` when nobody listens there (a stale socket), `EACCES` when this user may not connect,
    ///   `EAGAIN` when the listener's backlog is full.
    public func connectUnix(path: String) throws(UVError) -> UVUnixConnection {
        self.preconditionInEventLoop()
        try self.throwIfStopping("connecting to '\(path)'")
        let descriptor = cws_unix_connect(path)
        guard descriptor >= 0 else {
            throw UVError(.pipeFailed, errno: -descriptor, context: "connecting to Unix socket '\(path)'")
        }
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        let credentials = cws_peer_credentials(descriptor, &pid, &uid, &gid)
        guard credentials == 0 else {
            _ = Glibc.close(descriptor)
            throw UVError(.pipeFailed, errno: credentials, context: "reading the credentials of '\(path)'")
        }
        let handle = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
        uv_pipe_init(self.uvLoop, handle, 0)
        handle.pointee.data = nil
        let status = uv_pipe_open(handle, descriptor)
        guard status == 0 else {
            _ = Glibc.close(descriptor)
            uvCloseReleasingOwner(handle)
            throw UVError(.pipeFailed, uvStatus: status, context: "opening the connection to '\(path)'")
        }
        return UVUnixConnection(loop: self, handle: handle, peer: UVPeerCredentials(pid: pid, uid: uid, gid: gid))
    }

    /// Listens on a Unix domain socket at `path`, made with `mode` (0600 by default: only this user may
    /// connect; keep it in a directory only this user may enter, too). Loop thread only.
    /// - Parameters:
    ///   - path: The socket's path; it must not exist (a stale socket of a dead process: remove it first).
    ///   - mode: The socket file's permissions.
    ///   - backlog: How many connections may wait to be accepted.
    ///   - onConnection: Runs on the loop thread for each accepted connection, with its peer's credentials,
    ///     before anything was read from it. Close the connection to refuse it.
    /// - Throws: ``UVError`` with ``UVError/Code/pipeFailed`` (`EADDRINUSE` when the path exists).
    public func listenUnix(
        path: String,
        mode: mode_t = 0o600,
        backlog: Int32 = 64,
        onConnection: @escaping (UVUnixConnection) -> Void
    ) throws(UVError) -> UVUnixListener {
        self.preconditionInEventLoop()
        try self.throwIfStopping("listening on '\(path)'")
        return try UVUnixListener(loop: self, path: path, mode: mode, backlog: backlog, onConnection: onConnection)
    }
}
