/// A background worker's registration: what to run and how the supervisor treats it. PostgreSQL's
/// `BackgroundWorker` record (`bgworker.h`), as a value.
///
/// Build one, then register it with a supervisor; the supervisor validates it first (``validate(isStatic:)``)
/// and refuses an invalid one with a ``RegistrationError`` that names the field, the value and the limit.
///
/// ```swift
/// var worker = BackgroundWorker(name: "indexer", entryPoint: .executable("/usr/local/bin/indexer"))
/// worker.restartInterval = .seconds(5)
/// worker.mainArgument = 42
/// ```
public struct BackgroundWorker: Sendable, Hashable, Codable {
    /// The worker's name, unique in meaning only to people: at most ``maxNameLength`` bytes of UTF-8, not empty,
    /// no NUL. Unicode is kept intact (PostgreSQL turns non-ASCII into `?`).
    public var name: String
    /// The worker's type, for grouping in logs and metrics; `nil` means the same as ``name``.
    public var type: String?
    /// What the worker may use: shared memory, a database connection.
    public var flags: Flags
    /// When the supervisor starts it.
    public var startTime: StartTime
    /// What happens after it exits with code 1 (PostgreSQL's `bgw_restart_time`); 60 seconds by default.
    public var restartInterval: RestartInterval
    /// What to run.
    public var entryPoint: EntryPoint
    /// One 64-bit argument (PostgreSQL's `bgw_main_arg`, a `Datum`).
    public var mainArgument: UInt64
    /// Up to ``maxExtraLength`` opaque bytes (PostgreSQL's `bgw_extra`).
    public var extra: [UInt8]
    /// The process to wake with SIGUSR1 when the worker starts, exits, is unregistered, or when a terminate
    /// finds it not running (PostgreSQL's `bgw_notify_pid`). Dynamic registrations only; `nil` for none.
    public var notifyPID: Int32?
    /// How long a worker asked to stop (terminate, fast shutdown) may take before its process group gets
    /// SIGKILL. 10 seconds by default; PostgreSQL waits forever.
    public var stopGracePeriod: Duration
    /// Opt-in exponential backoff between restarts (beyond PostgreSQL); `nil` restarts after a fixed interval.
    public var restartBackoff: RestartBackoff?
    /// The guard against restart storms, on by default (beyond PostgreSQL): a worker that keeps ending within
    /// ``RestartThrottle/stableAfter`` of its start waits at least a minimum that starts at 100 ms and doubles
    /// up to 30 s, whatever its interval. `nil` restarts exactly as PostgreSQL does: after the interval, forever,
    /// so that interval 0 means at once.
    public var restartThrottle: RestartThrottle?
    /// Opt-in restart budget (beyond PostgreSQL): at most so many restarts in a window, then "gave up".
    public var restartBudget: RestartBudget?
    /// Whether the worker reports readiness through its readiness descriptor (a `READY=1` line), so that
    /// `waitForReady()` means the worker said so.
    public var reportsReadiness: Bool
    /// The user the worker runs as (a name, or a numeric id); `nil` keeps the supervisor's. Needs a supervisor
    /// running as root. This is the real isolation boundary between workers: processes of one user can reach
    /// each other's memory and descriptors (`/proc/PID/fd`, `ptrace`), whatever flags they were given.
    public var user: String?
    /// The group the worker runs as (a name, or a numeric id); `nil` is the user's primary group when ``user``
    /// is set, the supervisor's otherwise. Needs a supervisor running as root.
    public var group: String?

    /// The longest name, and type, in bytes of UTF-8: PostgreSQL's `BGW_MAXLEN` (64) less the terminating NUL.
    public static let maxNameLength = 63
    /// The most bytes of ``extra``: PostgreSQL's `BGW_EXTRALEN`.
    public static let maxExtraLength = 128
    /// PostgreSQL's `BGW_DEFAULT_RESTART_INTERVAL`, in seconds.
    public static let defaultRestartSeconds = 60

    /// Creates a registration with PostgreSQL's defaults: no flags, started at supervisor start, restarted
    /// 60 seconds after an exit with code 1, argument 0, no extra bytes, no notification; and one default that
    /// PostgreSQL lacks, the ``restartThrottle`` against restart storms.
    public init(name: String, entryPoint: EntryPoint) {
        self.name = name
        self.type = nil
        self.flags = []
        self.startTime = .supervisorStart
        self.restartInterval = .default
        self.entryPoint = entryPoint
        self.mainArgument = 0
        self.extra = []
        self.notifyPID = nil
        self.stopGracePeriod = .seconds(10)
        self.restartBackoff = nil
        self.restartThrottle = .default
        self.restartBudget = nil
        self.reportsReadiness = false
        self.user = nil
        self.group = nil
    }

    /// ``type``, or ``name`` when no type was given.
    public var effectiveType: String { self.type ?? self.name }
}

extension BackgroundWorker {
    /// What a worker may use (PostgreSQL's `bgw_flags`).
    public struct Flags: OptionSet, Sendable, Hashable, Codable {
        /// The bits.
        public let rawValue: Int32

