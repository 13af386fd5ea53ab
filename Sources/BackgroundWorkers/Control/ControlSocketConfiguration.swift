#if canImport(Glibc)
import Glibc
#endif

/// How a supervisor serves its control socket (``WorkerSupervisor/serveControlSocket(_:)``): where, to whom,
/// and within which limits.
///
/// Who may connect is decided twice: by the file system (the socket's mode, and a directory only the
/// supervisor's user, or its group, can enter: the caller makes that directory) and by the server, which
/// reads each peer's credentials from the kernel and closes the connection of a user that is neither the
/// supervisor's, root, nor in ``allowedGroup`` before reading anything from it.
public struct ControlSocketConfiguration: Sendable, Hashable {
    /// The socket's path. Nothing may exist there (a stale socket of a dead supervisor: remove it first).
    public var path: String
    /// A group whose members may connect besides the supervisor's own user and root (checked against the
    /// peer's real, effective and supplementary groups). nil: nobody else.
    public var allowedGroup: UInt32?
    /// The socket file's mode: 0600 by default, 0660 with an ``allowedGroup`` (whose members need write
    /// permission to connect). Give the socket file the group yourself.
    public var socketMode: UInt32?
    /// How many connections may be open at once; one more gets a `limitReached` error and is closed.
    public var maxConnections: Int
    /// How many live workers one connection may have registered (and be waiting to register); one more
    /// gets a `limitReached` error.
    public var maxRegistrationsPerClient: Int
    /// How many bytes of events may wait for a subscriber that does not read before it is disconnected.
    public var maxPendingEventBytes: Int
    /// The server's name in `hello`'s result.
    public var serverName: String
    /// How long a message may take to arrive once its first byte has, and how long a new connection may take
    /// to say `hello`. A peer that sends half a message and stops, or connects and says nothing, gets a
    /// `timedOut` error and is closed, so that it holds none of the ``maxConnections`` for long. An idle
    /// connection between whole messages (a client waiting, a subscriber) is never timed out.
    public var messageTimeout: Duration

    /// A configuration with the defaults: 0600, 64 connections, 64 registrations per client, 4 MiB of
    /// pending events, 10 seconds for a message.
    public init(
        path: String,
        allowedGroup: UInt32? = nil,
        socketMode: UInt32? = nil,
        maxConnections: Int = 64,
        maxRegistrationsPerClient: Int = 64,
        maxPendingEventBytes: Int = 4 << 20,
        serverName: String = "swift-background-workers",
        messageTimeout: Duration = .seconds(10)
    ) {
        self.path = path
        self.allowedGroup = allowedGroup
        self.socketMode = socketMode
        self.maxConnections = maxConnections
        self.maxRegistrationsPerClient = maxRegistrationsPerClient
        self.maxPendingEventBytes = maxPendingEventBytes
        self.serverName = serverName
        self.messageTimeout = messageTimeout
    }

    /// Where `bgworkerd` listens and `bgworkerctl` connects unless told otherwise: `$BGWORKERD_SOCKET` when
    /// set; for root `/run/bgworkerd/control.sock`; otherwise `$XDG_RUNTIME_DIR/bgworkerd/control.sock`, or
    /// `/tmp/bgworkerd-UID/control.sock` without a runtime folder.
    public static var defaultPath: String {
        if let path = getenv("BGWORKERD_SOCKET").map({ String(cString: $0) }), !path.isEmpty { return path }
        if geteuid() == 0 { return "/run/bgworkerd/control.sock" }
        if let runtime = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), !runtime.isEmpty {
            return "\(runtime)/bgworkerd/control.sock"
        }
        return "/tmp/bgworkerd-\(geteuid())/control.sock"
    }

    /// The mode the socket file gets.
    var effectiveSocketMode: mode_t { mode_t(self.socketMode ?? (self.allowedGroup == nil ? 0o600 : 0o660)) }

    /// Why it cannot be used, naming the field; nil when it can.
    func problem() -> String? {
        if self.path.isEmpty { return "path is empty; give the control socket's path" }
        if self.path.utf8.count >= 108 {
            return "path '\(self.path)' is \(self.path.utf8.count) bytes; a Unix socket path must be shorter than 108"
        }
        if self.maxConnections < 1 { return "maxConnections \(self.maxConnections) must be at least 1" }
        if self.maxRegistrationsPerClient < 1 {
            return "maxRegistrationsPerClient \(self.maxRegistrationsPerClient) must be at least 1"
        }
        if self.maxPendingEventBytes < 4096 { return "maxPendingEventBytes \(self.maxPendingEventBytes) must be at least 4096" }
        if self.messageTimeout < .milliseconds(1) || self.messageTimeout > .seconds(86_400) {
            return "messageTimeout \(self.messageTimeout) must be between 1 ms and a day"
        }
        if let mode = self.socketMode, mode & ~0o777 != 0 { return "socketMode \(String(mode, radix: 8)) has bits beyond 0777" }
        return nil
    }
}
