@_exported import BackgroundWorkerContract
import Logging
import Metrics
@_exported import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's postmaster for background workers: registers workers, starts them as child processes, restarts
/// them by the bgworker rules, notifies with SIGUSR1, and hands out handles to await.
///
/// The actor's executor is a ``UVConcurrency/UVEventLoop`` of its own: every method runs on the loop thread,
/// and process exits enter the actor synchronously from libuv's callback. It is the one owner of all worker
/// state.
///
/// ```swift
/// try await withWorkerSupervisor { supervisor in
///     let handle = try await supervisor.register(BackgroundWorker(name: "indexer", entryPoint: .executable("/usr/bin/indexer")))
///     print(try await handle.waitForStartup())
/// }
/// ```
///
/// Registrations made before ``run()`` are static (PostgreSQL's `RegisterBackgroundWorker`); those made while
/// it runs are dynamic (`RegisterDynamicBackgroundWorker`). ``run()`` returns once shutdown finished and every
/// child was reaped. Signals: see the package documentation; the supervisor watches none itself, but its
/// process must leave SIGCHLD to it and SIGUSR1 to libuv.
public actor WorkerSupervisor {
    /// The settings it was created with.
    public nonisolated let configuration: Configuration
    /// The loop the actor runs on.
    public nonisolated let loop: UVEventLoop

    let logger: Logger
    let clock: SupervisorClock
    let supervisorPID: Int32
    /// The supervisor's environment at creation, the base of every worker's.
    let baseEnvironment: [String: String]

    enum RunState {
        case idle
        case running
        case stopping(ShutdownMode)
        case stopped
    }

    var runState = RunState.idle
    /// The latest start phase reached; nil before `run()`.
    var phase: BackgroundWorker.StartTime?
    var slots: SlotTable<ManagedWorker>
    /// Shared-memory workers still to exit before a crash reset completes; nil when no reset is under way.
    var crashReset: CrashReset?
    /// The supervisor-alive pipe: every worker gets the read end as descriptor 3; the write end stays here.
    let alivePipe: UVPipePair
    /// The shared-memory segment of this generation of shared state; replaced by every crash reset.
    var sharedMemory: SharedMemorySegment?
    var sharedMemoryGeneration = 0
    var eventSubscribers: [UInt64: AsyncStream<WorkerEvent>.Continuation] = [:]
    var nextSubscriber: UInt64 = 0
    var runWaiters: [CheckedContinuation<Void, Never>] = []
    var startupTask: Task<Void, Never>?
    var startupError: (any Error)?
    var registrations: UInt64 = 0
    /// Per slot: the last `ERROR=` line of its latest unregistered generation.
    var reportedErrors: [Int: (generation: UInt64, text: String)] = [:]
    var runningCount = 0

    let metrics: SupervisorMetrics

    /// The actor runs on its loop.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        self.loop.asUnownedSerialExecutor()
    }

    /// Creates a supervisor and its event loop. Nothing runs until ``run()``.
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Code/loopFailed`` when the loop or the alive pipe
    ///   cannot be created, or ``SupervisorError/Code/invalidRegistration`` for a slot count below 1.
    public init(configuration: Configuration = Configuration()) throws {
        guard configuration.sharedMemorySize >= 0 else {
            throw SupervisorError(
                .sharedMemoryFailed,
                "sharedMemorySize \(configuration.sharedMemorySize) is negative; use 0 for no shared memory"
            )
        }
        guard configuration.maxWorkerProcesses >= 1, configuration.maxWorkerProcesses <= 262_143 else {
            throw SupervisorError(
                .invalidRegistration,
                "maxWorkerProcesses \(configuration.maxWorkerProcesses) is outside 1...262143 (PostgreSQL's limit)"
            )
        }
        self.configuration = configuration
        // First what can fail without leaving a thread behind.
        let sharedMemory =
            configuration.sharedMemorySize > 0
            ? try SharedMemorySegment(size: configuration.sharedMemorySize, generation: 0) : nil
        self.sharedMemory = sharedMemory
        do {
            self.alivePipe = try UVPipePair()
        } catch {
            sharedMemory?.close()
            throw SupervisorError(.loopFailed, "creating the supervisor-alive pipe: \(error)")
        }
        do {
            self.loop = try UVEventLoop(name: configuration.loopName)
        } catch {
            sharedMemory?.close()
            self.alivePipe.close()
            throw SupervisorError(.loopFailed, "creating the supervisor's event loop: \(error)")
        }
        self.logger = configuration.logger
        self.clock = SupervisorClock(configuration.clock)
        self.supervisorPID = getpid()
        self.baseEnvironment = Self.currentEnvironment()
        self.slots = SlotTable(capacity: configuration.maxWorkerProcesses)

        self.metrics = SupervisorMetrics(factory: configuration.metricsFactory ?? MetricsSystem.factory)
    }

    static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                let key = String(text[..<equals])
                // Variables of the worker contract are the supervisor's to set, never to inherit.
                if !key.hasPrefix(WorkerProcessContract.environmentPrefix) {
                    result[key] = String(text[text.index(after: equals)...])
                }
            }
            pointer += 1
        }
        return result
    }

    // MARK: - Registration

    /// Registers a worker and returns its handle.
    ///
    /// Before ``run()`` the registration is static: it may not set a notify pid, and the worker starts when
    /// the supervisor reaches its phase. While running it is dynamic and starts at once if its phase was
    /// reached. Workers start in registration order.
    ///
    /// - Throws: ``SupervisorError``: ``SupervisorError/Code/invalidRegistration`` (the error's
    ///   `registrationError` names the field), ``SupervisorError/Code/noFreeSlot`` ("no free worker slot: 8 of
    ///   8 in use"), ``SupervisorError/Code/notifyPIDRefused``, or ``SupervisorError/Code/shuttingDown`` (the
    ///   notify pid, if any, gets SIGUSR1). Nothing changes when it throws.
    public func register(_ worker: BackgroundWorker) throws(SupervisorError) -> BackgroundWorkerHandle {
        let isStatic: Bool
        switch self.runState {
        case .idle: isStatic = true
        case .running: isStatic = false
        case .stopping, .stopped:
            // PG-17: the refusal wakes the notify pid, but only one that may be notified at all: a pid from
            // the caller is never signalled unchecked.
            if let pid = worker.notifyPID, self.isNotifiable(pid) { self.notify(pid) }
            throw SupervisorError(
                .shuttingDown,
                "the supervisor is shutting down and takes no new registrations (worker '\(worker.name)')"
            )
        }
        do {
            try worker.validate(isStatic: isStatic)
        } catch {
            throw SupervisorError(.invalidRegistration, error.description, registrationError: error)
        }
        if let pid = worker.notifyPID, !self.isNotifiable(pid) {
            throw SupervisorError(
                .notifyPIDRefused,
                "notifyPID \(pid) of worker '\(worker.name)' is neither this supervisor (pid \(self.supervisorPID)) nor one of its running workers"
            )
        }
        let order = self.registrations
        guard
            let (slot, generation) = self.slots.insert({ slot, generation in
                ManagedWorker(registration: worker, slot: slot, generation: generation, isStatic: isStatic, order: order)
            })
        else {
            self.metrics.registrationsRefused.increment()
            throw SupervisorError(
                .noFreeSlot,
                "no free worker slot: \(self.slots.used) of \(self.slots.capacity) in use; raise maxWorkerProcesses or wait for a worker to stop (worker '\(worker.name)')"
            )
        }
        self.registrations += 1
        let managed = self.slots.entry(slot: slot, generation: generation)!
        self.metrics.slotsInUse.record(self.slots.used)
        self.logger.debug("registered", metadata: managed.metadata)
        self.emit(managed, .registered)
        if self.canStart(managed) {
            self.start(managed)
        }
        return self.handle(managed)
    }

    func handle(_ worker: ManagedWorker) -> BackgroundWorkerHandle {
        BackgroundWorkerHandle(slot: worker.slot, generation: worker.generation, supervisor: self)
    }

    func worker(_ handle: BackgroundWorkerHandle) -> ManagedWorker? {
        guard handle.supervisor === self else { return nil }
        return self.slots.entry(slot: handle.slot, generation: handle.generation)
    }

    /// Notify pids must be this process or a running worker of it (PostgreSQL: a live postmaster child).
    func isNotifiable(_ pid: Int32) -> Bool {
        pid == self.supervisorPID || self.slots.all.contains { $0.process?.pid == pid }
    }

    /// Sends the SIGUSR1 wake-up. Nothing else is in it: the receiver re-reads the status.
    func notify(_ pid: Int32?) {
        guard let pid else { return }
        _ = kill(pid, SIGUSR1)
    }

    // MARK: - Status

    /// The PostgreSQL status of a handle's worker.
    public func status(of handle: BackgroundWorkerHandle) -> WorkerStatus {
        if case .stopped = self.runState { return .supervisorDied }
        guard let worker = self.worker(handle) else { return .stopped }
        if let process = worker.process { return .started(pid: process.pid) }
        return worker.hasEverStarted ? .stopped : .notYetStarted
    }

    /// Everything known of a handle's worker.
    public func detail(of handle: BackgroundWorkerHandle) -> WorkerStatusDetail {
        guard let worker = self.worker(handle) else {
            if case .stopped = self.runState, handle.supervisor === self {
                let outcome = self.slots.outcome(slot: handle.slot, generation: handle.generation)
                if case .unregistered(.replaced, _) = outcome { return .supervisorStopped }
                return outcome
            }
            return self.slots.outcome(slot: handle.slot, generation: handle.generation)
        }
        return worker.detail
    }

    /// The last `ERROR=` line a handle's worker wrote to its status descriptor (for example why a library
    /// entry point could not be loaded), or nil; kept after the worker was unregistered, until its slot is
    /// reused.
    public func lastReportedError(of handle: BackgroundWorkerHandle) -> String? {
        if let worker = self.worker(handle) { return worker.lastReportedError }
        guard let kept = self.reportedErrors[handle.slot], kept.generation == handle.generation else { return nil }
        return kept.text
    }

    /// The number of slots in use.
    public var slotsInUse: Int { self.slots.used }

    /// The events of every worker from now on, until the supervisor stops. See ``WorkerEvents`` for buffering.
    public func events() -> WorkerEvents {
        let (stream, continuation) = AsyncStream<WorkerEvent>.makeStream(
            bufferingPolicy: .bufferingNewest(max(1, self.configuration.eventBufferSize))
        )
        if case .stopped = self.runState {
            continuation.finish()
            return WorkerEvents(stream: stream)
        }
        let key = self.nextSubscriber
        self.nextSubscriber += 1
        self.eventSubscribers[key] = continuation
        let loop = self.loop
        continuation.onTermination = { _ in
            loop.execute {
                self.assumeIsolated { _ = $0.eventSubscribers.removeValue(forKey: key) }
            }
        }
        return WorkerEvents(stream: stream)
    }

    func emit(_ worker: ManagedWorker, _ kind: WorkerEvent.Kind) {
        guard !self.eventSubscribers.isEmpty else { return }
        let event = WorkerEvent(handle: self.handle(worker), name: worker.registration.name, kind: kind, time: .now)
        for continuation in self.eventSubscribers.values {
            continuation.yield(event)
        }
    }
}

