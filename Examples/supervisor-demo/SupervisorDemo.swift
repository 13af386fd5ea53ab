import BackgroundWorkerRuntime
import BackgroundWorkers
import Logging
import Synchronization
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The README's main job: a WorkerSupervisor running a built-in set of workers that shows the bgworker rules
/// at work (start, readiness, a crash and the crash reset, restarts with backoff, a worker that is done), then
/// a clean fast shutdown, on Ctrl-C or after `--seconds N` (default 8).
@main
struct SupervisorDemo {
    static func main() async throws {
        // When the supervisor re-executes this binary for its built-in "counter" worker, run that instead.
        await BuiltinWorkers.runIfRequested(["counter": CounterWorker.run])
        let seconds = Self.seconds(from: CommandLine.arguments) ?? 8
        var configuration = WorkerSupervisor.Configuration()
        configuration.maxWorkerProcesses = 8
        configuration.logger = Logger(label: "supervisor-demo") { _ in SwiftLogNoOpLogHandler() }

        try await withWorkerSupervisor(configuration: configuration) { supervisor in
            let events = await supervisor.events()
            let printer = Task {
                for await event in events { say(Self.describe(event)) }
            }
            for worker in Self.defaultWorkers() {
                _ = try await supervisor.register(worker)
            }
            CounterWorker.writeInterval(milliseconds: 1000)
            let counterHandle = try await supervisor.register(CounterWorker.registration())
            say("supervisor running with \(await supervisor.slotsInUse) workers; Ctrl-C or \(seconds) s stops it")

            // worker_spi's reload: after a while, a new interval for the counter, then SIGHUP.
            let reloader = Task {
                try await Task.sleep(for: .milliseconds(2500))
                CounterWorker.writeInterval(milliseconds: 250)
                if case .started(let pid) = await counterHandle.status {
                    say("demo: new interval 250 ms for the counter, SIGHUP to pid \(pid)")
                    kill(pid, SIGHUP)
                }
            }

            let interrupts = try await supervisor.loop.signals(.interrupt)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in interrupts { return }
                }
                group.addTask {
                    try? await Task.sleep(for: .seconds(seconds))
                }
                await group.next()
                group.cancelAll()
            }
            reloader.cancel()
            say("fast shutdown: SIGTERM to every worker, SIGKILL after its grace period")
            await supervisor.shutdown(.fast)
            _ = await printer.result
        }
        say("every worker reaped; supervisor stopped cleanly")
    }

    static func defaultWorkers() -> [BackgroundWorker] {
        func shell(_ name: String, _ script: String) -> BackgroundWorker {
            var worker = BackgroundWorker(name: name, entryPoint: .executable("/bin/sh", arguments: ["-c", script]))
            worker.stopGracePeriod = .seconds(2)
            return worker
        }
        // Reports readiness, then works until told to stop.
        var steady = shell("steady", "echo READY=1 >&4; while :; do sleep 1; done")
        steady.reportsReadiness = true
        // Shares memory with the supervisor: a crash of a peer resets it too.
        var sharedPeer = shell("shared-peer", "echo READY=1 >&4; while :; do sleep 1; done")
        sharedPeer.flags = [.sharedMemoryAccess]
        sharedPeer.restartInterval = .seconds(30)
        sharedPeer.reportsReadiness = true
        // Crashes (SIGSEGV) after 1.5 s: every shared-memory worker is reset and comes back at once.
        var crasher = shell("crasher", "sleep 1.5; kill -SEGV $$")
        crasher.flags = [.sharedMemoryAccess]
        crasher.restartInterval = .seconds(1)
        crasher.restartBudget = .init(maxRestarts: 2, window: .seconds(60))
        // Fails (exit 1) at once: restarted with exponential backoff, 0.25 s, 0.5 s, 1 s, 2 s.
        var flaky = shell("flaky", "exit 1")
        flaky.restartInterval = .seconds(0)
        flaky.restartBackoff = .init(initial: .milliseconds(250), multiplier: 2, maximum: .seconds(2), jitter: 0)
        // Does its job and exits 0: unregistered, never restarted.
        let oneShot = shell("one-shot", "sleep 0.5; exit 0")
        return [steady, sharedPeer, crasher, flaky, oneShot]
    }

    static func describe(_ event: WorkerEvent) -> String {
        let name = event.name + String(repeating: " ", count: max(0, 12 - event.name.count))
        switch event.kind {
        case .registered: return "  \(name) registered in slot \(event.handle.slot)"
        case .started(let pid): return "  \(name) started, pid \(pid)"
        case .ready(let pid): return "  \(name) ready, pid \(pid)"
        case .exited(let pid, let status): return "  \(name) pid \(pid) \(status)"
        case .spawnFailed(let error): return "  \(name) could not start: \(error)"
        case .restartScheduled(let after): return "  \(name) restart in \(after)"
        case .gaveUp: return "  \(name) gave up: restart budget spent"
        case .unregistered(let reason): return "  \(name) unregistered: \(reason)"
        case .crashReset: return "  \(name) crashed: resetting every shared-memory worker"
        case .reportedError(let text): return "  \(name) reports: \(text)"
        }
    }

    static func seconds(from arguments: [String]) -> Int? {
        guard let index = arguments.firstIndex(of: "--seconds"), index + 1 < arguments.count else { return nil }
        return Int(arguments[index + 1])
    }
}

