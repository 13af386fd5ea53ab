import BackgroundWorkerContract
import FoundationEssentials

/// The wire protocol between a supervisor's control socket and its clients (`bgworkerctl`, `SupervisorClient`):
/// JSON-RPC 2.0 over a Unix domain socket, one message per line.
///
/// - Framing: each message is one line of UTF-8 JSON ending in `\n`, at most ``maxMessageLength`` bytes
///   without it. A longer line gets a ``ControlError/Code/messageTooLong`` reply and the connection is closed.
/// - Version: a connection's first request is `hello` with `{"protocol": 1}`; the reply names the server's
///   version. Another version gets ``ControlError/Code/unsupportedVersion``; any other first request gets
///   ``ControlError/Code/invalidRequest``.
/// - Requests: `{"jsonrpc": "2.0", "id": 7, "method": "register", "params": {...}}`; the reply carries the same
///   `id` and either `result` or `error` (`code`, `message`, and `data.name`, the stable name of the code).
///   Requests without an `id` (JSON-RPC notifications) are refused: every request is answered.
/// - Events (after `subscribe`): messages without an `id`, method `event`, params a ``ControlEvent``.
///
/// The methods, their parameters and results are ``ControlMethod``; the DocC article "ControlProtocol" has
/// examples.
public enum ControlProtocol {
    /// The protocol version this library speaks.
    public static let version = 1
    /// The longest message accepted, in bytes, without its newline.
    public static let maxMessageLength = 64 * 1024
    /// The JSON-RPC version string every message carries.
    public static let jsonRPC = "2.0"
}

/// The methods of the protocol.
public enum ControlMethod: String, Sendable, Hashable, CaseIterable, Codable {
    /// The first request of a connection: ``HelloParams`` → ``HelloResult``.
    case hello
    /// Registers a worker: ``RegisterParams`` → ``WorkerInfo``.
    case register
    /// A worker's status: ``WorkerParams`` → ``WorkerInfo``.
    case status
    /// Waits for a worker to start, be ready or stop, up to a deadline: ``WaitParams`` → ``WaitResult``.
    case wait
    /// Terminates a worker: ``WorkerParams`` → ``WorkerInfo``.
    case terminate
    /// Every registered worker: no parameters → `[WorkerInfo]`.
    case list
    /// Starts sending events on this connection: no parameters → `true`.
    case subscribe
    /// Clears a worker's spent restart budget: ``WorkerParams`` → ``WorkerInfo``.
    case resetBudget
    /// Shuts the supervisor down: ``ShutdownParams`` → `true`.
    case shutdown
    /// Cancels a request of this connection still being answered (a wait, a registration waiting for a
    /// slot): ``CancelParams`` → `true`, or `false` when it was already answered. The cancelled request is
    /// answered with ``ControlError/Code/requestCancelled`` and changes nothing (LSP's `$/cancelRequest`).
    case cancel
}

/// `cancel`'s parameters.
public struct CancelParams: Sendable, Hashable, Codable {
    /// The id of the request to cancel.
    public var id: Int64
    /// Creates them.
    public init(id: Int64) { self.id = id }
}

/// Which worker a request is about: by slot and generation (a handle), or by name (the live worker of that
/// name, the first in slot order if several share it; with none live, the latest of that name that ended
/// while the socket was served).
public struct WorkerReference: Sendable, Hashable, Codable {
    /// The slot.
    public var slot: Int?
    /// The slot's generation; with ``slot``.
    public var generation: UInt64?
    /// The registration's name.
    public var name: String?

    /// A reference by handle.
    public init(slot: Int, generation: UInt64) {
        self.slot = slot
        self.generation = generation
        self.name = nil
    }

    /// A reference by name.
    public init(name: String) {
        self.slot = nil
        self.generation = nil
        self.name = name
    }
}

/// `hello`'s parameters.
public struct HelloParams: Sendable, Hashable, Codable {
    /// The protocol version the client speaks.
    public var `protocol`: Int
    /// Whether the client's process handles SIGUSR1 (so that SIGUSR1's default action, which ends a process,
    /// cannot hit it). Only then may it register workers with ``RegisterParams/notify``: the server sends
    /// SIGUSR1 to the client's pid, and a process that does not handle it would die.
    public var notifications: Bool?
    /// Creates them.
    public init(protocol: Int = ControlProtocol.version, notifications: Bool? = nil) {
        self.protocol = `protocol`
        self.notifications = notifications
    }
}

