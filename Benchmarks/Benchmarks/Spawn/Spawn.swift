import Benchmark
import BenchmarkSupport

#if canImport(Glibc)
import Glibc
#endif
import CSpawnBaseline
import UVConcurrency

/// Spawn `/bin/true` and wait until it has been reaped: UVConcurrency from a task, against C baselines in the
/// same process and run.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 50,
        maxDuration: .seconds(5),
        maxIterations: 3000
    )

    // Every child gets the same small environment. The benchmark runner sets LD_PRELOAD (its malloc
    // interposer) in this process; a child inheriting it would spend milliseconds loading it.
    let environment = ["PATH": "/usr/bin:/bin"]
    let cEnvironment: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]

    Benchmark("spawn→exit: C posix_spawn + waitpid (baseline)") { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(csb_posix_spawn_and_wait("/bin/true", cEnvironment) == 0)
        }
    }

    Benchmark("spawn→exit: C uv_spawn + uv_run") { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(csb_uv_spawn_and_wait("/bin/true", cEnvironment) == 0)
        }
    }

    let loop = try! UVEventLoop(name: "bench-spawn")
    var trueOptions = UVSpawnOptions(executable: "/bin/true", environment: environment)
    trueOptions.strategy = .posixSpawn
    let posixSpawner = Spawner(loop: loop, options: trueOptions)
    trueOptions.strategy = .libuv
    let libuvSpawner = Spawner(loop: loop, options: trueOptions)

    Benchmark("spawn→exit: UVConcurrency posixSpawn, actor on the loop") { benchmark in
        for _ in benchmark.scaledIterations {
            let status = try await posixSpawner.spawnAndWait()
            precondition(status == .exited(0))
        }
    }

    Benchmark("spawn→exit: UVConcurrency libuv, actor on the loop") { benchmark in
        for _ in benchmark.scaledIterations {
            let status = try await libuvSpawner.spawnAndWait()
            precondition(status == .exited(0))
        }
    }

    // Side by side in the same samples, alternating order, so that drift in the machine's speed cancels out.
    let oursMetric = BenchmarkMetric.custom("UVConcurrency spawn→exit (µs)", useScalingFactor: false)
    let posixMetric = BenchmarkMetric.custom("C posix_spawn spawn→exit (µs)", useScalingFactor: false)
    let ratioMetric = BenchmarkMetric.custom("ratio UVConcurrency/posix_spawn (‰)", useScalingFactor: false)
    Benchmark(
        "spawn→exit interleaved: UVConcurrency (actor on the loop) vs C posix_spawn",
        configuration: .init(metrics: [oursMetric, posixMetric, ratioMetric], warmupIterations: 3, maxDuration: .seconds(10), maxIterations: 300)
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            let elapsed = try await timeInRotation(turn: turn, batch: 5, [
                {
                    let status = try await posixSpawner.spawnAndWait()
                    precondition(status == .exited(0))
                },
                { precondition(csb_posix_spawn_and_wait("/bin/true", cEnvironment) == 0) },
            ])
            let (ours, posix) = (elapsed[0], elapsed[1])
            let oursMicroseconds = microseconds(ours) / 5
            let posixMicroseconds = microseconds(posix) / 5
            benchmark.measurement(oursMetric, oursMicroseconds)
            benchmark.measurement(posixMetric, posixMicroseconds)
            benchmark.measurement(ratioMetric, oursMicroseconds * 1000 / max(1, posixMicroseconds))
        }
    }

    let taskOptions = UVSpawnOptions(executable: "/bin/true", environment: environment)
    Benchmark("spawn→exit: UVConcurrency automatic, from a task (4 hops)") { benchmark in
        for _ in benchmark.scaledIterations {
            let process = try await loop.spawnProcess(taskOptions)
            let status = try await process.waitForExit()
            precondition(status == .exited(0))
        }
    }
}

/// What the supervisor does: an actor on the loop spawns synchronously and awaits the exit.
actor Spawner {
    let loop: UVEventLoop
    let options: UVSpawnOptions

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.loop.asUnownedSerialExecutor() }

    init(loop: UVEventLoop, options: UVSpawnOptions) {
        self.loop = loop
        self.options = options
    }

    func spawnAndWait() async throws -> UVExitStatus {
        let process = try self.loop.spawn(self.options)
        return try await process.waitForExit()
    }
}
