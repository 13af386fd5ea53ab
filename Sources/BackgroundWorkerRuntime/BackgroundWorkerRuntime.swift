import BackgroundWorkerContract
import CWorkerSupport

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
/// or, in a `main.swift` with no `await` at top level (so that `main` stays synchronous):
///
/// ```swift
/// BackgroundWorkerRuntime.run { worker in
///     try worker.reportReady()
///     for await _ in worker.reloads { /* re-read the configuration */ }
/// }
/// ```
///
/// - The body starts on the main thread (the DocC article's "Where the body runs" has the details): child
///   tasks still run in parallel, `MainActor` work runs on the main thread.
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

    /// Runs `body` as this process's worker and exits with the contract's exit code. Never returns. Call it
    /// from a synchronous `main` (top-level code without `await`, or ``BackgroundWorkerMain``): the body then
    /// starts on the main thread, without first starting Swift's thread pool.
    ///
    /// The body's jobs prefer the main thread; a job that comes while the main thread is busy runs on Swift's
    /// global executor instead, so child tasks run in parallel. `MainActor` work runs on the main thread between
    /// the body's jobs.
    /// - Parameters:
    ///   - exitOnTerminate: Exit 1 at once on SIGTERM instead of cancelling the body (for bodies that cannot
    ///     be cancelled, such as a C function). Held while signals are blocked, like any SIGTERM.
    ///   - body: The worker's work.
    public static func run(
        exitOnTerminate: Bool = false,
        _ body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) -> Never {
        let runtime = Self.start(exitOnTerminate: exitOnTerminate, body: body)
        let executor: MainThreadExecutor
        do {
            executor = try MainThreadExecutor()
        } catch {
            Self.printError("worker '\(runtime.identity.name)': \(error)")
            exit(1)
        }
        runtime.startBody(on: executor) { code in Self.exitNow(code) }
        executor.runOnMainThread()
    }

    /// Runs `body` as this process's worker from an `async` context and exits with the contract's exit code.
    /// Never returns. Prefer the synchronous `run` in `main`: here the body runs on Swift's global executor,
    /// whose thread pool an `async` main starts first, which costs a worker's start about a tenth more.
    /// - Parameters:
    ///   - exitOnTerminate: Exit 1 at once on SIGTERM instead of cancelling the body.
    ///   - body: The worker's work.
    public static func run(
        exitOnTerminate: Bool = false,
        _ body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) async -> Never {
        let runtime = Self.start(exitOnTerminate: exitOnTerminate, body: body)
        let code = await withCheckedContinuation { continuation in
            runtime.startBody(on: nil) { code in continuation.resume(returning: code) }
        }
        Self.exitNow(code)
    }

    /// Reads this worker's identity and starts the watcher; exits 78 outside a supervisor, 1 on failure.
    private static func start(
        exitOnTerminate: Bool,
        body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) -> Runtime {
        let identity: WorkerProcessContract.Identity
        do {
            identity = try BackgroundWorker.current
        } catch {
            Self.printError("\(error)")
            exit(Self.notStartedBySupervisorExitCode)
        }
        // Before this process opens anything of its own: a descriptor it opened could take the number of a
        // closed contract descriptor and be mistaken for it (its own watch pipe watched as descriptor 3).
        if let problem = Self.descriptorProblem(identity) {
            Self.printError("worker '\(identity.name)': \(problem); it was not started as the worker process contract says")
            exit(Self.notStartedBySupervisorExitCode)
        }
        do {
            return try Runtime(identity: identity, exitOnTerminate: exitOnTerminate, body: body)
        } catch {
            Self.printError("worker '\(identity.name)': \(error)")
            exit(1)
        }
    }

    /// What is wrong with the descriptors the contract names, or nil: each must be above standard error, open,
    /// of the right kind (pipes for descriptors 3 and 4, a file for shared memory), and distinct.
    static func descriptorProblem(_ identity: WorkerProcessContract.Identity) -> String? {
        func check(_ variable: String, _ fd: Int32, pipe: Bool) -> String? {
            guard fd > 2 else { return "\(variable) is \(fd), not a descriptor above standard error" }
            var info = stat()
            guard fstat(fd, &info) == 0 else { return "\(variable) is \(fd), which is not open" }
            let kind = info.st_mode & S_IFMT
            if pipe && kind != S_IFIFO { return "\(variable) is \(fd), which is not a pipe" }
            if !pipe && kind != S_IFREG { return "\(variable) is \(fd), which is not a shared-memory file" }
            return nil
        }
        let variables = WorkerProcessContract.Variable.self
        if let problem = check(variables.aliveDescriptor, identity.aliveDescriptor, pipe: true) { return problem }
        if let status = identity.statusDescriptor {
            if let problem = check(variables.statusDescriptor, status, pipe: true) { return problem }
            if status == identity.aliveDescriptor { return "\(variables.statusDescriptor) and \(variables.aliveDescriptor) are both \(status)" }
        }
        if let readiness = identity.readinessDescriptor, readiness != identity.statusDescriptor {
            if let problem = check(variables.readinessDescriptor, readiness, pipe: true) { return problem }
        }
        if let sharedMemory = identity.sharedMemory {
            if let problem = check(variables.sharedMemoryDescriptor, sharedMemory.descriptor, pipe: false) { return problem }
        }
        return nil
    }

    /// Flushes standard output and error, then ends the process without running exit handlers: the worker is
    /// done, and tearing down the concurrency runtime costs up to a millisecond.
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

    /// Tells the supervisor why the worker fails: an `ERROR=` line on the status descriptor, when there is
    /// one (newlines become spaces; at most 1,000 bytes are kept by the supervisor).
    static func reportError(_ message: String, _ identity: WorkerProcessContract.Identity) {
        let text = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        Self.writeStatusLine(WorkerProcessContract.errorLinePrefix + text, identity)
    }

    /// Writes a line to the status descriptor, when there is one.
    static func writeStatusLine(_ text: String, _ identity: WorkerProcessContract.Identity) {
        guard let fd = identity.statusDescriptor else { return }
        let line = Array((text + "\n").utf8)
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
    ///
    /// Started as a built-in (`--bgworker-builtin NAME`, by a supervisor whose
    /// `Configuration.builtinExecutable` is this binary), the whole binary is the built-in: it tells the
    /// supervisor so, and ``BuiltinWorkers/requestedName`` says which one was asked for.
    public static func main() {
        if BuiltinWorkers.requestedName != nil { BuiltinWorkers.announceHandOver() }
        BackgroundWorkerRuntime.run { worker in try await Self.run(worker) }
    }
}

