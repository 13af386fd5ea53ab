#if canImport(Glibc)
import Glibc
#endif

/// A Unix signal number with a readable name.
public struct UVSignal: Hashable, Sendable, CustomStringConvertible {
    /// The signal number (`SIGTERM` is 15 on Linux).
    public let rawValue: Int32

    /// A signal by number.
    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// SIGHUP: reload.
    public static let hangup = UVSignal(rawValue: SIGHUP)
    /// SIGINT: interrupt (Ctrl-C).
    public static let interrupt = UVSignal(rawValue: SIGINT)
    /// SIGQUIT: quit, used for immediate shutdown and crash resets.
    public static let quit = UVSignal(rawValue: SIGQUIT)
    /// SIGKILL: cannot be caught or ignored.
    public static let kill = UVSignal(rawValue: SIGKILL)
    /// SIGUSR1: the bgworker wake-up ("something changed, re-read the status").
    public static let user1 = UVSignal(rawValue: SIGUSR1)
    /// SIGUSR2.
    public static let user2 = UVSignal(rawValue: SIGUSR2)
    /// SIGTERM: terminate.
    public static let terminate = UVSignal(rawValue: SIGTERM)
    /// SIGCHLD: owned by libuv in any process that spawns through this package; do not watch it to reap.
    public static let child = UVSignal(rawValue: SIGCHLD)

    /// The conventional name, such as `SIGTERM`, or `signal N` for one without a name here.
    public var description: String {
        switch self.rawValue {
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        case SIGQUIT: "SIGQUIT"
        case SIGILL: "SIGILL"
        case SIGTRAP: "SIGTRAP"
        case SIGABRT: "SIGABRT"
        case SIGBUS: "SIGBUS"
        case SIGFPE: "SIGFPE"
        case SIGKILL: "SIGKILL"
        case SIGUSR1: "SIGUSR1"
        case SIGSEGV: "SIGSEGV"
        case SIGUSR2: "SIGUSR2"
        case SIGPIPE: "SIGPIPE"
        case SIGALRM: "SIGALRM"
        case SIGTERM: "SIGTERM"
        case SIGCHLD: "SIGCHLD"
        case SIGCONT: "SIGCONT"
        case SIGSTOP: "SIGSTOP"
        default: "signal \(self.rawValue)"
        }
    }
}
