import CLibUV

#if canImport(Glibc)
import Glibc
#endif

/// The one error type of `UVConcurrency`: what failed, the system error behind it, and a sentence a person
/// can act on.
///
/// Compare errors by ``code`` (what kind of operation failed) and ``errno`` (why), for example
/// `error.code == .spawnFailed && error.errno == ENOENT`.
public struct UVError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of operation failed. A struct over a private enum, so that codes can be added later
    /// without breaking exhaustive switches in callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case loopStopped
            case loopInitFailed
            case spawnFailed
            case signalFailed
            case timerFailed
            case pipeFailed
            case readFailed
            case invalidArgument
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The loop is shutting down or has stopped, so it takes no new timers, watchers or processes.
        public static let loopStopped = Code(.loopStopped)
        /// Creating the libuv loop or one of its internal handles failed.
        public static let loopInitFailed = Code(.loopInitFailed)
        /// `uv_spawn` failed: ``UVError/errno`` says why (ENOENT: no such executable; EACCES: not executable;
        /// EAGAIN or ENOMEM: the system is short of processes or memory, worth retrying later).
        public static let spawnFailed = Code(.spawnFailed)
        /// Starting a signal watcher or sending a signal failed.
        public static let signalFailed = Code(.signalFailed)
        /// Starting a timer failed.
        public static let timerFailed = Code(.timerFailed)
        /// Creating or opening a pipe failed.
        public static let pipeFailed = Code(.pipeFailed)
        /// Reading from a descriptor failed.
        public static let readFailed = Code(.readFailed)
        /// An argument was out of range; the message names it.
        public static let invalidArgument = Code(.invalidArgument)

        /// A short name for the code, such as `spawnFailed`.
        public var description: String {
            switch self.base {
            case .loopStopped: "loopStopped"
            case .loopInitFailed: "loopInitFailed"
            case .spawnFailed: "spawnFailed"
            case .signalFailed: "signalFailed"
            case .timerFailed: "timerFailed"
            case .pipeFailed: "pipeFailed"
            case .readFailed: "readFailed"
            case .invalidArgument: "invalidArgument"
            }
        }
    }

    /// What kind of operation failed.
    public let code: Code
    /// The positive system error number (`ENOENT`, `EACCES`, ...), or 0 when no system call failed.
    public let errno: Int32
    /// What was being done, naming the values involved (for example the executable's path).
    public let context: String

    /// Creates an error.
    /// - Parameters:
    ///   - code: What kind of operation failed.
    ///   - errno: The positive system error number, or 0.
    ///   - context: What was being done, naming the values involved.
    public init(_ code: Code, errno: Int32 = 0, context: String) {
        self.code = code
        self.errno = errno
        self.context = context
    }

    /// Creates an error from a negative libuv status (libuv returns `-errno` on Unix).
    init(_ code: Code, uvStatus: Int32, context: String) {
        self.init(code, errno: -uvStatus, context: context)
    }

    /// The symbolic name of ``errno``, such as `ENOENT`, or an empty string when ``errno`` is 0.
    public var errnoName: String {
        guard self.errno != 0 else { return "" }
        // libuv names only the errors it returns itself; the kernel's others get their own names here.
        if self.errno == ENOEXEC { return "ENOEXEC" }
        if self.errno == ETXTBSY { return "ETXTBSY" }
        return String(cString: uv_err_name(-self.errno))
    }

    /// A sentence that says what failed and why, such as
    /// `spawnFailed: spawning '/no/such' failed: ENOENT (no such file or directory)`.
    public var description: String {
        guard self.errno != 0 else { return "\(self.code): \(self.context)" }
        var message = String(cString: strerror(self.errno)).lowercased()
        if self.code == .spawnFailed && self.errno == ENOEXEC {
            message += ": not an executable format; a script without a #! line?"
        }
        return "\(self.code): \(self.context): \(self.errnoName) (\(message))"
    }
}