/// `hello`'s result.
public struct HelloResult: Sendable, Hashable, Codable {
    /// The protocol version the server speaks.
    public var `protocol`: Int
    /// The server's name and version, for people.
    public var server: String
    /// The supervisor's process id.
    public var pid: Int32
    /// Its number of worker slots.
    public var maxWorkerProcesses: Int
    /// The client's process id as the server sees it (`SO_PEERCRED`): the notify pid of its registrations.
    public var clientPID: Int32
    /// Creates it.
    public init(protocol: Int = ControlProtocol.version, server: String, pid: Int32, maxWorkerProcesses: Int, clientPID: Int32) {
        self.protocol = `protocol`
        self.server = server
        self.pid = pid
        self.maxWorkerProcesses = maxWorkerProcesses
        self.clientPID = clientPID
    }
}

/// `register`'s parameters.
public struct RegisterParams: Sendable, Hashable, Codable {
    /// The registration. Its `notifyPID` must be absent: the server sets it to the client's own pid (from
    /// the socket's credentials) when ``notify`` is true.
    public var worker: BackgroundWorker
    /// Whether the client gets SIGUSR1 on every status change of the worker.
    public var notify: Bool
    /// Whether the worker is terminated when this connection ends.
    public var linked: Bool
    /// How long to wait for a free slot, in seconds (at most one day); absent or 0 fails at once when every
    /// slot is taken.
    public var waitForSlot: Double?

    /// Creates them.
    public init(worker: BackgroundWorker, notify: Bool = false, linked: Bool = false, waitForSlot: Double? = nil) {
        self.worker = worker
        self.notify = notify
        self.linked = linked
        self.waitForSlot = waitForSlot
    }
}

/// The parameters of `status`, `terminate` and `resetBudget`.
public struct WorkerParams: Sendable, Hashable, Codable {
    /// The worker.
    public var worker: WorkerReference
    /// Creates them.
    public init(worker: WorkerReference) { self.worker = worker }
}

/// `wait`'s parameters.
public struct WaitParams: Sendable, Hashable, Codable {
    /// What to wait for.
    public enum Until: String, Sendable, Hashable, Codable, CaseIterable {
        /// A pid exists (`waitForStartup`).
        case started
        /// The worker reported readiness (`waitForReady`).
        case ready
        /// No process now and none to come (`waitForShutdown`).
        case stopped
    }

    /// The worker.
    public var worker: WorkerReference
    /// What to wait for.
    public var until: Until
    /// How long to wait, in seconds; at most one day.
    public var timeout: Double

    /// Creates them.
    public init(worker: WorkerReference, until: Until, timeout: Double) {
        self.worker = worker
        self.until = until
        self.timeout = timeout
    }
}

/// `wait`'s result.
public struct WaitResult: Sendable, Hashable, Codable {
    /// For `started` and `ready`: the pid the wait saw (the process may have exited since).
    public var pid: Int32?
    /// For `stopped`: `stopped`, or `supervisorDied` when the supervisor stopped first.
    public var status: String?
    /// The worker as it is when the reply is sent.
    public var worker: WorkerInfo

    /// Creates it.
    public init(pid: Int32?, status: String?, worker: WorkerInfo) {
        self.pid = pid
        self.status = status
        self.worker = worker
    }
}

/// `shutdown`'s parameters.
public struct ShutdownParams: Sendable, Hashable, Codable {
    /// `smart`, `fast` or `immediate`.
    public var mode: String
    /// Creates them.
    public init(mode: String) { self.mode = mode }
}

/// What the server says of a worker.
public struct WorkerInfo: Sendable, Hashable, Codable {
    /// The slot.
    public var slot: Int
    /// The slot's generation.
    public var generation: UInt64
    /// The registration's name.
    public var name: String
    /// The process id, while a process exists.
    public var pid: Int32?
    /// PostgreSQL's status: `notYetStarted`, `started`, `stopped` or `supervisorDied`.
    public var status: String
    /// The detailed state.
    public var state: WorkerStateInfo
    /// The detailed state, for people ("restarting in 5 s after exit 1").
    public var detail: String
    /// Restarts so far (processes started, less the first).
    public var restarts: Int
    /// How long the running process has run, in seconds.
    public var uptime: Double?
    /// How the last process ended, if one did.
    public var lastExit: ExitInfo?
    /// The last `ERROR=` line the worker wrote.
    public var lastReportedError: String?
    /// The process that gets SIGUSR1 on its status changes, until that process is gone.
    public var notifyPID: Int32?

