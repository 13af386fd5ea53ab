import BackgroundWorkerContract
import UVConcurrency

/// What to do after a worker's process ended. The bgworker rules as a pure function (PG-SEMANTICS 11–16, 22, 24),
/// so that unit tests drive them without processes or clocks.
enum ExitDecision: Equatable {
    /// Free the slot; never restart.
    case unregister(UnregisterReason)
    /// Restart after this long, counted from the reap.
    case restart(after: Duration)
    /// A shared-memory worker crashed: reset every shared-memory worker.
    case crashReset
    /// The restart budget is spent.
    case giveUp
}

/// The facts the rules look at besides the exit itself.
struct ExitContext {
    var worker: BackgroundWorker
    var terminateRequested: Bool
    var shuttingDown: Bool
    /// Restarts already made within the budget's window before this one (times on the supervisor's clock).
    var recentRestarts: Int
    /// Consecutive restarts so far without a stable uptime, for the backoff.
    var consecutiveRestarts: Int
    /// How long the process ran.
    var uptime: Duration
}

enum RestartRules {
    /// Whether this exit is a crash in PostgreSQL's sense: any exit code other than 0 and 1, or any signal.
    static func isCrash(_ status: UVExitStatus) -> Bool {
        switch status {
        case .exited(let code): code != 0 && code != 1
        case .signaled: true
        }
    }

    static func decide(_ status: UVExitStatus, _ context: ExitContext, random: () -> Double) -> ExitDecision {
        if context.shuttingDown { return .unregister(.shutdown) }
        let crash = Self.isCrash(status)
        if crash && context.worker.flags.contains(.sharedMemoryAccess) {
            // Even a terminated worker's crash takes shared state down with it (PG-13); the supervisor still
            // never restarts a terminated one.
            return .crashReset
        }
        if context.terminateRequested { return .unregister(.terminated) }
        if status == .exited(0) { return .unregister(.completed) }
        guard let interval = context.worker.restartInterval.duration else { return .unregister(.noRestart) }
        if let budget = context.worker.restartBudget, context.recentRestarts >= budget.maxRestarts {
            return .giveUp
        }
        return .restart(after: Self.delay(interval: interval, context: context, random: random))
    }

    /// The wait before the next restart: the fixed interval, or the backoff's.
    static func delay(interval: Duration, context: ExitContext, random: () -> Double) -> Duration {
        guard let backoff = context.worker.restartBackoff else { return interval }
        let first = backoff.initial ?? interval
        let attempt = context.uptime >= backoff.resetAfter ? 0 : context.consecutiveRestarts
        var wait = first
        for _ in 0..<min(attempt, 64) {
            wait = wait * backoff.multiplier
            if wait >= backoff.maximum { break }
        }
        wait = min(wait, backoff.maximum)
        guard backoff.jitter > 0 else { return wait }
        // A share of up to `jitter` of the wait, taken off or added: random() is in 0..<1.
        let factor = 1 + backoff.jitter * (2 * random() - 1)
        return max(.zero, wait * factor)
    }
}
