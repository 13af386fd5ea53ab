import BackgroundWorkerRuntime
import BackgroundWorkers
import BackgroundWorkersPostgres
import Logging
import PostgresNIO
import Synchronization
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's `src/test/modules/worker_spi`, ported: each worker keeps a schema `schemaN` with a table
/// `counted` of `delta` rows and one `total` row, wakes every `naptime`, and folds the deltas into the total in
/// one transaction. `naptime` is re-read on SIGHUP; the supervisor forwards its own SIGHUP to the workers, as
/// the postmaster does.
///
/// ```
/// worker-spi [--socket-dir /var/run/postgresql] [--port 5432] [--user postgres] [--database postgres]
///            [--workers 2] [--launch 1] [--config FILE] [--seconds S]
/// ```
///
/// `--workers` static workers (PostgreSQL's `worker_spi.total_workers`) start once the server has finished
/// recovery; then `--launch` more are registered dynamically (`worker_spi_launch(n)`). `FILE` holds
/// `naptime = SECONDS` (default 10) and `database = NAME` lines, as `postgresql.conf` holds
/// `worker_spi.naptime` and `worker_spi.database`. SIGINT or SIGTERM: fast shutdown; `--seconds`: stop after so long.
@main
struct WorkerSPIMain {
    static func main() async throws {
        // The supervisor re-executes this binary for its built-in workers.
        await BuiltinWorkers.runIfRequested([WorkerSPI.builtinName: WorkerSPI.run])
        let options: Options
        do {
            options = try Options(CommandLine.arguments.dropFirst())
        } catch {
            say("worker-spi: \(error)")
            exit(64)
        }
        try await WorkerSPI.supervise(options)
    }
}

/// The command line.
struct Options {
    var socketDirectory = "/var/run/postgresql"
    var port = 5432
    var user = "postgres"
    var database = "postgres"
    var workers = 2
    var launch = 1
    var config: String?
    var seconds: Double?

    struct Invalid: Error, CustomStringConvertible { let description: String }

    init(_ arguments: ArraySlice<String>) throws {
        var iterator = arguments.makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { throw Invalid(description: "\(flag) needs a value") }
            func number<T: LosslessStringConvertible>(_: T.Type) throws -> T {
                guard let number = T(value) else { throw Invalid(description: "\(flag) '\(value)' is not a number") }
                return number
            }
            switch flag {
            case "--socket-dir": self.socketDirectory = value
            case "--port": self.port = try number(Int.self)
            case "--user": self.user = value
            case "--database": self.database = value
            case "--workers": self.workers = try number(Int.self)
            case "--launch": self.launch = try number(Int.self)
            case "--config": self.config = value
            case "--seconds": self.seconds = try number(Double.self)
            default: throw Invalid(description: "unknown option \(flag)")
            }
        }
        guard (0...100).contains(self.workers), (0...100).contains(self.launch) else {
            throw Invalid(description: "--workers and --launch must be within 0...100")
        }
    }
}

/// One line on standard output, written at once (workers and supervisor share it).
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

enum WorkerSPI {
    static let builtinName = "worker_spi"

    /// A worker's registration: PostgreSQL's `worker_spi_launch(i)` fills the same fields.
    static func registration(index: Int, config: String?) -> BackgroundWorker {
        var worker = BackgroundWorker(name: "worker_spi \(index)", entryPoint: .builtin(Self.builtinName))
        worker.type = "worker_spi"
        worker.flags = [.sharedMemoryAccess, .databaseConnection]
        worker.startTime = .recoveryFinished
        worker.restartInterval = .seconds(2)
        worker.mainArgument = UInt64(index)
        worker.extra = Array((config ?? "").utf8)
        worker.reportsReadiness = true
        return worker
    }

    /// `worker_spi_launch(n)`: registers a dynamic worker, with this process as its notify pid, and waits
    /// for it to start (`WaitForBackgroundWorkerStartup`).
    static func launch(_ index: Int, config: String?, on supervisor: WorkerSupervisor) async throws -> BackgroundWorkerHandle {
        var worker = Self.registration(index: index, config: config)
        worker.notifyPID = getpid()
        let handle = try await supervisor.register(worker)
        let pid = try await handle.waitForStartup()
        say("worker_spi \(index) launched with pid \(pid)")
        return handle
    }

