import Benchmark

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
    let trueOptions = UVSpawnOptions(executable: "/bin/true", environment: environment)
    Benchmark("spawn→exit: UVConcurrency from a task") { benchmark in
        for _ in benchmark.scaledIterations {
            let process = try await loop.spawnProcess(trueOptions)
            let status = try await process.waitForExit()
            precondition(status == .exited(0))
        }
    }
}
