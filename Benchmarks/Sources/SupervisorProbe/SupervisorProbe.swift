import BackgroundWorkers
import Logging

/// Diagnostics: register → waitForStartup → waitForShutdown of /bin/true in a loop, for a profiler to watch.
@main
struct SupervisorProbe {
    static func main() async throws {
        var configuration = WorkerSupervisor.Configuration()
        configuration.logger = Logger(label: "probe") { _ in SwiftLogNoOpLogHandler() }
        let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 2000 : 2000
        try await Task.detached {
            try await withWorkerSupervisor(configuration: configuration) { supervisor in
                var worker = BackgroundWorker(name: "true", entryPoint: .executable("/bin/true"))
                worker.restartInterval = .never
                var startup: Duration = .zero
                var registering: Duration = .zero
                var registered: [Duration] = []
                var started: [Duration] = []
                for _ in 0..<count {
                    let start = ContinuousClock.now
                    let handle = try await supervisor.register(worker)
                    let middle = ContinuousClock.now
                    _ = try? await handle.waitForStartup()
                    let end = ContinuousClock.now
                    startup += start.duration(to: end)
                    registering += start.duration(to: middle)
                    registered.append(start.duration(to: middle))
                    started.append(middle.duration(to: end))
                    _ = try await handle.waitForShutdown()
                }
                registered.sort()
                started.sort()
                var sleeper = worker
                sleeper.entryPoint = .executable("/bin/sleep", arguments: ["100"])
                let sleeping = try await supervisor.register(sleeper)
                _ = try await sleeping.waitForStartup()
                var hops: [Duration] = []
                for _ in 0..<count {
                    let start = ContinuousClock.now
                    _ = try await sleeping.waitForStartup()
                    hops.append(start.duration(to: .now))
                }
                var statusHops: [Duration] = []
                for _ in 0..<count {
                    let start = ContinuousClock.now
                    _ = await sleeping.status
                    statusHops.append(start.duration(to: .now))
                }
                statusHops.sort()
                print("status p50 \(statusHops[count / 2])")
                hops.sort()
                print("waitForStartup of a running worker p50 \(hops[count / 2]) p90 \(hops[count * 9 / 10])")
                print("register→waitForStartup mean \(startup / count); register mean \(registering / count), p50 \(registered[count / 2]); then waitForStartup p50 \(started[count / 2])")
            }
        }.value
    }
}