/// The worker's watcher and body. SIGTERM, SIGHUP and the supervisor-alive descriptor are watched by a small C
/// thread (`cws_worker_watch_start`), not an event loop: a worker's start cost is paid on every restart, and
/// this way nothing but the body's own work runs before the body starts.
final class Runtime: Sendable {
    /// How long a worker whose supervisor died has to end after its body was cancelled.
    static let supervisorGoneGrace = 50

    let identity: WorkerProcessContract.Identity
    let context: WorkerContext
    let body: @Sendable (WorkerContext) async throws -> Void
    let task = BodyTask()

    init(
        identity: WorkerProcessContract.Identity,
        exitOnTerminate: Bool,
        body: @escaping @Sendable (WorkerContext) async throws -> Void
    ) throws(WorkerRuntimeError) {
        self.identity = identity
        self.body = body
        let task = self.task
        let reloads = SignalRequests()
        let hooks = ContextHooks()
        let gate = SignalGate(
            onTerminate: {
                if exitOnTerminate { BackgroundWorkerRuntime.exitNow(1) }
                task.cancel()
                hooks.cancelled()
            },
            onReload: { reloads.request() }
        )
        self.context = WorkerContext(
            identity: identity,
            reloads: reloads,
            notifications: SignalRequests(),
            signals: gate,
            hooks: hooks
        )
        // The runtime lives until the process ends (`run` never returns): the watcher holds it unretained.
        let error = cws_worker_watch_start(
            identity.aliveDescriptor,
            Int32(Self.supervisorGoneGrace),
            { event, context in
                guard let context else { return }
                Unmanaged<Runtime>.fromOpaque(context).takeUnretainedValue().watched(event)
            },
            Unmanaged.passUnretained(self).toOpaque()
        )
        guard error == 0 else {
            throw WorkerRuntimeError(.runtimeFailed, "starting the signal and supervisor watcher failed: errno \(error)")
        }
        // SIGUSR1 is handled from here on: the supervisor may name this process as a notify pid.
        BackgroundWorkerRuntime.writeStatusLine(WorkerProcessContract.notifyLine, identity)
    }

    /// Called on the watcher's thread.
    private func watched(_ event: Int32) {
        switch Int(event) {
        case Int(CWS_WATCH_TERMINATE):
            self.context.signals.terminate()
        case Int(CWS_WATCH_RELOAD):
            self.context.signals.reload()
        case Int(CWS_WATCH_NOTIFY):
            self.context.notificationRequests.request()
        case Int(CWS_WATCH_SUPERVISOR_GONE):
            // The supervisor is gone: cancel, and exit within 100 ms whatever the body does.
            self.task.cancel()
            self.context.hooks.cancelled()
        case Int(CWS_WATCH_DEADLINE):
            // No stdio flush here: a body stuck inside stdio (a full pipe) holds its lock, and this exit must
            // happen whatever the body does. printError writes without stdio.
            BackgroundWorkerRuntime.printError("worker '\(self.identity.name)': supervisor gone, exiting")
            _exit(1)
        default:
            break
        }
    }

    /// Starts the body in a task of its own, preferring `executor`; `done` gets the exit code when it ends.
    ///
    /// The body's task is a `Task<Void, Never>` that reports the outcome itself: a throwing task's `result`
    /// would make the Swift runtime instantiate generic type metadata by name before every worker's body
    /// starts.
    func startBody(on executor: (any TaskExecutor)?, done: @escaping @Sendable (Int32) -> Void) {
        let body = self.body
        let context = self.context
        let identity = self.identity
        let task = Task(executorPreference: executor) { () async -> Void in
            var code: Int32 = 0
            do {
                try await body(context)
            } catch {
                if !(error is CancellationError) {
                    BackgroundWorkerRuntime.printError("worker '\(identity.name)' failed: \(error)")
                    BackgroundWorkerRuntime.reportError("\(error)", identity)
                }
                code = 1
            }
            context.reloadRequests.finish()
            context.notificationRequests.finish()
            if context.hooks.hasCleanups { await context.hooks.runCleanups(afterCancellation: Task.isCancelled) }
            done(code)
        }
        // A cancellation that came before this is applied now: the body sees it at its first check.
        self.task.set(task)
    }
}

/// The task running the body, cancellable from the watcher's thread; a cancellation that comes first is kept
/// for it.
final class BodyTask: Sendable {
    private struct State {
        var task: Task<Void, Never>?
        var cancelled = false
    }

    private let state = RuntimeMutex(State())

    func set(_ task: Task<Void, Never>) {
        let cancelled = self.state.withLock { state -> Bool in
            state.task = task
            return state.cancelled
        }
        if cancelled { task.cancel() }
    }

    func cancel() {
        let task = self.state.withLock { state -> Task<Void, Never>? in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}