    // MARK: - The supervisor

    static func supervise(_ options: Options) async throws {
        let server = DatabaseServer(
            .unixSocket(directory: options.socketDirectory),
            port: options.port,
            defaultUser: options.user,
            maintenanceDatabase: options.database
        )
        var configuration = WorkerSupervisor.Configuration()
        configuration.database = server
        configuration.logger = Logger(label: "worker-spi") { _ in SwiftLogNoOpLogHandler() }
        let stepLogger = Logger(label: "worker-spi") { _ in LineLogHandler() }
        configuration.startupStep = { progress in
            try await PostgresStartup.waitForServer(server, logger: stepLogger, consistent: progress.reportConsistent)
        }
        try await withWorkerSupervisor(configuration: configuration) { supervisor in
            let events = await supervisor.events()
            let printer = Task {
                for await event in events {
                    if let line = Self.describe(event) { say(line) }
                }
            }
            var handles: [BackgroundWorkerHandle] = []
            for index in stride(from: 1, through: options.workers, by: 1) {
                handles.append(try await supervisor.register(Self.registration(index: index, config: options.config)))
            }
            say("worker-spi: \(options.workers) static workers registered for \(server)")
            for index in stride(from: options.workers + 1, through: options.workers + options.launch, by: 1) {
                handles.append(try await Self.launch(index, config: options.config, on: supervisor))
            }
            let interrupts = try await supervisor.loop.signals(.interrupt)
            let terminations = try await supervisor.loop.signals(.terminate)
            let reloads = try await supervisor.loop.signals(.hangup)
            let everyHandle = handles
            let forwarder = Task {
                for await _ in reloads {
                    var pids: [Int32] = []
                    for handle in everyHandle {
                        if case .started(let pid) = await handle.status { pids.append(pid) }
                    }
                    say("worker-spi: SIGHUP, forwarded to \(pids.count) workers")
                    for pid in pids { kill(pid, SIGHUP) }
                }
            }
            say("worker-spi: running; SIGHUP reloads, SIGINT or SIGTERM stops")
            await withTaskGroup(of: Void.self) { group in
                group.addTask { for await _ in interrupts { return } }
                group.addTask { for await _ in terminations { return } }
                if let seconds = options.seconds { group.addTask { try? await Task.sleep(for: .seconds(seconds)) } }
                await group.next()
                group.cancelAll()
            }
            forwarder.cancel()
            say("worker-spi: fast shutdown")
            await supervisor.shutdown(.fast)
            _ = await printer.result
            say("worker-spi: stopped")
        }
    }

    /// What the supervisor prints of an event.
    static func describe(_ event: WorkerEvent) -> String? {
        switch event.kind {
        case .started(let pid): "\(event.name) started with pid \(pid)"
        case .exited(_, let status): "\(event.name) \(status)"
        case .restartScheduled(let after): "\(event.name) restarts in \(after)"
        case .reportedError(let text): "\(event.name) reported ERROR: \(text)"
        case .unregistered(let reason): "\(event.name) unregistered: \(reason)"
        default: nil
        }
    }

    // MARK: - The worker

