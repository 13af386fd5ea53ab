import BackgroundWorkerContract
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The bgworker rules that are plain functions of a few values (PG-SEMANTICS 10, 13, 16): what counts as a
/// crash, which spawn errors are worth retrying, and how long to wait before a restart.
enum RestartPolicy {
    /// Whether an exit is a crash in PostgreSQL's sense: an exit code other than 0 and 1, or death by a
    /// signal, except a signal the supervisor itself sent to stop that process (terminate, shutdown, the
    /// grace period's SIGKILL, a crash reset's SIGQUIT): PostgreSQL's workers exit 1 on SIGTERM, so there a
    /// stop is never a crash either.
    static func isCrash(_ status: UVExitStatus, stopSignals: SignalSet = []) -> Bool {
        switch status {
        case .exited(let code): code != 0 && code != 1
        case .signaled(let signal): !stopSignals.contains(signal)
        }
    }

    /// How an exit is counted in `bgworker_exits_total{cause}`: `done`, `restart` or `crash`.
    static func metricCause(_ status: UVExitStatus, stopSignals: SignalSet) -> String {
        if Self.isCrash(status, stopSignals: stopSignals) { return "crash" }
        return status == .exited(0) ? "done" : "restart"
    }

    /// Whether a spawn error may go away by itself (PostgreSQL's failed fork: too many processes or
    /// descriptors, no memory), so that the spawn is retried; any other error stops the worker.
    static func isTransient(_ error: UVError) -> Bool {
        let code = error.errno
        return code == EAGAIN || code == ENOMEM || code == EMFILE || code == ENFILE
    }

    /// The wait before a restart.
    ///
    /// - Parameters:
    ///   - base: The worker's interval, or zero for a restart after a crash reset (PG-14: at once).
    ///   - useBackoff: Whether the worker's backoff applies (not after a crash reset).
    ///   - backoffAttempts: Restarts made since the last run that lasted the backoff's `resetAfter`.
    ///   - shortRuns: Consecutive runs shorter than the throttle's `stableAfter`, this one included.
    ///   - random: A number in 0..<1 for the backoff's jitter.
    static func delay(
        _ worker: BackgroundWorker,
        base: Duration,
        useBackoff: Bool,
        backoffAttempts: Int,
        shortRuns: Int,
        random: () -> Double
    ) -> Duration {
        var wait = base
        if useBackoff, let backoff = worker.restartBackoff {
            wait = Self.grown(backoff.initial ?? base, by: backoff.multiplier, times: backoffAttempts, maximum: backoff.maximum)
            if backoff.jitter > 0 {
                // A share of up to `jitter` of the wait, taken off or added.
                wait = max(.zero, wait * (1 + backoff.jitter * (2 * random() - 1)))
            }
        }
        if let throttle = worker.restartThrottle, shortRuns > 0 {
            let floor = Self.grown(throttle.initial, by: throttle.multiplier, times: shortRuns - 1, maximum: throttle.maximum)
            wait = max(wait, floor)
        }
        return wait
    }

    /// `min(first × multiplierⁿ, maximum)`, without overflowing for large n.
    static func grown(_ first: Duration, by multiplier: Double, times: Int, maximum: Duration) -> Duration {
        var wait = first
        for _ in 0..<min(times, 64) {
            if wait >= maximum { break }
            wait = wait * multiplier
        }
        return min(wait, maximum)
    }
}

/// A small set of signals, by number (1...63).
struct SignalSet: OptionSet, Hashable, Sendable {
    let rawValue: UInt64

    init(rawValue: UInt64) { self.rawValue = rawValue }

    init(_ signal: UVSignal) {
        let number = signal.rawValue
        self.rawValue = number > 0 && number < 64 ? 1 << UInt64(number) : 0
    }

    func contains(_ signal: UVSignal) -> Bool { self.contains(SignalSet(signal)) }

    mutating func insert(_ signal: UVSignal) { self.formUnion(SignalSet(signal)) }
}