    /// Creates it.
    public init(
        slot: Int, generation: UInt64, name: String, pid: Int32?, status: String, state: WorkerStateInfo, detail: String,
        restarts: Int, uptime: Double?, lastExit: ExitInfo?, lastReportedError: String?, notifyPID: Int32? = nil
    ) {
        self.notifyPID = notifyPID
        self.slot = slot
        self.generation = generation
        self.name = name
        self.pid = pid
        self.status = status
        self.state = state
        self.detail = detail
        self.restarts = restarts
        self.uptime = uptime
        self.lastExit = lastExit
        self.lastReportedError = lastReportedError
    }

    /// The reference to this worker's registration (slot and generation).
    public var reference: WorkerReference { WorkerReference(slot: self.slot, generation: self.generation) }
}

/// How a process ended: an exit code or a signal.
public struct ExitInfo: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The exit code, when it exited.
    public var code: Int32?
    /// The signal number, when a signal ended it.
    public var signal: Int32?
    /// Creates it.
    public init(code: Int32? = nil, signal: Int32? = nil) {
        self.code = code
        self.signal = signal
    }
    /// `exit 1` or `signal 9`.
    public var description: String {
        if let code { return "exit \(code)" }
        return "signal \(self.signal ?? 0)"
    }
}

/// A worker's detailed state on the wire (the supervisor's `WorkerStatusDetail`).
public struct WorkerStateInfo: Sendable, Hashable, Codable {
    /// Which state.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// Waiting for the supervisor to reach its start phase.
        case waitingForStartPhase
        /// Waiting for a crash reset to finish.
        case waitingForCrashReset
        /// Running (``WorkerStateInfo/pid``, ``WorkerStateInfo/ready``).
        case running
        /// Asked to stop; SIGKILL follows after the grace period.
        case stopping
        /// Restarts after ``WorkerStateInfo/restartAfter`` seconds.
        case restartScheduled
        /// Its restart budget ran out.
        case gaveUp
        /// Gone, its slot freed (``WorkerStateInfo/reason``).
        case unregistered
    }

    /// Which state.
    public var kind: Kind
    /// The process, for `running` and `stopping`.
    public var pid: Int32?
    /// Whether it reported readiness, for `running`.
    public var ready: Bool?
    /// Seconds until the restart, for `restartScheduled`.
    public var restartAfter: Double?
    /// The exit that led here, for `restartScheduled`, `gaveUp` and `unregistered`.
    public var lastExit: ExitInfo?
    /// The failed spawn's errno, for `restartScheduled` and `unregistered` after a spawn failure.
    public var spawnErrno: Int32?
    /// What the failed spawn was doing.
    public var spawnError: String?
    /// The budget's restarts, for `gaveUp`.
    public var budgetRestarts: Int?
    /// The budget's window in seconds, for `gaveUp`.
    public var budgetWindow: Double?
    /// Why it was unregistered: `completed`, `noRestart`, `terminated`, `spawnFailed`, `crashReset`,
    /// `builtinNotHandled` or `shutdown`.
    public var reason: String?
    /// The shutdown mode, for reason `shutdown`.
    public var shutdownMode: String?

    /// Creates it.
    public init(kind: Kind) { self.kind = kind }
}

/// An event sent to a subscribed connection.
public struct ControlEvent: Sendable, Hashable, Codable {
    /// The worker.
    public var worker: WorkerReference
    /// Its name.
    public var name: String
    /// What happened: `registered`, `started`, `ready`, `exited`, `spawnFailed`, `restartScheduled`, `gaveUp`,
    /// `unregistered`, `crashReset`, `reportedError`.
    public var kind: String
    /// Details, for people.
    public var detail: String?

    /// Creates it.
    public init(worker: WorkerReference, name: String, kind: String, detail: String?) {
        self.worker = worker
        self.name = name
        self.kind = kind
        self.detail = detail
    }
}
