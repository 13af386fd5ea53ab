import BackgroundWorkers
import Benchmark
import BenchmarkSupport
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// A database worker's start (register → ready with an open connection) against a bare postgres-nio connect
/// from a running process, and against a runtime worker that connects to nothing, interleaved in the same
/// samples. Needs a server: run it through `./with-postgres.sh`, which starts a throwaway cluster and sets
/// `BGW_BENCH_PG_SOCKET_DIR`, `BGW_BENCH_PG_PORT` and `BGW_BENCH_PG_USER`.
let benchmarks: @Sendable () -> Void = {
    let environment = { (name: String) in getenv(name).map { String(cString: $0) } }
    guard let directory = environment("BGW_BENCH_PG_SOCKET_DIR"), let port = environment("BGW_BENCH_PG_PORT").flatMap(Int.init) else {
        print("Database benchmark skipped: run it through Benchmarks/with-postgres.sh (no BGW_BENCH_PG_SOCKET_DIR)")
        return
    }
    let server = DatabaseServer(.unixSocket(directory: directory), port: port, defaultUser: environment("BGW_BENCH_PG_USER") ?? "postgres")

    let executables = executableDirectory
    var configuration = WorkerSupervisor.Configuration()
    configuration.logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
    configuration.database = server
    let supervisor = try! WorkerSupervisor(configuration: configuration)
    Task { try await supervisor.run() }

    func worker(_ name: String, _ path: String, _ arguments: [String], database: Bool) -> BackgroundWorker {
        // The benchmark runner's LD_PRELOAD would cost every child milliseconds: empty it.
        var worker = BackgroundWorker(name: name, entryPoint: .executable(path, arguments: arguments, environment: ["LD_PRELOAD": ""]))
        worker.restartInterval = .never
        worker.reportsReadiness = true
        if database {
            worker.flags = [.sharedMemoryAccess, .databaseConnection]
            worker.startTime = .recoveryFinished
        }
        return worker
    }
    let databaseWorker = worker("db", executables + "/BenchDatabaseWorker", [], database: true)
    let plainWorker = worker("plain", executables + "/BenchSwiftWorker", ["serve"], database: false)
    let connectConfiguration = PostgresConnection.Configuration(
        unixSocketPath: "\(directory)/.s.PGSQL.\(port)", username: server.defaultUser, password: nil, database: "postgres"
    )
    let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

    let workerMetric = BenchmarkMetric.custom("database worker register→ready (µs)", useScalingFactor: false)
    let connectMetric = BenchmarkMetric.custom("bare postgres-nio connect (µs)", useScalingFactor: false)
    let plainMetric = BenchmarkMetric.custom("runtime worker register→ready, no database (µs)", useScalingFactor: false)
    let versusConnect = BenchmarkMetric.custom("ratio database worker/bare connect (‰)", useScalingFactor: false)
    let versusPlain = BenchmarkMetric.custom("ratio database worker/runtime worker (‰)", useScalingFactor: false)
    Benchmark(
        "register→ready with a connection, interleaved with a bare connect and a worker without one",
        configuration: .init(
            metrics: [workerMetric, connectMetric, plainMetric, versusConnect, versusPlain],
            warmupIterations: 3,
            maxDuration: .seconds(15),
            maxIterations: 200
        )
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            // Each times its start only: register→ready, or connect; the exit or close after it is not counted.
            let elapsed = try await measuredInRotation(turn: turn, batch: 3, [
                {
                    let start = ContinuousClock.now
                    let handle = try await supervisor.register(databaseWorker)
                    _ = try await handle.waitForReady()
                    let took = start.duration(to: .now)
                    _ = try await handle.waitForShutdown()
                    return took
                },
                {
                    let start = ContinuousClock.now
                    let connection = try await PostgresConnection.connect(configuration: connectConfiguration, id: 1, logger: quiet)
                    let took = start.duration(to: .now)
                    try await connection.close()
                    return took
                },
                {
                    let start = ContinuousClock.now
                    let handle = try await supervisor.register(plainWorker)
                    _ = try await handle.waitForReady()
                    let took = start.duration(to: .now)
                    await handle.terminate()
                    _ = try await handle.waitForShutdown()
                    return took
                },
            ]).map { microseconds($0) / 3 }
            benchmark.measurement(workerMetric, elapsed[0])
            benchmark.measurement(connectMetric, elapsed[1])
            benchmark.measurement(plainMetric, elapsed[2])
            benchmark.measurement(versusConnect, elapsed[0] * 1000 / max(1, elapsed[1]))
            benchmark.measurement(versusPlain, elapsed[0] * 1000 / max(1, elapsed[2]))
        }
    }
}
