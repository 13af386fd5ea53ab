import Logging
import Metrics
import UVConcurrency

extension WorkerSupervisor {
    /// The supervisor's settings, with defaults. PostgreSQL's GUCs where one exists.
    public struct Configuration: Sendable {
        /// The number of worker slots (`max_worker_processes`), shared by static and dynamic workers. Default 8.
        public var maxWorkerProcesses: Int = 8
        /// An optional step run by ``WorkerSupervisor/run()`` before the later start phases (for example
        /// migrations). It calls ``StartupProgress/reportConsistent()`` when the state is consistent, and
        /// returns when recovery is finished. Without one, every phase is reached at once.
        public var startupStep: (@Sendable (StartupProgress) async throws -> Void)?
        /// Keep never-restart static workers across a crash reset (PostgreSQL forgets them). Default false.
        public var keepStaticWorkersAcrossCrashReset: Bool = false
        /// How long immediate shutdown and a crash reset wait after SIGQUIT before SIGKILL. Default 5 s.
        public var quitGracePeriod: Duration = .seconds(5)
        /// The size in bytes of the shared-memory segment handed to workers with the shared-memory flag
        /// (descriptor 5); 0 for none. Default 1 MiB (only the pages workers touch use memory).
        public var sharedMemorySize: Int = 1 << 20
        /// The `bgworker-host` executable that runs library entry points; `nil` looks for `bgworker-host` beside
        /// this process's own executable.
        public var hostExecutable: String?
        /// Where library entry points named without a `/` are looked up (PostgreSQL's `$libdir`); `nil` is the
        /// directory of this process's own executable.
        public var libraryDirectory: String?
        /// How many undelivered events each ``WorkerSupervisor/events()`` sequence holds. Default 1,024.
        public var eventBufferSize: Int = 1024
        /// The clock for restart intervals, backoff and grace periods; tests pass a manual clock.
        public var clock: any Clock<Duration> = ContinuousClock()
        /// The logger; each line carries the worker's name, slot and pid as metadata.
        public var logger = Logger(label: "BackgroundWorkers")
        /// Where the counters and gauges go (`bgworker_starts_total`, `bgworker_exits_total{cause}`,
        /// `bgworker_restarts_total`, `bgworker_crash_resets_total`, `bgworker_registrations_refused_total`,
        /// `bgworker_running`, `bgworker_slots_in_use`); `nil` uses the process's bootstrapped `MetricsSystem`.
        public var metricsFactory: (any MetricsFactory)?
        /// A random number in 0..<1, for backoff jitter; tests pass a fixed one.
        public var random: @Sendable () -> Double = { Double.random(in: 0..<1) }
        /// The name of the supervisor's event-loop thread.
        public var loopName = "bgworker-supervisor"
        /// How workers are started: `posix_spawn` plus a pidfd watched on the loop (the default, through
        /// `UVSpawnStrategy.automatic`), or libuv's `uv_spawn` with its SIGCHLD handling (`.libuv`, which
        /// `fork`s and so slows down as the supervising process grows). Both follow the same rules.
        public var spawnStrategy: UVSpawnStrategy = .automatic
        /// The PostgreSQL server of workers registered with
        /// ``BackgroundWorkerContract/BackgroundWorker/Flags/databaseConnection``, handed to them through the
        /// worker process contract (`BGW_DB_*`; a password as descriptor 6, never in the environment). `nil`
        /// (the default): such registrations are refused. `BackgroundWorkersPostgres` connects with it on the
        /// worker side and offers a startup step that waits for it.
        public var database: DatabaseServer?
        /// Start built-in workers (``BackgroundWorkerContract/BackgroundWorker/EntryPoint/builtin(_:)``) and library
        /// workers through fork servers: a process of the built-ins' binary (``builtinExecutable``) and one of
        /// `bgworker-host`, started with the supervisor, that stop before `main` with one thread and fork workers
        /// from there instead of executing the binary again (a worker's start then costs less than a
        /// `posix_spawn` of a small program, instead of a whole Swift program's start-up). Each server keeps one
        /// spare fork waiting, which the next start turns into its worker. The worker is still this process's
        /// child and gets exactly what an exec'd one gets. Workers with a `user` or `group` are exec'd; so is
        /// every worker while the server is starting, after it failed, or when it cannot be used (the reason is
        /// logged). Default false.
        public var forkServer: Bool = false
        /// The binary whose built-in workers ``BackgroundWorkerContract/BackgroundWorker/EntryPoint/builtin(_:)``
        /// entries name (it calls `BuiltinWorkers.runIfRequested`, or is a `BackgroundWorkerMain`), and the fork
        /// server's binary. `nil` (the default): this process's own executable.
        public var builtinExecutable: String?

        /// The defaults.
        public init() {}
    }

    /// Handed to the startup step, to report progress through the start phases.
    public struct StartupProgress: Sendable {
        let supervisor: WorkerSupervisor

        /// The state is consistent: workers with ``BackgroundWorkerContract/BackgroundWorker/StartTime/consistentState`` start.
        public func reportConsistent() async {
            await self.supervisor.reachPhase(.consistentState)
        }
    }
}
