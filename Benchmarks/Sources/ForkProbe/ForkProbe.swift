import BackgroundWorkers
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Diagnostics: register → ready → terminate → shutdown of BenchSwiftWorker's `serve` built-in in a loop, forked
/// (`fork`, the default) or exec'd (`exec`), for a profiler or strace to watch. Arguments: mode, count.
@main
struct ForkProbe {
    static func main() async throws {
        let arguments = CommandLine.arguments
        let forking = arguments.count < 2 || arguments[1] != "exec"
        let count = arguments.count > 2 ? Int(arguments[2]) ?? 500 : 500
        let directory = String(arguments[0][..<(arguments[0].lastIndex(of: "/") ?? arguments[0].startIndex)])
        unsetenv("LD_PRELOAD")
        var configuration = WorkerSupervisor.Configuration()
        configuration.logger = Logger(label: "probe") { _ in SwiftLogNoOpLogHandler() }
        configuration.builtinExecutable = directory + "/BenchSwiftWorker"
        configuration.forkServer = forking
        try await Task.detached {
            try await withWorkerSupervisor(configuration: configuration) { supervisor in
                if forking, await !supervisor.waitForForkServer() { fatalError("no fork server") }
                print("supervisor \(getpid()) fork server \(await supervisor.forkServerPID.map(String.init) ?? "none")")
                var worker = BackgroundWorker(name: "serving", entryPoint: .builtin("serve"))
                worker.reportsReadiness = true
                worker.restartInterval = .never
                var ready: [Duration] = []
                for _ in 0..<count {
                    let start = ContinuousClock.now
                    let handle = try await supervisor.register(worker)
                    _ = try await handle.waitForReady()
                    ready.append(start.duration(to: .now))
                    await handle.terminate()
                    _ = try await handle.waitForShutdown()
                }
                ready.sort()
                print("register→ready p10 \(ready[count / 10]) p25 \(ready[count / 4]) p50 \(ready[count / 2]) p90 \(ready[count * 9 / 10])")
            }
        }.value
    }
}
