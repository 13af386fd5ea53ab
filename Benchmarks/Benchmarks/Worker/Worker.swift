import BackgroundWorkers
import Benchmark
import BenchmarkSupport
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The start cost of Swift workers under a supervisor, against `/bin/true` and an empty Swift `main` in the
/// same run: what the worker runtime adds.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock],
        timeUnits: .microseconds,
        warmupIterations: 10,
        maxDuration: .seconds(5),
        maxIterations: 1000
    )

    let directory = executableDirectory
    var configuration = WorkerSupervisor.Configuration()
    configuration.logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
    let supervisor = try! WorkerSupervisor(configuration: configuration)
    Task { try await supervisor.run() }

    func worker(_ name: String, _ path: String, _ arguments: [String] = [], ready: Bool = false) -> BackgroundWorker {
        // The benchmark runner's LD_PRELOAD would cost every child milliseconds: empty it.
        var worker = BackgroundWorker(name: name, entryPoint: .executable(path, arguments: arguments, environment: ["LD_PRELOAD": ""]))
        worker.restartInterval = .never
        worker.reportsReadiness = ready
        return worker
    }

    let cases = [
        ("register→exited: /bin/true (baseline)", worker("true", "/bin/true")),
        ("register→exited: empty Swift main (baseline)", worker("empty", directory + "/BenchEmptyMain")),
        ("register→exited: empty async Swift main (baseline)", worker("empty-async", directory + "/BenchEmptyAsyncMain")),
        ("register→exited: Swift worker on the runtime, returning at once", worker("runtime", directory + "/BenchSwiftWorker", ["return"])),
    ]
    for (name, registration) in cases {
        Benchmark(name) { benchmark in
            for _ in benchmark.scaledIterations {
                let handle = try await supervisor.register(registration)
                _ = try await handle.waitForShutdown()
            }
        }
    }

    let serving = worker("serving", directory + "/BenchSwiftWorker", ["serve"], ready: true)
    Benchmark("register→ready: Swift worker on the runtime") { benchmark in
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            let handle = try await supervisor.register(serving)
            _ = try await handle.waitForReady()
            benchmark.stopMeasurement()
            await handle.terminate()
            _ = try await handle.waitForShutdown()
        }
    }

    // The same three starts side by side in the same samples, in a rotating order, so that drift in the
    // machine's speed cancels out of the ratios (the separate benchmarks above run minutes apart).
    let emptyMetric = BenchmarkMetric.custom("empty Swift main (µs)", useScalingFactor: false)
    let asyncMetric = BenchmarkMetric.custom("empty async Swift main (µs)", useScalingFactor: false)
    let runtimeMetric = BenchmarkMetric.custom("runtime worker (µs)", useScalingFactor: false)
    let versusEmpty = BenchmarkMetric.custom("ratio runtime/empty main (‰)", useScalingFactor: false)
    let versusAsync = BenchmarkMetric.custom("ratio runtime/empty async main (‰)", useScalingFactor: false)
    let rotation = [cases[1].1, cases[2].1, cases[3].1]
    Benchmark(
        "register→exited interleaved: empty main, empty async main, runtime worker",
        configuration: .init(
            metrics: [emptyMetric, asyncMetric, runtimeMetric, versusEmpty, versusAsync],
            warmupIterations: 3,
            maxDuration: .seconds(15),
            maxIterations: 300
        )
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            let elapsed = try await timeInRotation(turn: turn, batch: 3, rotation.map { worker in
                {
                    let handle = try await supervisor.register(worker)
                    _ = try await handle.waitForShutdown()
                }
            }).map { microseconds($0) / 3 }
            benchmark.measurement(emptyMetric, elapsed[0])
            benchmark.measurement(asyncMetric, elapsed[1])
            benchmark.measurement(runtimeMetric, elapsed[2])
            benchmark.measurement(versusEmpty, elapsed[2] * 1000 / max(1, elapsed[0]))
            benchmark.measurement(versusAsync, elapsed[2] * 1000 / max(1, elapsed[1]))
        }
    }
}
