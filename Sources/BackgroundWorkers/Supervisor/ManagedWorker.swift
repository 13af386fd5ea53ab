import BackgroundWorkerContract
import Logging
import UVConcurrency

/// One registered worker as the supervisor tracks it. Confined to the supervisor actor (its loop thread).
final class ManagedWorker {
    let registration: BackgroundWorker
    let slot: Int
    let generation: UInt64
    let isStatic: Bool
    /// Registration order, for starting workers in the order they were registered.
    let order: UInt64
    /// The notify pid, cleared when that process goes away.
    var notifyPID: Int32?

    /// The running process, if any.
    var process: UVChildProcess?
    var readinessReader: UVLineReader?
    var ready = false
    var hasEverStarted = false
    var startedAt: Duration = .zero

    var terminateRequested = false
    /// Set while asked to stop (terminate, fast or immediate shutdown, crash reset): SIGKILL follows.
    var stopping = false
    var killTask: Task<Void, Never>?
    var restartTask: Task<Void, Never>?
    /// When a restart is due (for the status detail), with what caused it.
    var pendingRestart: (after: Duration, lastExit: UVExitStatus?, spawnError: UVError?)?
    var gaveUp = false
    var waitingForCrashReset = false

    var lastExit: UVExitStatus?
    /// The last `ERROR=` line the worker wrote to its readiness descriptor.
    var lastReportedError: String?
    /// Restart times on the supervisor's clock, within the budget's window.
    var restartTimes: [Duration] = []
    var consecutiveRestarts = 0

    var startupWaiters = Waiters<Int32>()
    var shutdownWaiters = Waiters<WorkerStatus>()
    var readyWaiters = Waiters<Int32>()

    init(registration: BackgroundWorker, slot: Int, generation: UInt64, isStatic: Bool, order: UInt64) {
        self.registration = registration
        self.order = order
        self.slot = slot
        self.generation = generation
        self.isStatic = isStatic
        self.notifyPID = registration.notifyPID
    }

    var usesSharedMemory: Bool { self.registration.flags.contains(.sharedMemoryAccess) }

    var metadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "worker.name": "\(self.registration.name)",
            "worker.slot": "\(self.slot)",
            "worker.generation": "\(self.generation)",
        ]
        if let pid = self.process?.pid { metadata["worker.pid"] = "\(pid)" }
        return metadata
    }

    var detail: WorkerStatusDetail {
        if let process = self.process {
            return self.stopping ? .stopping(pid: process.pid) : .running(pid: process.pid, ready: self.ready)
        }
        if self.gaveUp, let exit = self.lastExit, let budget = self.registration.restartBudget {
            return .gaveUp(lastExit: exit, restarts: budget.maxRestarts, window: budget.window)
        }
        if let restart = self.pendingRestart {
            return .restartScheduled(after: restart.after, lastExit: restart.lastExit, spawnError: restart.spawnError)
        }
        if self.waitingForCrashReset { return .waitingForCrashReset }
        return .waitingForStartPhase
    }
}

/// Tasks waiting for one worker's state, resumed exactly once each: by the state, by an error, or by
/// cancellation (removed by token).
struct Waiters<Value: Sendable> {
    private var entries: [(token: ObjectIdentifier, continuation: CheckedContinuation<Value, any Error>)] = []

    var isEmpty: Bool { self.entries.isEmpty }

    mutating func add(_ token: ObjectIdentifier, _ continuation: CheckedContinuation<Value, any Error>) {
        self.entries.append((token, continuation))
    }

    /// Removes and returns the waiter of `token`, if it is still waiting.
    mutating func remove(_ token: ObjectIdentifier) -> CheckedContinuation<Value, any Error>? {
        guard let index = self.entries.firstIndex(where: { $0.token == token }) else { return nil }
        return self.entries.remove(at: index).continuation
    }

    mutating func resumeAll(with result: Result<Value, any Error>) {
        let entries = self.entries
        self.entries.removeAll()
        for entry in entries { entry.continuation.resume(with: result) }
    }
}

/// The shared-memory workers a crash reset still waits for.
struct CrashReset {
    var remaining: Set<ObjectIdentifier>
}