/// The supervisor's clock: any `Clock<Duration>`, reduced to "time since creation" and "sleep".
struct SupervisorClock: Sendable {
    let now: @Sendable () -> Duration
    let sleep: @Sendable (Duration) async throws -> Void

    init(_ clock: any Clock<Duration>) {
        self = Self.make(clock)
    }

    private init(now: @escaping @Sendable () -> Duration, sleep: @escaping @Sendable (Duration) async throws -> Void) {
        self.now = now
        self.sleep = sleep
    }

    private static func make<C: Clock<Duration>>(_ clock: C) -> SupervisorClock {
        let origin = clock.now
        return SupervisorClock(
            now: { origin.duration(to: clock.now) },
            sleep: { duration in try await clock.sleep(until: clock.now.advanced(by: duration), tolerance: nil) }
        )
    }
}

/// The counters and gauges of one supervisor (swift-metrics; a no-op unless the process bootstraps a backend).
struct SupervisorMetrics: Sendable {
    let starts: Counter
    let registrationsRefused: Counter
    let restarts: Counter
    let crashResets: Counter
    let running: Gauge
    let slotsInUse: Gauge
    /// One counter per exit cause, made once: exits are a hot path.
    let exits: [String: Counter]

    init(factory: any MetricsFactory) {
        self.starts = Counter(label: "bgworker_starts_total", factory: factory)
        self.registrationsRefused = Counter(label: "bgworker_registrations_refused_total", factory: factory)
        self.restarts = Counter(label: "bgworker_restarts_total", factory: factory)
        self.crashResets = Counter(label: "bgworker_crash_resets_total", factory: factory)
        self.running = Gauge(label: "bgworker_running", factory: factory)
        self.slotsInUse = Gauge(label: "bgworker_slots_in_use", factory: factory)
        var exits: [String: Counter] = [:]
        for cause in ["done", "restart", "crash"] {
            exits[cause] = Counter(label: "bgworker_exits_total", dimensions: [("cause", cause)], factory: factory)
        }
        self.exits = exits
    }

    /// Counts an exit: `done` (code 0), `restart` (code 1), `crash` (anything else, or a signal).
    func exit(cause: String) {
        self.exits[cause]?.increment()
    }
}