        /// Creates flags from bits.
        public init(rawValue: Int32) {
            self.rawValue = rawValue
        }

        /// `BGWORKER_SHMEM_ACCESS`: the worker shares the supervisor's state. It receives the shared-memory
        /// segment, and its crash (an exit other than 0 or 1, or death by a signal) resets every such worker.
        /// A worker without it is crash-isolated: any non-zero exit only restarts itself.
        ///
        /// The flag decides who is *given* the segment and whose crash resets whom; it is not a security
        /// boundary. The segment is mode 0600 and sealed against resizing, but any process of the supervisor's
        /// user can open it through `/proc/PID/fd`: on Linux one user is one trust domain. To keep a worker
        /// out, run it as another user (``BackgroundWorker/user``).
        public static let sharedMemoryAccess = Flags(rawValue: 0x0001)
        /// `BGWORKER_BACKEND_DATABASE_CONNECTION`: the worker may open a PostgreSQL connection. Requires
        /// ``sharedMemoryAccess`` and a start time after ``StartTime/supervisorStart``.
        public static let databaseConnection = Flags(rawValue: 0x0002)
    }

    /// When the supervisor starts a worker (PostgreSQL's `bgw_start_time`). The supervisor's optional startup
    /// step reports "consistent", then completes; with no step, every phase is reached at once.
    public struct StartTime: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
        private let phase: Int

        private init(_ phase: Int) { self.phase = phase }

        /// As soon as the supervisor runs (`BgWorkerStart_PostmasterStart`).
        public static let supervisorStart = StartTime(0)
        /// Once the startup step reported a consistent state (`BgWorkerStart_ConsistentState`).
        public static let consistentState = StartTime(1)
        /// Once the startup step completed (`BgWorkerStart_RecoveryFinished`).
        public static let recoveryFinished = StartTime(2)

        /// Phases are ordered: a later phase admits the workers of every earlier one.
        public static func < (lhs: StartTime, rhs: StartTime) -> Bool { lhs.phase < rhs.phase }

