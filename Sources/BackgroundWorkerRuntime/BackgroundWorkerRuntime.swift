import BackgroundWorkerContract
import Synchronization
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// Runs a Swift worker under the worker process contract, doing for it what PostgreSQL asks every
/// background worker to do by hand.
///
/// ```swift
/// @main
/// struct Indexer: BackgroundWorkerMain {
///     static func run(_ worker: WorkerContext) async throws {
///         try worker.reportReady()
///         for await _ in worker.reloads { /* re-read the configuration */ }
///     }
/// }
/// ```
///
/// - Returning from the body exits 0: the worker is done and unregistered.
/// - Throwing exits 1 after printing the error: restarted per its policy.
/// - SIGTERM cancels the body (PostgreSQL's `bgworker_die`); a body that ends by throwing, as a cancelled one
///   usually does, exits 1. A body that returns normally after SIGTERM chose to exit 0.
/// - SIGHUP is a reload request in ``WorkerContext/reloads``.
/// - SIGQUIT (immediate shutdown, a crash reset) exits 2 at once, never blocked.
/// - Supervisor death (end of file on descriptor 3) cancels the body and exits 1 within 100 ms, whatever the
///   body does: no orphan outlives its supervisor.
public enum BackgroundWorkerRuntime {
    /// The exit code when the process was not started by a supervisor (`EX_CONFIG`).
    public static let notStartedBySupervisorExitCode: Int32 = 78

    /// Runs `body` as this process's worker and exits with the contract's exit code. Never returns.
    /// - Parameters:
    ///   - exitOnTerminate: Exit 1 at once on SIGTERM instead of cancelling the body (for bodies that cannot
    ///     be cancelled, such as a C function). Held while signals are blocked, like any SIGTERM.
    ///   - body: The worker's work.
    public static func run(
        exitOnTerminate: Bool = false,
        _ body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) async -> Never {
        let identity: WorkerProcessContract.Identity
        do {
            identity = try BackgroundWorker.current
        } catch {
            Self.printError("\(error)")
            exit(Self.notStartedBySupervisorExitCode)
        }
        let runtime: Runtime
        do {
            runtime = try await Runtime(identity: identity, exitOnTerminate: exitOnTerminate, body: body)
        } catch {
            Self.printError("worker '\(identity.name)': \(error)")
            exit(1)
        }
        let code = await runtime.run()
        Self.exitNow(code)
    }

    /// Flushes standard output and error, then ends the process without running exit handlers: the worker is
    /// done, and tearing down the concurrency runtime and the event loop thread costs about a millisecond.
    static func exitNow(_ code: Int32) -> Never {
        fflush(nil)
        _exit(code)
    }

    /// Tells the supervisor this worker is ready (a `READY=1` line on its readiness descriptor), from code
    /// that has no ``WorkerContext`` (a library function run by `bgworker-host`).
    /// - Throws: ``WorkerRuntimeError`` when the process was not started by a supervisor, the worker was
    ///   registered without `reportsReadiness`, or the write failed.
    public static func reportReady() throws(WorkerRuntimeError) {
        try Self.reportReady(try BackgroundWorker.current)
    }

    static func reportReady(_ identity: WorkerProcessContract.Identity) throws(WorkerRuntimeError) {
        guard let fd = identity.readinessDescriptor else {
            throw WorkerRuntimeError(
                .notReportingReadiness,
                "worker '\(identity.name)' was registered without reportsReadiness; register it with reportsReadiness = true"
            )
        }
        let line = Array(WorkerProcessContract.readyLine.utf8) + [UInt8(ascii: "\n")]
        let written = line.withUnsafeBytes { bytes -> Int in
            while true {
                let result = write(fd, bytes.baseAddress, bytes.count)
                if result < 0 && errno == EINTR { continue }
                return result
            }
        }
        guard written == line.count else {
            throw WorkerRuntimeError(.readinessFailed, "writing READY=1 to descriptor \(fd) failed: errno \(errno)")
        }
    }

