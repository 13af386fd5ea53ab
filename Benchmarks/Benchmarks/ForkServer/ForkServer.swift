import BackgroundWorkers
import Benchmark
import BenchmarkSupport
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Issue 13: register → ready of a built-in Swift worker forked by the fork server, the same exec'd again, and
/// `/bin/true` register → exited, interleaved in the same samples. Floors: forked ≤ 2× `/bin/true`, and at least
/// 4× faster than exec'd. PostgreSQL 15's own dynamic bgworker register → started: about 300 µs here.
let benchmarks: @Sendable () -> Void = {
    let forkedMetric = BenchmarkMetric.custom("register→ready forked (µs)", useScalingFactor: false)
    let execdMetric = BenchmarkMetric.custom("register→ready exec'd (µs)", useScalingFactor: false)
    let trueMetric = BenchmarkMetric.custom("register→exited /bin/true (µs)", useScalingFactor: false)
    let versusTrue = BenchmarkMetric.custom("ratio forked/true (‰)", useScalingFactor: false)
    let versusExec = BenchmarkMetric.custom("ratio exec'd/forked (‰)", useScalingFactor: false)
    Benchmark(
        "register→ready: a built-in Swift worker forked, exec'd, and /bin/true, interleaved",
        configuration: .init(
            metrics: [forkedMetric, execdMetric, trueMetric, versusTrue, versusExec],
            warmupIterations: 3,
            maxDuration: .seconds(20),
            maxIterations: 300
        )
    ) { benchmark in
        // Supervisors made only when the benchmark runs (the runner also starts this binary just to list its
        // benchmarks): one forks its built-ins, one exec's them, both from BenchSwiftWorker.
        func supervisor(forking: Bool) throws -> WorkerSupervisor {
            var configuration = WorkerSupervisor.Configuration()
            configuration.logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
            configuration.builtinExecutable = executableDirectory + "/BenchSwiftWorker"
            configuration.forkServer = forking
            return try WorkerSupervisor(configuration: configuration)
        }
        // The benchmark runner's LD_PRELOAD would cost every exec'd child (and the fork server's start)
        // milliseconds: workers and the server get an environment without it.
        unsetenv("LD_PRELOAD")
        let forking = try supervisor(forking: true)
        let execing = try supervisor(forking: false)
        let runs = [forking, execing].map { supervisor in Task { try await supervisor.run() } }
        guard await forking.waitForForkServer() else { fatalError("the fork server did not start") }

        var serving = BackgroundWorker(name: "serving", entryPoint: .builtin("serve"))
        serving.reportsReadiness = true
        serving.restartInterval = .never
        var truth = BackgroundWorker(name: "true", entryPoint: .executable("/bin/true"))
        truth.restartInterval = .never
        let builtin = serving
        let baseline = truth
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            // register → ready; the terminate and reap after it are not timed.
            func ready(_ supervisor: WorkerSupervisor) async throws -> Duration {
                let start = ContinuousClock.now
                let handle = try await supervisor.register(builtin)
                _ = try await handle.waitForReady()
                let took = start.duration(to: .now)
                await handle.terminate()
                _ = try await handle.waitForShutdown()
                return took
            }
            let elapsed = try await measuredInRotation(turn: turn, batch: 3, [
                { try await ready(forking) },
                { try await ready(execing) },
                {
                    let start = ContinuousClock.now
                    let handle = try await execing.register(baseline)
                    _ = try await handle.waitForShutdown()
                    return start.duration(to: .now)
                },
            ]).map { microseconds($0) / 3 }
            benchmark.measurement(forkedMetric, elapsed[0])
            benchmark.measurement(execdMetric, elapsed[1])
            benchmark.measurement(trueMetric, elapsed[2])
            benchmark.measurement(versusTrue, elapsed[0] * 1000 / max(1, elapsed[2]))
            benchmark.measurement(versusExec, elapsed[1] * 1000 / max(1, elapsed[0]))
        }
        for supervisor in [forking, execing] { await supervisor.shutdown(.fast) }
        for run in runs { _ = await run.result }
    }
}