/// PostgreSQL's `worker_spi`, the Swift way: a restartable built-in worker that wakes every N milliseconds,
/// counts its wake-ups in shared memory, and re-reads N (from a file) on SIGHUP.
enum CounterWorker {
    static let intervalFile = "/tmp/bgworker-demo-counter-interval"

    static func registration() -> BackgroundWorker {
        var worker = BackgroundWorker(name: "counter", entryPoint: .builtin("counter"))
        worker.flags = [.sharedMemoryAccess]  // its counter lives in the supervisor's segment
        worker.restartInterval = .seconds(1)
        worker.reportsReadiness = true
        worker.stopGracePeriod = .seconds(2)
        return worker
    }

    static func writeInterval(milliseconds: Int) {
        guard let file = fopen(Self.intervalFile, "we") else { return }
        fputs("\(milliseconds)\n", file)
        fclose(file)
    }

    static func readInterval() -> Int {
        guard let file = fopen(Self.intervalFile, "re") else { return 1000 }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 32)
        guard fgets(&buffer, 32, file) != nil else { return 1000 }
        let text = String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return max(10, Int(text) ?? 1000)
    }

    @Sendable static func run(_ worker: WorkerContext) async throws {
        let counter = try worker.sharedMemory()
        var interval = Self.readInterval()
        try worker.reportReady()
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Reloads arrive on their own task; the ticking loop picks up the new interval.
            let reloaded = Reloaded()
            group.addTask {
                for await _ in worker.reloads { reloaded.set() }
            }
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(interval))
                let ticks = counter.load(fromByteOffset: 0, as: UInt64.self) + 1
                counter.storeBytes(of: ticks, toByteOffset: 0, as: UInt64.self)
                if reloaded.take() {
                    interval = Self.readInterval()
                    say("  counter     reloaded: interval \(interval) ms")
                }
                say("  counter     tick \(ticks) (every \(interval) ms)")
            }
            group.cancelAll()
        }
    }
}

/// A flag set by the reload task and taken by the ticking loop.
final class Reloaded: Sendable {
    private let flag = Mutex(false)

    func set() { self.flag.withLock { $0 = true } }

    func take() -> Bool {
        self.flag.withLock { flag in
            defer { flag = false }
            return flag
        }
    }
}

/// Writes a line to standard output at once, even into a pipe or a file, so that the demo's story reads in
/// order as it happens: the counter worker, a re-execution of this binary, shares the same standard output, and
/// `print` would hold its lines in a buffer until it exits.
func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
