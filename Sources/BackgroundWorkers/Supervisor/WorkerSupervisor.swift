@_exported import BackgroundWorkerContract
import CWorkerSupport
import Logging
import Metrics
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's postmaster for background workers: registers workers, starts them as child processes, restarts
/// them by the bgworker rules, notifies with SIGUSR1, and hands out handles to await.
///
/// The actor's executor is a `UVEventLoop` of its own: every method runs on the loop thread, and process exits
/// enter the actor synchronously from libuv's callback. The rules themselves are a pure state machine that
/// the actor feeds with what happens and whose actions it carries out: it owns the processes, timers and
/// waiters, and decides nothing itself.
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
/// child was reaped. Signals: the supervisor keeps SIGUSR1 handled for the life of its process (so that it can
/// be its own notify pid), and its process must leave SIGCHLD to libuv; see the package documentation.
public actor WorkerSupervisor {
    /// The settings it was created with.
    public nonisolated let configuration: Configuration
    /// The loop the actor runs on.
    public nonisolated let loop: UVEventLoop

    let logger: Logger
    let clock: SupervisorClock
    /// The supervisor's environment at creation, the base of every worker's: checked and copied once.
    let baseEnvironment: UVEnvironment
    /// The rules: every worker's lifecycle and the supervisor's own. The only record of "is it running".
    var machine: SupervisorStateMachine
    /// What the actor holds for each live registration (processes, timers, waiters), by slot.
    var resources: [WorkerResources?]
    /// Deadlines on an injected clock (with the default clock they are libuv timers in `resources`).
    var clockDeadlines: ClockDeadlines
    /// The supervisor-alive pipe: every worker gets the read end as descriptor 3; the write end stays here.
    let alivePipe: UVPipePair
    /// The shared-memory segment of this generation of shared state; replaced by every crash reset.
    var sharedMemory: SharedMemorySegment?
    var sharedMemoryGeneration = 0
    /// The database password as a sealed memfd, handed to database workers as descriptor 6; -1 for none.
    let databasePassword: Int32
    var eventSubscribers: [UInt64: AsyncStream<WorkerEvent>.Continuation] = [:]
    var nextSubscriber: UInt64 = 0
    /// Tasks waiting in `waitUntilStopped()`.
    var stopWaiters = UVWaiterList<Void>()
    /// Registrations waiting for a free slot, in the order they are served.
    var slotWaiters: [SlotWaiter] = []
    /// Whether `serve()` runs (it then stops the loop at the end); otherwise stopping does.
    var isServing = false
    var startupError: (any Error)?
    /// Whether the alive pipe and the shared memory were closed.
    var closed = false
    /// Kills every worker's process group if this process dies without a shutdown; started by `begin()`.
    var guardian: WorkerGuardian?
    /// The control socket, while one is served.
    var controlServer: ControlServer?
    /// Forks built-in workers when ``Configuration/forkServer`` is set; started by `begin()`.
    var forkServer: ForkServer?
    /// Forks library workers (a fork server of `bgworker-host`) when ``Configuration/forkServer`` is set.
    var libraryForkServer: ForkServer?
    /// Tasks in `waitForForkServer()` before `run()` started the fork server.
    var forkServerWaiters: [CheckedContinuation<Void, Never>] = []
    /// How many built-in and library workers' processes were forked, and how many exec'd.
    var forkServedStarts = (forked: 0, execd: 0)

    let metrics: SupervisorMetrics

    /// The actor runs on its loop.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        self.loop.asUnownedSerialExecutor()
    }

    /// Creates a supervisor and its event loop. Nothing runs until ``run()``.
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Code/loopFailed`` when the loop or the alive pipe
    ///   cannot be created, ``SupervisorError/Code/sharedMemoryFailed`` for the segment, or
    ///   ``SupervisorError/Code/invalidRegistration`` for a slot count outside 1...262143.
    public init(configuration: Configuration = Configuration()) throws(SupervisorError) {
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
        // A notify pid may be this process: SIGUSR1 must never have its default action (terminate) here.
        do {
            try UVSignal.user1.keepHandledForProcessLifetime()
        } catch {
            throw SupervisorError(.loopFailed, "keeping SIGUSR1 handled in this process: \(error)", underlying: error)
        }
        if let database = configuration.database {
            do {
                try database.validate()
            } catch {
                throw SupervisorError(.invalidConfiguration, "invalid database server: \(error)", registrationError: error)
            }
        }
        // First what can fail without leaving a thread behind.
        var databasePassword: Int32 = -1
        if let password = configuration.database?.password {
            databasePassword = Array(password.utf8).withUnsafeBytes {
                cws_memfd_sealed("bgworker-db-password", $0.baseAddress, $0.count)
            }
            guard databasePassword >= 0 else {
                throw SupervisorError(
                    .invalidConfiguration,
                    "holding the database password in a sealed memfd failed: errno \(-databasePassword)"
                )
            }
        }
        let sharedMemory: SharedMemorySegment?
        do {
            sharedMemory =
            configuration.sharedMemorySize > 0
            ? try SharedMemorySegment(size: configuration.sharedMemorySize, generation: 0) : nil
        } catch {
            _ = cws_close(databasePassword)
            throw error
        }
        do {
            self.alivePipe = try UVPipePair()
        } catch {
            sharedMemory?.close()
            _ = cws_close(databasePassword)
            throw SupervisorError(.loopFailed, "creating the supervisor-alive pipe: \(error)", underlying: error)
        }
        do {
            self.loop = try UVEventLoop(name: configuration.loopName)
        } catch {
            sharedMemory?.close()
            _ = cws_close(databasePassword)
            self.alivePipe.close()
            throw SupervisorError(.loopFailed, "creating the supervisor's event loop: \(error)", underlying: error)
        }
        self.sharedMemory = sharedMemory
        self.databasePassword = databasePassword
        self.configuration = configuration
        self.logger = configuration.logger
        self.clock = SupervisorClock(configuration.clock)
        self.baseEnvironment = Self.currentEnvironment()
        self.machine = SupervisorStateMachine(
            settings: .init(
                maxWorkerProcesses: configuration.maxWorkerProcesses,
                keepStaticWorkersAcrossCrashReset: configuration.keepStaticWorkersAcrossCrashReset,
                quitGracePeriod: configuration.quitGracePeriod,
                supervisorPID: getpid()
            )
        )
        self.resources = Array(repeating: nil, count: configuration.maxWorkerProcesses)
        self.clockDeadlines = ClockDeadlines()
        self.metrics = SupervisorMetrics(factory: configuration.metricsFactory ?? MetricsSystem.factory)
    }

    deinit {
        // Dropped without a shutdown: nothing can reach its workers any more. The loop kills every live child
        // when it stops; the alive pipe's write end closes, which ends workers that watch it.
        if !self.closed {
            self.alivePipe.close()
            self.sharedMemory?.close()
            _ = cws_close(self.databasePassword)
        }
        self.loop.requestShutdown()
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
        var actions: [SupervisorAction] = []
        let result = self.machine.register(worker, self.readings(), check: self.checkEntryPoint, &actions)
        switch result {
        case .success(let id):
            let record = WorkerRecord()
            let handle = BackgroundWorkerHandle(id: id, supervisor: self, record: record)
            self.resources[id.slot] = WorkerResources(handle: handle, registration: worker)
            self.metrics.slotsInUse.record(self.machine.slotsInUse)
            self.perform(actions)
            return handle
        case .failure(let error):
            if error.code == .noFreeSlot { self.metrics.registrationsRefused.increment() }
            self.perform(actions)
            throw error
        }
    }

    /// The rules' view of a handle's worker: live, or the final state its handle kept; nil for a handle of
    /// another supervisor.
    func state(of handle: BackgroundWorkerHandle) -> WorkerStateMachine? {
        guard handle.supervisor === self else { return nil }
        return self.machine.worker(handle.id) ?? handle.record.final
    }

    /// What the actor holds for a live registration.
    func resources(_ id: WorkerID) -> WorkerResources? {
        guard let resources = self.resources[id.slot], resources.handle.id == id else { return nil }
        return resources
    }

    // MARK: - Status

    /// The rules' view of a worker of this supervisor's (a handle always asks its own supervisor).
    func ownState(of handle: BackgroundWorkerHandle) -> WorkerStateMachine {
        guard let worker = self.state(of: handle) else {
            preconditionFailure("\(handle) was passed to a supervisor that did not register it")
        }
        return worker
    }

    /// The PostgreSQL status of a handle's worker (``BackgroundWorkerHandle/status``).
    func status(of handle: BackgroundWorkerHandle) -> WorkerStatus {
        self.ownState(of: handle).status(supervisorStopped: self.machine.stoppedBy != nil)
    }

    /// Everything known of a handle's worker, for as long as the handle exists (``BackgroundWorkerHandle/detail``).
    func detail(of handle: BackgroundWorkerHandle) -> WorkerStatusDetail {
        self.ownState(of: handle).detail
    }

    /// The last `ERROR=` line a handle's worker wrote (``BackgroundWorkerHandle/lastReportedError``).
    func lastReportedError(of handle: BackgroundWorkerHandle) -> String? {
        self.ownState(of: handle).lastReportedError
    }

    /// The number of slots in use.
    public var slotsInUse: Int { self.machine.slotsInUse }

    // MARK: - Events

    /// The events of every worker from now on, until the supervisor stops. See ``WorkerEvents`` for buffering.
    public func events() -> WorkerEvents {
        let (stream, continuation) = AsyncStream<WorkerEvent>.makeStream(
            bufferingPolicy: .bufferingNewest(max(1, self.configuration.eventBufferSize))
        )
        if self.machine.stoppedBy != nil {
            continuation.finish()
            return WorkerEvents(stream)
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
        return WorkerEvents(stream)
    }
}