    /// `worker_spi_main`.
    @Sendable static func run(_ worker: WorkerContext) async throws {
        let index = worker.identity.mainArgument
        let name = "worker_spi \(index)"
        let configPath = String(decoding: worker.identity.extra, as: UTF8.self)
        var settings = Settings.read(configPath)
        let schema = "schema\(index)"
        let connection = try await worker.initializeConnection(database: settings.database)
        let logger = DatabaseConnectionState.silentLogger
        do {
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
                try await connection.query(
                    PostgresQuery(unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(schema).counted (
                            type text CHECK (type IN ('total', 'delta')),
                            value integer)
                        """),
                    logger: logger
                )
                try await connection.query(
                    PostgresQuery(unsafeSQL: "CREATE UNIQUE INDEX IF NOT EXISTS counted_unique_total ON \(schema).counted (type) WHERE type = 'total'"),
                    logger: logger
                )
                try await connection.query(
                    PostgresQuery(unsafeSQL: "INSERT INTO \(schema).counted SELECT 'total', 0 WHERE NOT EXISTS (SELECT 1 FROM \(schema).counted WHERE type = 'total')"),
                    logger: logger
                )
            }
        } catch {
            throw WorkerSPIError(name: name, doing: "initializing \(schema).counted", error)
        }
        say("\(name): \(schema).counted initialized, naptime \(settings.naptime) s")
        try worker.reportReady()

        // One sequence of wake-ups: the naptime's end, or a reload (SIGHUP).
        let (wakeups, wake) = AsyncStream<Wakeup>.makeStream(bufferingPolicy: .bufferingNewest(8))
        let reloadForwarder = Task {
            for await _ in worker.reloads { wake.yield(.reload) }
        }
        defer { reloadForwarder.cancel() }
        var timer = Self.timer(after: settings.naptime, wake)
        defer { timer.cancel() }
        var iterator = wakeups.makeAsyncIterator()
        while let wakeup = await iterator.next() {
            try Task.checkCancellation()
            if wakeup == .reload {
                settings = Settings.read(configPath)
                say("\(name): reloaded, naptime is now \(settings.naptime) s")
            }
            timer.cancel()
            let total: Int
            do {
                total = try await connection.withTransaction(logger: logger) { connection in
                    let rows = try await connection.query(
                        PostgresQuery(unsafeSQL: """
                            WITH deleted AS (DELETE FROM \(schema).counted WHERE type = 'delta' RETURNING value),
                                 total AS (SELECT coalesce(sum(value), 0) AS sum FROM deleted)
                            UPDATE \(schema).counted SET value = counted.value + total.sum
                            FROM total WHERE type = 'total' RETURNING counted.value
                            """),
                        logger: logger
                    )
                    var value = 0
                    for try await row in rows.decode(Int.self) { value = row }
                    return value
                }
            } catch {
                try Task.checkCancellation()
                throw WorkerSPIError(name: name, doing: "folding the deltas of \(schema).counted", error)
            }
            say("\(name): count in \(schema).counted is now \(total)")
            timer = Self.timer(after: settings.naptime, wake)
        }
        throw CancellationError()
    }

    enum Wakeup: Sendable { case naptime, reload }

    /// A task that yields `.naptime` after `seconds`.
    static func timer(after seconds: Double, _ wake: AsyncStream<Wakeup>.Continuation) -> Task<Void, Never> {
        Task {
            guard (try? await Task.sleep(for: .seconds(seconds))) != nil else { return }
            wake.yield(.naptime)
        }
    }

    /// `worker_spi.naptime` and `worker_spi.database`, from the file named in the worker's extra bytes.
    struct Settings {
        var naptime = 10.0
        var database: String?

        /// Reads `key = value` lines; unknown keys and a missing file keep the defaults.
        static func read(_ path: String) -> Settings {
            var settings = Settings()
            guard !path.isEmpty, let file = fopen(path, "re") else { return settings }
            defer { fclose(file) }
            var buffer = [CChar](repeating: 0, count: 1024)
            while fgets(&buffer, Int32(buffer.count), file) != nil {
                let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let parts = line.split(separator: "=", maxSplits: 1).map { part in
                    String(part.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
                }
                guard parts.count == 2 else { continue }
                switch parts[0] {
                case "naptime": if let value = Double(parts[1]), value > 0 { settings.naptime = value }
                case "database": settings.database = parts[1]
                default: break
                }
            }
            return settings
        }
    }
}

/// A SQL error, with the server's message (postgres-nio's own description hides it).
struct WorkerSPIError: Error, CustomStringConvertible {
    let description: String

    init(name: String, doing what: String, _ error: any Error) {
        self.description = "\(name): \(what) failed: \(DatabaseWorkerError.describe(error))"
    }
}

/// Log lines of the startup step, on standard output.
struct LineLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        say("worker-spi: \(event.message)")
    }
}
