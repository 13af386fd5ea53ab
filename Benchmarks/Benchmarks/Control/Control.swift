import BackgroundWorkers
import Benchmark
import BenchmarkSupport
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// register → waitForStartup() from a client in another process than the supervisor (this process, talking
/// to a `bgworkerd` it starts, through the control socket) against the same in an in-process supervisor,
/// interleaved in the same samples. The floor of issue 12: remote ≤ 1.5× in-process.
let benchmarks: @Sendable () -> Void = {
    var configuration = WorkerSupervisor.Configuration()
    configuration.logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
    let supervisor = try! WorkerSupervisor(configuration: configuration)
    Task { try await supervisor.run() }

    // A worker that stays until terminated: one that exits at once may be gone (stopped) before a remote wait
    // arrives. Only register→started is timed; the terminate and reap after it are not.
    var worker = BackgroundWorker(name: "sleeper", entryPoint: .executable("/bin/sleep", arguments: ["1000"], environment: ["LD_PRELOAD": ""]))
    worker.restartInterval = .never
    let registration = worker

    let remoteMetric = BenchmarkMetric.custom("register→waitForStartup over the socket (µs)", useScalingFactor: false)
    let localMetric = BenchmarkMetric.custom("register→waitForStartup in process (µs)", useScalingFactor: false)
    let ratioMetric = BenchmarkMetric.custom("ratio socket/in process (‰)", useScalingFactor: false)
    Benchmark(
        "register→waitForStartup: a client in another process vs in process, interleaved",
        configuration: .init(
            metrics: [remoteMetric, localMetric, ratioMetric],
            warmupIterations: 5,
            maxDuration: .seconds(15),
            maxIterations: 500
        )
    ) { benchmark in
        // The daemon, started only when the benchmark runs (the runner also starts this binary just to list
        // its benchmarks), with its output to /dev/null (a daemon holding the runner's pipe would keep the
        // runner waiting) and without the runner's LD_PRELOAD (it would cost every child milliseconds).
        let folder = "/tmp/bgw-bench-\(getpid())"
        mkdir(folder, 0o700)
        let socket = "\(folder)/control.sock"
        let arguments = [executableDirectory + "/bgworkerd", "--socket", socket, "--log-level", "error"]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let environment: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/bin:/bin"), nil]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var daemon: pid_t = 0
        guard posix_spawn(&daemon, argv[0]!, &actions, nil, argv, environment) == 0 else { fatalError("bgworkerd could not be started") }
        defer {
            kill(daemon, SIGINT)
            var status: Int32 = 0
            waitpid(daemon, &status, 0)
            rmdir(folder)
        }
        var client: SupervisorClient?
        for _ in 0..<500 where client == nil {
            client = try? await SupervisorClient.connect(path: socket, notifications: false)
            if client == nil { try await Task.sleep(for: .milliseconds(10)) }  // the daemon is starting
        }
        guard let client else { fatalError("bgworkerd did not come up at \(socket)") }
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            let elapsed = try await measuredInRotation(turn: turn, batch: 5, [
                {
                    let start = ContinuousClock.now
                    let handle = try await client.register(registration, notify: false)
                    _ = try await handle.waitForStartup()
                    let took = start.duration(to: .now)
                    try await handle.terminate()
                    _ = try await handle.waitForShutdown()
                    return took
                },
                {
                    let start = ContinuousClock.now
                    let handle = try await supervisor.register(registration)
                    _ = try await handle.waitForStartup()
                    let took = start.duration(to: .now)
                    await handle.terminate()
                    _ = try await handle.waitForShutdown()
                    return took
                },
            ]).map { microseconds($0) / 5 }
            benchmark.measurement(remoteMetric, elapsed[0])
            benchmark.measurement(localMetric, elapsed[1])
            benchmark.measurement(ratioMetric, elapsed[0] * 1000 / max(1, elapsed[1]))
        }
        await client.close()
    }
}