/// What the supervisor actor holds for one live registration: everything that is not a rule. Confined to the
/// actor (its loop thread).
final class WorkerResources {
    let handle: BackgroundWorkerHandle
    /// Log metadata, made once.
    let metadata: Logger.Metadata
    let name: String
    var process: UVChildProcess?
    /// Whether the running process was forked by the fork server (not exec'd).
    var forked = false
    var readiness: UVLineReader?
    var restartTimer: UVTimer?
    var killTimer: UVTimer?
    var startupWaiters = UVWaiterList<Int32>()
    var shutdownWaiters = UVWaiterList<WorkerStatus>()
    var readyWaiters = UVWaiterList<Int32>()

    init(handle: BackgroundWorkerHandle, registration: BackgroundWorker) {
        self.handle = handle
        self.name = registration.name
        self.metadata = [
            "worker.name": "\(registration.name)",
            "worker.slot": "\(handle.slot)",
            "worker.generation": "\(handle.generation)",
        ]
    }

    var id: WorkerID { self.handle.id }
}

/// The final state of a registration, kept by its handles (not by the supervisor) once its slot is free, so
/// that a handle answers for its own generation for as long as it exists.
final class WorkerRecord: @unchecked Sendable {
    // @unchecked Sendable: `final` is written and read only by the supervisor actor, on its loop thread.
    var final: WorkerStateMachine?
}

/// The supervisor's clock: any `Clock<Duration>`, reduced to "time since creation" and "sleep until".
struct SupervisorClock: Sendable {
    let now: @Sendable () -> Duration
    let sleep: @Sendable (_ until: Duration) async throws -> Void
    /// Whether it is the real monotonic clock: then deadlines are the loop's own timers.
    let isContinuous: Bool

    init(_ clock: any Clock<Duration>) {
        self = Self.make(clock)
    }

    private init(
        now: @escaping @Sendable () -> Duration,
        sleep: @escaping @Sendable (Duration) async throws -> Void,
        isContinuous: Bool
    ) {
        self.now = now
        self.sleep = sleep
        self.isContinuous = isContinuous
    }

    private static func make<C: Clock<Duration>>(_ clock: C) -> SupervisorClock {
        let origin = clock.now
        return SupervisorClock(
            now: { origin.duration(to: clock.now) },
            sleep: { offset in try await clock.sleep(until: origin.advanced(by: offset), tolerance: nil) },
            isContinuous: clock is ContinuousClock
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
}