        /// The phase's name.
        public var description: String {
            switch self.phase {
            case 0: "supervisorStart"
            case 1: "consistentState"
            default: "recoveryFinished"
            }
        }
    }

    /// What happens after an exit with code 1 (PostgreSQL's `bgw_restart_time`, `BGW_NEVER_RESTART`).
    public struct RestartInterval: Sendable, Hashable, Codable, CustomStringConvertible {
        /// Whole seconds, or `nil` for never.
        public let seconds: Int?

        private init(seconds: Int?) { self.seconds = seconds }

        /// Restart this many seconds after the exit was reaped; 0 restarts at once. At most 86,400 (one day).
        public static func seconds(_ seconds: Int) -> RestartInterval { RestartInterval(seconds: seconds) }
        /// Never restart: an exit with code 1 unregisters the worker (`BGW_NEVER_RESTART`).
        public static let never = RestartInterval(seconds: nil)
        /// 60 seconds (`BGW_DEFAULT_RESTART_INTERVAL`).
        public static let `default` = RestartInterval(seconds: BackgroundWorker.defaultRestartSeconds)

        /// The interval as a duration, or `nil` for never.
        public var duration: Duration? { self.seconds.map { .seconds($0) } }

        /// `never` or `N s`.
        public var description: String { self.seconds.map { "\($0) s" } ?? "never" }
    }

    /// What a worker runs. A struct over a private enum: library functions and entries built into the
    /// supervisor's binary are added by the worker runtime.
    public struct EntryPoint: Sendable, Hashable, Codable, CustomStringConvertible {
        private enum Base: Sendable, Hashable, Codable {
            case executable(path: String, arguments: [String], environment: [String: String], workingDirectory: String?)
            case library(path: String, function: String)
            case builtin(name: String)
        }

        private let base: Base

        /// An executable: a path (or a name looked up in `PATH`), its arguments after `argv[0]`, variables added
        /// to the worker's environment (over the supervisor's own), and a working directory (`nil`: the
        /// supervisor's).
        public static func executable(
            _ path: String,
            arguments: [String] = [],
            environment: [String: String] = [:],
            workingDirectory: String? = nil
        ) -> EntryPoint {
            EntryPoint(base: .executable(path: path, arguments: arguments, environment: environment, workingDirectory: workingDirectory))
        }

        /// A function in a shared library (PostgreSQL's `bgw_library_name` and `bgw_function_name`): the
        /// supervisor runs `bgworker-host`, which loads `path` with `dlopen`, resolves the exported C function
        /// `void function(uint64_t main_arg)` with `dlsym`, and calls it with the main argument, inside the
        /// worker runtime (so `BackgroundWorker.current` works there). Both names are at most 63 bytes.
        public static func library(_ path: String, function: String) -> EntryPoint {
            EntryPoint(base: .library(path: path, function: function))
        }

        /// A worker built into the supervisor's own binary (PostgreSQL's `bgw_main` pointer, done the
        /// `EXEC_BACKEND` way): the supervisor re-executes its own executable with the contract's marker
        /// arguments, and the binary's `main` runs the closure registered under `name` with
        /// `BuiltinWorkers.runIfRequested(_:)` (never `fork` without `exec` in a threaded Swift process).
        /// The name is at most 63 bytes.
        public static func builtin(_ name: String) -> EntryPoint {
            EntryPoint(base: .builtin(name: name))
        }

        /// The name, for a built-in entry point.
        public var builtinName: String? {
            if case .builtin(let name) = self.base { return name }
            return nil
        }

        /// The executable's parts, for an executable entry point.
        public var executable: (path: String, arguments: [String], environment: [String: String], workingDirectory: String?)? {
            switch self.base {
            case .executable(let path, let arguments, let environment, let workingDirectory):
                (path, arguments, environment, workingDirectory)
            case .library, .builtin:
                nil
            }
        }

        /// The library and function, for a library entry point.
        public var library: (path: String, function: String)? {
            switch self.base {
            case .library(let path, let function): (path, function)
            case .executable, .builtin: nil
            }
        }

        /// A short description, such as `executable /usr/bin/indexer --fast`.
        public var description: String {
            switch self.base {
            case .executable(let path, let arguments, _, _):
                (["executable", path] + arguments).joined(separator: " ")
            case .library(let path, let function):
                "library \(path), function \(function)"
            case .builtin(let name):
                "built-in \(name)"
            }
        }
    }

    /// Exponential backoff between restarts (beyond PostgreSQL). The n-th consecutive restart waits
    /// `min(initial × multiplierⁿ⁻¹, maximum)`, then a random share up to ``jitter`` of that is added or taken
    /// off; a worker that stayed up for ``resetAfter`` starts again from ``initial``.
    public struct RestartBackoff: Sendable, Hashable, Codable {
        /// The first wait; `nil` uses the worker's restart interval.
        public var initial: Duration?
        /// How much each further wait grows: at least 1.
        public var multiplier: Double
        /// The longest wait.
        public var maximum: Duration
        /// The share of each wait that is randomised, 0 (none) to 1.
        public var jitter: Double
        /// The uptime after which the backoff starts again from the first wait.
        public var resetAfter: Duration

        /// Creates a backoff policy.
        public init(
            initial: Duration? = nil,
            multiplier: Double = 2,
            maximum: Duration = .seconds(300),
            jitter: Double = 0.1,
            resetAfter: Duration = .seconds(60)
        ) {
            self.initial = initial
            self.multiplier = multiplier
            self.maximum = maximum
            self.jitter = jitter
            self.resetAfter = resetAfter
        }
    }

    /// A minimum wait before restarting a worker that keeps failing fast (beyond PostgreSQL, on by default).
    ///
    /// PostgreSQL restarts a worker after its interval, forever; with interval 0 a worker that fails at once is
    /// restarted thousands of times a second and costs the supervisor a large share of a core. The throttle
    /// counts the consecutive runs shorter than ``stableAfter`` (a failed spawn counts as one) and makes the
    /// n-th such restart wait at least `min(initial × multiplierⁿ⁻¹, maximum)`; the worker's own interval (or
    /// backoff) applies when it is longer. One run of at least ``stableAfter`` starts the count again. A worker
    /// that runs longer than that is never throttled, so a worker with an interval of a few seconds or more, or
    /// one that fails only now and then, restarts exactly as in PostgreSQL.
    public struct RestartThrottle: Sendable, Hashable, Codable {
        /// The wait before the first throttled restart: more than zero.
        public var initial: Duration
        /// How much each further wait grows: at least 1.
        public var multiplier: Double
        /// The longest wait.
        public var maximum: Duration
        /// A run at least this long counts as stable and resets the throttle.
        public var stableAfter: Duration

        /// 100 ms, doubling up to 30 s; runs of 1 s or more are stable. A worker that fails at once is restarted
        /// 8 times in its first 25 seconds, then twice a minute.
        public static let `default` = RestartThrottle()

        /// Creates a throttle.
        public init(
            initial: Duration = .milliseconds(100),
            multiplier: Double = 2,
            maximum: Duration = .seconds(30),
            stableAfter: Duration = .seconds(1)
        ) {
            self.initial = initial
            self.multiplier = multiplier
            self.maximum = maximum
            self.stableAfter = stableAfter
        }
    }

    /// At most ``maxRestarts`` restarts within any ``window`` (beyond PostgreSQL). One more restart than that
    /// is refused: the worker "gave up", which its status shows, until its handle resets it.
    public struct RestartBudget: Sendable, Hashable, Codable {
        /// The most restarts allowed within the window: at least 1.
        public var maxRestarts: Int
        /// The sliding window.
        public var window: Duration

        /// Creates a restart budget.
        public init(maxRestarts: Int, window: Duration) {
            self.maxRestarts = maxRestarts
            self.window = window
        }
    }
}
