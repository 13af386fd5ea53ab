import BackgroundWorkers
import Benchmark
import BenchmarkSupport
import CSpawnBaseline
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's own cost next to a bare `uv_spawn` in C, measured in the same run: issue 3's figures.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 20,
        maxDuration: .seconds(5),
        maxIterations: 2000
    )

    // Children of the C baselines get this environment; workers get the supervisor's own plus the contract's,
    // with the benchmark runner's LD_PRELOAD (its malloc interposer) emptied, as a child loading it would
    // spend milliseconds on it.
    let cEnvironment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
    func worker(_ name: String, _ path: String) -> BackgroundWorker {
        var worker = BackgroundWorker(name: name, entryPoint: .executable(path, environment: ["LD_PRELOAD": ""]))
        worker.restartInterval = .never
        return worker
    }
    func quietConfiguration(slots: Int) -> WorkerSupervisor.Configuration {
        var configuration = WorkerSupervisor.Configuration()
        configuration.maxWorkerProcesses = slots
        configuration.logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
        return configuration
    }

    // MARK: Baselines

    Benchmark("C posix_spawn call→pid (baseline)") { benchmark in
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            let pid = csb_posix_spawn_only("/bin/true", cEnvironment)
            benchmark.stopMeasurement()
            precondition(pid > 0)
            precondition(csb_reap(pid) == 0)
        }
    }

    Benchmark("C uv_spawn call→pid (baseline)") { benchmark in
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            let pid = csb_uv_spawn_only("/bin/true", cEnvironment)
            benchmark.stopMeasurement()
            precondition(pid > 0)
            csb_uv_reap_all()
        }
    }

    Benchmark("C uv_spawn spawn→reaped (baseline)") { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(csb_uv_spawn_and_wait("/bin/true", cEnvironment) == 0)
        }
    }

    Benchmark(
        "C uv_spawn 640 children, ≤ 64 alive (baseline)",
        configuration: .init(metrics: [.wallClock], timeUnits: .milliseconds, warmupIterations: 1, maxIterations: 20)
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            precondition(csb_uv_spawn_throughput("/bin/true", cEnvironment, 640, 64) == 0)
        }
    }

    // MARK: WorkerSupervisor

    let supervisor = try! WorkerSupervisor(configuration: quietConfiguration(slots: 64))
    // Runs for the life of the benchmark process.
    Task { try await supervisor.run() }
    let trueWorker = worker("true", "/bin/true")

    Benchmark("register→waitForStartup: WorkerSupervisor") { benchmark in
        for _ in benchmark.scaledIterations {
            benchmark.startMeasurement()
            let handle = try await supervisor.register(trueWorker)
            _ = try? await handle.waitForStartup()  // /bin/true may be gone already: then it reports stopped
            benchmark.stopMeasurement()
            _ = try await handle.waitForShutdown()
        }
    }

    // The floor's figure: both in the same samples, in rotating order (the machine's speed drifts over seconds).
    let supervisorMetric = BenchmarkMetric.custom("register→waitForStartup (ns)", useScalingFactor: false)
    let cMetric = BenchmarkMetric.custom("C posix_spawn call→pid (ns)", useScalingFactor: false)
    let ratioMetric = BenchmarkMetric.custom("ratio supervisor/C (‰)", useScalingFactor: false)
    Benchmark(
        "register→waitForStartup vs C posix_spawn call→pid, interleaved",
        configuration: .init(metrics: [supervisorMetric, cMetric, ratioMetric], warmupIterations: 5, maxDuration: .seconds(10), maxIterations: 300)
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            var elapsed: [Duration] = [.zero, .zero]
            for step in 0..<2 {
                let which = (step + turn) % 2
                for _ in 0..<5 {
                    if which == 0 {
                        let start = ContinuousClock.now
                        let handle = try await supervisor.register(trueWorker)
                        _ = try? await handle.waitForStartup()
                        elapsed[0] += start.duration(to: .now)
                        _ = try await handle.waitForShutdown()
                    } else {
                        let start = ContinuousClock.now
                        let pid = csb_posix_spawn_only("/bin/true", cEnvironment)
                        elapsed[1] += start.duration(to: .now)
                        precondition(pid > 0 && csb_reap(pid) == 0)
                    }
                }
            }
            let ours = nanoseconds(elapsed[0]) / 5
            let c = nanoseconds(elapsed[1]) / 5
            benchmark.measurement(supervisorMetric, ours)
            benchmark.measurement(cMetric, c)
            benchmark.measurement(ratioMetric, ours * 1000 / max(1, c))
        }
    }

    Benchmark("register→waitForShutdown, /bin/true: WorkerSupervisor") { benchmark in
        for _ in benchmark.scaledIterations {
            let handle = try await supervisor.register(trueWorker)
            _ = try await handle.waitForShutdown()
        }
    }

    Benchmark(
        "640 children, ≤ 64 alive: WorkerSupervisor",
        configuration: .init(metrics: [.wallClock], timeUnits: .milliseconds, warmupIterations: 1, maxIterations: 20)
    ) { benchmark in
        for _ in benchmark.scaledIterations {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<64 {
                    group.addTask {
                        for _ in 0..<10 {
                            let handle = try await supervisor.register(trueWorker)
                            _ = try await handle.waitForShutdown()
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    Benchmark(
        "exit→restarted pid, interval 0: WorkerSupervisor",
        configuration: .init(
            metrics: [.custom("restart latency (ns)", polarity: .prefersSmaller, useScalingFactor: false)],
            warmupIterations: 5,
            maxDuration: .seconds(5),
            maxIterations: 1000
        )
    ) { benchmark in
        // One worker that exits 1 at once and is restarted at once, forever; each sample is one exit→start.
        var restarting = worker("restarting", "/bin/false")
        restarting.restartInterval = .seconds(0)
        restarting.restartThrottle = nil  // the mechanism's own latency: PostgreSQL's rule, at once
        let events = await supervisor.events()
        let handle = try await supervisor.register(restarting)
        var exitedAt: ContinuousClock.Instant?
        var samples = 0
        for await event in events where event.handle == handle {
            switch event.kind {
            case .exited: exitedAt = event.time
            case .started:
                if let exitedAt {
                    let latency = exitedAt.duration(to: event.time)
                    benchmark.measurement(.custom("restart latency (ns)", polarity: .prefersSmaller, useScalingFactor: false), Int(latency.components.attoseconds / 1_000_000_000 + latency.components.seconds * 1_000_000_000))
                    samples += 1
                }
            default: break
            }
            if samples >= benchmark.scaledIterations.count { break }
        }
        await handle.terminate()
        _ = try await handle.waitForShutdown()
    }

    Benchmark(
        "1,000 sleeping workers: start all, resident memory, fast-stop all",
        configuration: .init(
            metrics: [
                .custom("start all (ms)", useScalingFactor: false),
                .custom("fast-stop all (ms)", useScalingFactor: false),
                .custom("resident memory per worker (bytes)", useScalingFactor: false),
                .custom("resident memory before (KiB)", useScalingFactor: false),
            ],
            warmupIterations: 0,
            maxIterations: 3
        )
    ) { benchmark in
        let before = residentBytes()
        let start = ContinuousClock.now
        try await withWorkerSupervisor(configuration: quietConfiguration(slots: 1000)) { big in
            var sleeper = worker("sleeper", "/bin/sleep")
            sleeper.entryPoint = .executable("/bin/sleep", arguments: ["1000"], environment: ["LD_PRELOAD": ""])
            sleeper.stopGracePeriod = .seconds(5)
            var handles: [BackgroundWorkerHandle] = []
            for _ in 0..<1000 {
                handles.append(try await big.register(sleeper))
            }
            for handle in handles { _ = try await handle.waitForStartup() }
            let started = ContinuousClock.now
            let during = residentBytes()
            benchmark.measurement(.custom("start all (ms)", useScalingFactor: false), milliseconds(start.duration(to: started)))
            benchmark.measurement(.custom("resident memory per worker (bytes)", useScalingFactor: false), (during - before) / 1000)
            benchmark.measurement(.custom("resident memory before (KiB)", useScalingFactor: false), before / 1024)
            let stopping = ContinuousClock.now
            await big.shutdown(.fast)
            for handle in handles { _ = try await handle.waitForShutdown() }
            benchmark.measurement(.custom("fast-stop all (ms)", useScalingFactor: false), milliseconds(stopping.duration(to: .now)))
        }
    }
}

func milliseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
}

/// This process's resident memory, from /proc/self/statm.
func residentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "re") else { return 0 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, 128, file) != nil else { return 0 }
    let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
    guard fields.count >= 2, let resident = Int(fields[1]) else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}