    /// Tells the supervisor why the worker fails: an `ERROR=` line on the readiness descriptor, when there is
    /// one (newlines become spaces; at most 1,000 bytes are kept by the supervisor).
    static func reportError(_ message: String, _ identity: WorkerProcessContract.Identity) {
        guard let fd = identity.readinessDescriptor else { return }
        let text = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        let line = Array((WorkerProcessContract.errorLinePrefix + text + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Writes a line to standard error.
    public static func printError(_ message: String) {
        let line = Array((message + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

/// A worker type whose `run(_:)` is the worker's body; `@main` on it runs it under ``BackgroundWorkerRuntime``.
public protocol BackgroundWorkerMain: SendableMetatype {
    /// The worker's body.
    static func run(_ worker: WorkerContext) async throws
}

extension BackgroundWorkerMain {
    /// Runs ``run(_:)`` under ``BackgroundWorkerRuntime``.
    public static func main() async {
        await BackgroundWorkerRuntime.run { worker in try await Self.run(worker) }
    }
}

/// The runtime's own event loop: SIGTERM, SIGHUP and the supervisor-alive descriptor are watched there.
final class Runtime: Sendable {
    let identity: WorkerProcessContract.Identity
    let loop: UVEventLoop
    let context: WorkerContext
    let body: @Sendable (WorkerContext) async throws -> Void
    private let task = BodyTask()
    private let reloadContinuation: AsyncStream<Void>.Continuation

    init(
        identity: WorkerProcessContract.Identity,
        exitOnTerminate: Bool,
        body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) async throws {
        self.identity = identity
        self.body = body
        // An idle worker should not burn CPU: no spin before sleeping.
        self.loop = try UVEventLoop(name: "bgworker-rt", spinBeforeSleep: .zero)
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.reloadContinuation = continuation
        let task = self.task
        let gate = SignalGate(
            onTerminate: {
                if exitOnTerminate { exit(1) }
                task.cancel()
            },
            onReload: { continuation.yield() }
        )
        self.context = WorkerContext(identity: identity, reloads: WorkerReloads(stream: stream), signals: gate)
        let loop = self.loop
        let aliveDescriptor = identity.aliveDescriptor
        try await loop.submit {
            _ = try loop.watchSignal(.terminate) { gate.terminate() }
            // SIGQUIT (immediate shutdown, crash reset): exit at once, as PostgreSQL's quickdie. Without this,
            // Swift's crash backtracer takes SIGQUIT as a crash and can hang the process until SIGKILL.
            _ = try loop.watchSignal(.quit) { _exit(2) }
            _ = try loop.watchSignal(.hangup) { gate.reload() }
            _ = try loop.readLines(from: aliveDescriptor, onLine: { _ in }) { _ in
                // The supervisor is gone: cancel, and exit within 100 ms whatever the body does.
                task.cancel()
                _ = try? loop.scheduleTimer(after: .milliseconds(50)) {
                    BackgroundWorkerRuntime.printError("worker '\(identity.name)': supervisor gone, exiting")
                    exit(1)
                }
            }
        }
    }

    /// Runs the body; returns the exit code.
    func run() async -> Int32 {
        let body = self.body
        let context = self.context
        // The body starts only once its task can be cancelled from the signal callbacks.
        let (start, started) = AsyncStream<Void>.makeStream()
        let task = Task {
            for await _ in start { break }
            try await body(context)
        }
        self.task.set(task)
        started.yield()
        started.finish()
        let result = await task.result
        self.reloadContinuation.finish()
        switch result {
        case .success:
            return 0
        case .failure(let error):
            if !(error is CancellationError) {
                BackgroundWorkerRuntime.printError("worker '\(self.identity.name)' failed: \(error)")
                BackgroundWorkerRuntime.reportError("\(error)", self.identity)
            }
            return 1
        }
    }
}

/// The body's task, cancellable from signal callbacks; a cancellation that comes first is kept for it.
final class BodyTask: Sendable {
    private let state = Mutex<(task: Task<Void, any Error>?, cancelled: Bool)>((nil, false))

    func set(_ task: Task<Void, any Error>) {
        let cancelled = self.state.withLock { state -> Bool in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func cancel() {
        let task = self.state.withLock { state -> Task<Void, any Error>? in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}
