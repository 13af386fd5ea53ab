import UVConcurrency

/// A worker's status as PostgreSQL reports it (`BgwHandleStatus`).
public enum WorkerStatus: Hashable, Sendable, CustomStringConvertible {
    /// `BGWH_NOT_YET_STARTED`: registered, no process yet (waiting for its start phase, or for a spawn retry).
    case notYetStarted
    /// `BGWH_STARTED`: a process with this pid exists. Not necessarily ready.
    case started(pid: Int32)
    /// `BGWH_STOPPED`: no process now, either between restarts or for good (the detail tells which), or a
    /// stale handle.
    case stopped
    /// `BGWH_POSTMASTER_DIED`: the supervisor is gone.
    case supervisorDied

    /// A short description.
    public var description: String {
        switch self {
        case .notYetStarted: "not yet started"
        case .started(let pid): "started (pid \(pid))"
        case .stopped: "stopped"
        case .supervisorDied: "supervisor died"
        }
    }
}

/// How a worker's exit was judged. A struct over a private enum, so that causes can be added.
public struct UnregisterReason: Hashable, Sendable, CustomStringConvertible {
    private enum Base: Hashable, Sendable {
        case completed
        case noRestart
        case terminated
        case spawnFailed(UVError)
        case crashReset
        case shutdown(ShutdownMode)
        case builtinNotHandled
    }

    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// It exited with code 0.
    public static let completed = UnregisterReason(.completed)
    /// It exited with code 1 (or crashed, without shared memory) and its restart interval is never.
    public static let noRestart = UnregisterReason(.noRestart)
    /// A handle terminated it.
    public static let terminated = UnregisterReason(.terminated)
    /// It could not be started: a permanent spawn error, or a transient one for a never-restart worker.
    public static func spawnFailed(_ error: UVError) -> UnregisterReason { UnregisterReason(.spawnFailed(error)) }
    /// A crash reset forgot it (a never-restart worker with shared memory).
    public static let crashReset = UnregisterReason(.crashReset)
    /// A built-in entry point's process ran its binary's own `main` instead of the built-in: the binary does
    /// not call `BuiltinWorkers.runIfRequested` first in `main`.
    public static let builtinNotHandled = UnregisterReason(.builtinNotHandled)
    /// The supervisor shut down in this mode (deliberately: a crash of the supervisor leaves no reason).
    public static func shutdown(_ mode: ShutdownMode) -> UnregisterReason { UnregisterReason(.shutdown(mode)) }

    /// The spawn error, for ``spawnFailed(_:)``.
    public var spawnError: UVError? {
        if case .spawnFailed(let error) = self.base { return error }
        return nil
    }

    /// The shutdown mode, for ``shutdown(_:)``.
    public var shutdownMode: ShutdownMode? {
        if case .shutdown(let mode) = self.base { return mode }
        return nil
    }

    /// The stable name of the cause, as the control protocol sends it: `completed`, `noRestart`, `terminated`,
    /// `spawnFailed`, `crashReset`, `builtinNotHandled` or `shutdown`.
    public var name: String {
        switch self.base {
        case .completed: "completed"
        case .noRestart: "noRestart"
        case .terminated: "terminated"
        case .spawnFailed: "spawnFailed"
        case .crashReset: "crashReset"
        case .shutdown: "shutdown"
        case .builtinNotHandled: "builtinNotHandled"
        }
    }

    /// The reason of this ``name``, with the spawn error or shutdown mode it carries; nil for an unknown name.
    init?(name: String, spawnError: UVError?, shutdownMode: ShutdownMode?) {
        switch name {
        case "completed": self = .completed
        case "noRestart": self = .noRestart
        case "terminated": self = .terminated
        case "crashReset": self = .crashReset
        case "builtinNotHandled": self = .builtinNotHandled
        case "spawnFailed":
            guard let spawnError else { return nil }
            self = .spawnFailed(spawnError)
        case "shutdown":
            guard let shutdownMode else { return nil }
            self = .shutdown(shutdownMode)
        default: return nil
        }
    }

    /// A short explanation.
    public var description: String {
        switch self.base {
        case .completed: "exited with code 0"
        case .noRestart: "exited and is never restarted"
        case .terminated: "terminated"
        case .spawnFailed(let error): "could not be started: \(error)"
        case .crashReset: "forgotten by a crash reset"
        case .shutdown(let mode): "the supervisor shut down (\(mode) shutdown)"
        case .builtinNotHandled:
            "its binary ran its own main instead of the built-in worker: call BuiltinWorkers.runIfRequested first in main"
        }
    }
}

/// Everything the supervisor knows of a worker's state, beyond the four PostgreSQL values.
public enum WorkerStatusDetail: Hashable, Sendable, CustomStringConvertible {
    /// Waiting for the supervisor to reach the worker's start phase.
    case waitingForStartPhase
    /// Waiting for a crash reset to finish.
    case waitingForCrashReset
    /// Running; `ready` once it reported readiness.
    case running(pid: Int32, ready: Bool)
    /// Asked to stop (terminate or shutdown); SIGKILL follows after the grace period.
    case stopping(pid: Int32)
    /// Exited (or failed to spawn) and will be restarted after `after`, counted from the reap.
    case restartScheduled(after: Duration, lastExit: UVExitStatus?, spawnError: UVError?)
    /// Its restart budget ran out: it stays stopped until ``BackgroundWorkerHandle/resetRestartBudget()``.
    /// `lastExit` is nil when what spent the budget were failed spawns.
    case gaveUp(lastExit: UVExitStatus?, restarts: Int, window: Duration)
    /// Gone, its slot freed. A handle keeps this for as long as it exists, also after the slot is reused.
    case unregistered(UnregisterReason, lastExit: UVExitStatus?)

    /// A short description.
    public var description: String {
        switch self {
        case .waitingForStartPhase: "waiting for its start phase"
        case .waitingForCrashReset: "waiting for a crash reset to finish"
        case .running(let pid, let ready): "running (pid \(pid))\(ready ? ", ready" : "")"
        case .stopping(let pid): "stopping (pid \(pid))"
        case .restartScheduled(let after, let exit, let error):
            "restarting \(after) after \(exit.map { "it \($0)" } ?? error.map { "\($0)" } ?? "its exit")"
        case .gaveUp(let exit, let restarts, let window):
            "gave up after \(restarts) restarts in \(window)\(exit.map { "; last \($0)" } ?? "")"
        case .unregistered(let reason, let exit): "unregistered: \(reason)\(exit.map { " (\($0))" } ?? "")"
        }
    }
}
