import BackgroundWorkerRuntime
import BackgroundWorkers
import CWorkerSupport
import TestSupport
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// A supervisor process for tests that need a process of their own: one they kill, one whose process-wide
/// state (descriptor limits, signal dispositions) they change, or one whose descriptors and memory they count.
///
/// Usage: FixtureSupervisor WORKER-EXECUTABLE N   (N workers in `serve` mode; prints each pid, then waits; with
///                                                 FIXTURE_FORK_SERVER, its built-ins forked, after a line with
///                                                 the fork servers' pids)
///        FixtureSupervisor builtin               (runs its built-in worker "echo" and reports how it went)
///        FixtureSupervisor emfile-storm N        (interval 0 while no descriptor is free: N spawn attempts)
///        FixtureSupervisor notify-self           (a worker whose notify pid is this process)
///        FixtureSupervisor lifetimes N EVERY     (N supervisors one after another, a worker each)
///        FixtureSupervisor emfile-retry          (a transient spawn error is retried; a never-restart worker stops)
///        FixtureSupervisor cycles N              (N register/exit cycles: descriptors, zombies, slots)
///        FixtureSupervisor fork-server-full      (a fork server's spare arriving while one descriptor is free)
///        FixtureSupervisor fork-server-restart-full
///                                                (the fork server killed while one descriptor is free)
///        FixtureSupervisor orphans kill|exit [every-kind]
///                                                (workers that know nothing of the contract, and with every-kind
///                                                 every other kind too; prints their pids, then waits, or exits)
@main
struct FixtureSupervisor {
    static func main() async throws {
        // A built-in worker: ready only if its registration arrived, then serves until SIGTERM. With
        // FIXTURE_NO_BUILTINS set, this binary plays one whose main forgot to hand over.
        if getenv("FIXTURE_NO_BUILTINS") == nil {
            await Self.runBuiltins()
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "builtin-unhandled":
            try await Self.builtinUnhandled()
        case "--bgworker-builtin":
            emit("this is the supervisor's own main")
            exit(0)
        default:
            try await Self.dispatch(arguments)
        }
    }

    /// A registration of this binary's built-in "echo" (ready only with main argument 9), never restarted.
    static func echoWorker(_ name: String) -> BackgroundWorker {
        var worker = BackgroundWorker(name: name, entryPoint: .builtin("echo"))
        worker.mainArgument = 9
        worker.reportsReadiness = true
        worker.restartInterval = .never
        return worker
    }

    static func runBuiltins() async {
        await BuiltinWorkers.runIfRequested([
            "done": { _ in },  // exits 0 at once: the built-in /bin/true
            "echo": { worker in
                guard worker.identity.mainArgument == 9 else { throw CancellationError() }
                try worker.reportReady()
                for await _ in worker.reloads {}
                try Task.checkCancellation()
            }
        ])
    }

    static func dispatch(_ arguments: [String]) async throws {
        switch arguments.first {
        case "builtin":
            try await Self.runBuiltin()
        case "emfile-storm":
            try await Self.emfileStorm(attempts: Int(arguments.dropFirst().first ?? "") ?? 5000)
        case "notify-self":
            try await Self.notifySelf()
        case "emfile-retry":
            try await Self.emfileRetry()
        case "orphans":
            try await Self.orphans(exitAtOnce: arguments.dropFirst().first == "exit", arguments: arguments)
        case "fork-server-full":
            try await Self.forkServerDescriptorsFull()
        case "fork-server-restart-full":
            try await Self.forkServerRestartFull()
        case "cycles":
            try await Self.cycles(arguments.count > 1 ? Int(arguments[1]) ?? 1000 : 1000)
        case "lifetimes":
            let count = arguments.count > 1 ? Int(arguments[1]) ?? 100 : 100
            let every = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10
            try await Self.lifetimes(count, every: every)
        default:
            guard arguments.count == 2, let count = Int(arguments[1]) else {
                emit("usage: FixtureSupervisor WORKER-EXECUTABLE N | builtin | emfile-storm N | notify-self | lifetimes N EVERY")
                exit(64)
            }
            try await Self.serve(arguments[0], count: count)
        }
    }

    /// A fork server of this binary, driven through the C API as the supervisor drives it: a spare whose two
    /// descriptors arrive while only one is free is reported as EMFILE and ended (sent SIGKILL, reaped here), and
    /// the server serves the next request. Prints what it saw.
    static func forkServerDescriptorsFull() async throws {
        var pair: [Int32] = [-1, -1]
        guard cws_fork_server_socketpair(&pair) == 0 else { fail("socketpair") }
        let loop = try UVEventLoop(name: "fork-server-full")
        var options = UVSpawnOptions(
            executable: CommandLine.arguments[0],
            arguments: [CWS_FORK_SERVER_MARKER, "3"],
            detached: true,
            descriptors: [1: 1, 2: 2, 3: pair[1]]
        )
        options.environment = ["PATH": "/usr/bin:/bin"]
        let spawnOptions = options
        let server = try await loop.submit { try loop.spawn(spawnOptions) }
        close(pair[1])
        var serverPID: pid_t = 0
        var threads: Int32 = 0
        var error: Int32 = 0
        guard cws_fork_server_hello(pair[0], 5000, &serverPID, &threads, &error) == 0, error == 0 else { fail("hello") }
        // A spare asked for; its answer waited for (readable), then read with one descriptor free of the two.
        guard cws_fork_server_request_spare(pair[0], 1, nil) == 0 else { fail("request") }
        var entry = pollfd(fd: pair[0], events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 5000) == 1 else { fail("no answer") }
        var id: UInt64 = 0
        var spare: pid_t = -1
        var pidfd: Int32 = -1
        var socket: Int32 = -1
        let full = await withOneFreeDescriptor {
            cws_fork_server_read_spare(pair[0], 0, &id, &spare, &pidfd, &socket, &threads)
        }
        var status: Int32 = 0
        let reaped = spare > 0 ? waitpid(spare, &status, 0) : -1
        let ended = reaped == spare && (status & 0x7f) == SIGKILL ? "killed" : "not killed (\(status))"
        emit("full: \(full == EMFILE ? "EMFILE" : "\(full)"); spare \(spare > 0 ? ended : "not named"); descriptors \(pidfd) \(socket)")
        // Room again: the same server makes the next spare.
        guard cws_fork_server_request_spare(pair[0], 2, nil) == 0 else { fail("second request") }
        let next = cws_fork_server_read_spare(pair[0], 5000, &id, &spare, &pidfd, &socket, &threads)
        emit("next: \(next == 0 ? "a spare" : "\(next)") from request \(id)")
        if next == 0 {
            close(socket)  // the spare ends without a request
            _ = waitpid(spare, &status, 0)
            close(pidfd)
        }
        close(pair[0])  // the server ends
        emit("server: \(try await server.waitForExit())")
        try await loop.shutdown()
    }

    /// The fork server killed while one descriptor is free, so that starting it again (a socket pair: two) fails:
    /// it is started again once descriptors are free, not given up. Prints what it saw.
    static func forkServerRestartFull() async throws {
        let log = LogCollector()
        var configuration = WorkerSupervisor.Configuration.fixture()
        configuration.forkServer = true  // this binary's built-ins
        configuration.logger = log.logger
        try await withWorkerSupervisor(configuration: configuration) { supervisor in
            guard await supervisor.waitForForkServer(), let first = await supervisor.forkServerPID else { fail("no fork server") }
            // Until the supervisor has tried to start it again, and failed: the two messages naming the fork server
            // after the kill are its exit, then how the start that follows went.
            let before = log.lines.count { $0.contains("fork server") }
            await withOneFreeDescriptor {
                kill(first, SIGKILL)
                await log.waitFor("fork server", count: before + 2)
            }
            emit("while full: \(log.lines.filter { $0.contains("fork server") }[before + 1])")
            let ready = await supervisor.waitForForkServer()
            let second = await supervisor.forkServerPID
            emit("after: ready \(ready), a new server \(second != nil && second != first)")
            let handle = try await supervisor.register(Self.echoWorker("echo"))
            _ = try await handle.waitForReady()
            emit("forked \(await supervisor.isForked(handle))")
            await handle.terminate()
            _ = try await handle.waitForShutdown()
        }
    }

    static func fail(_ what: String) -> Never {
        emit("failed: \(what) (errno \(errno))")
        exit(1)
    }

    static func serve(_ executable: String, count: Int) async throws {
        var configuration = WorkerSupervisor.Configuration.fixture()
        // With FIXTURE_FORK_SERVER, the workers are the executable's built-ins, forked.
        configuration.builtinExecutable = executable
        let forking = configuration.forkServer
        try await withWorkerSupervisor(configuration: configuration) { supervisor in
            if forking {
                guard await supervisor.waitForForkServer() else {
                    emit("no fork server")
                    exit(1)
                }
                emit("servers \(await supervisor.forkServerPID ?? 0) \(await supervisor.libraryForkServerPID ?? 0)")
            }
            for index in 0..<count {
                let entryPoint: BackgroundWorker.EntryPoint = forking ? .builtin("serve") : .executable(executable, arguments: ["serve"])
                var worker = BackgroundWorker(name: "fixture-\(index)", entryPoint: entryPoint)
                worker.reportsReadiness = true
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                emit("\(try await handle.waitForReady())")
            }
            emit("all ready")
            // Run until the test kills this process: a stream that never yields nor finishes.
            let (forever, continuation) = AsyncStream<Void>.makeStream()
            for await _ in forever {}
            continuation.finish()  // never reached; keeps the continuation (and so the stream) alive
        }
    }
}

extension FixtureSupervisor {
    static func runBuiltin() async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            if supervisor.configuration.forkServer {
                emit("fork server ready \(await supervisor.waitForForkServer()) pid \(await supervisor.forkServerPID ?? 0)")
            }
            let handle = try await supervisor.register(Self.echoWorker("echo-builtin"))
            let pid = try await handle.waitForReady()
            emit("builtin ready \(pid)")
            if supervisor.configuration.forkServer { emit("forked \(await supervisor.isForked(handle))") }
            await handle.terminate()
            _ = try await handle.waitForShutdown()
            emit("\(await handle.detail)")
            var unknown = Self.echoWorker("echo-builtin")
            unknown.entryPoint = .builtin("no-such-builtin")
            let missing = try await supervisor.register(unknown)
            _ = try await missing.waitForShutdown()
            emit("\(await missing.detail)")
        }
    }

    /// Restart interval 0 while this process cannot open another descriptor: every spawn fails with EMFILE and
    /// is retried at once. Prints how many attempts it saw, then lifts the limit.
    static func emfileStorm(attempts: Int) async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            let events = await supervisor.events()
            var worker = BackgroundWorker(name: "storm", entryPoint: .executable("/bin/true"))
            worker.restartInterval = .seconds(0)
            worker.restartThrottle = nil  // PostgreSQL's rule exactly: retried at once, every time
            worker.reportsReadiness = true  // its readiness pipe needs two descriptors; one is free
            let (handle, failures) = try await withOneFreeDescriptor {
                let handle = try await supervisor.register(worker)
                var failures = 0
                for await event in events where event.handle == handle {
                    if case .spawnFailed = event.kind { failures += 1 }
                    if failures >= attempts { break }
                }
                return (handle, failures)
            }
            emit("attempts \(failures)")
            await handle.terminate()
        }
    }

    /// Registers two workers while no descriptor is free: the restartable one is retried after its interval and
    /// starts once descriptors are free again; the never-restart one stops with the error (PG-10).
    static func emfileRetry() async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            var retried = BackgroundWorker(name: "retried", entryPoint: .executable("/bin/sh", arguments: ["-c", "echo READY=1 >&4; exec sleep 1000"]))
            retried.reportsReadiness = true  // its readiness pipe needs two descriptors; one is free
            retried.restartInterval = .seconds(1)
            var once = retried
            once.name = "once"
            once.restartInterval = .never
            let (retriedHandle, onceHandle) = try await withOneFreeDescriptor {
                (try await supervisor.register(retried), try await supervisor.register(once))
            }
            emit("retried: \(await retriedHandle.status); \(await retriedHandle.detail)")
            emit("once: \(await onceHandle.status); \(await onceHandle.detail)")
            _ = try await retriedHandle.waitForReady()
            emit("retried: ready")
        }
    }

    /// Register/exit cycles, 16 at a time, with and without a readiness pipe: prints this process's open
    /// descriptors before and after, the zombies among the workers, and the slots still in use.
    static func cycles(_ count: Int) async throws {
        try await withWorkerSupervisor(configuration: { var c = WorkerSupervisor.Configuration.fixture(); c.maxWorkerProcesses = 16; return c }()) { supervisor in
            // A first cycle creates what libuv creates once per loop (the /dev/null it reserves for EMFILE).
            // With FIXTURE_FORK_SERVER, a built-in that exits 0 at once, forked: a spare per cycle as well.
            let entryPoint: BackgroundWorker.EntryPoint = getenv("FIXTURE_FORK_SERVER") != nil ? .builtin("done") : .executable("/bin/true")
            if getenv("FIXTURE_FORK_SERVER") != nil, await !supervisor.waitForForkServer() {
                emit("no fork server")
                exit(1)
            }
            var warmUp = BackgroundWorker(name: "warm-up", entryPoint: entryPoint)
            warmUp.reportsReadiness = true
            _ = try await supervisor.register(warmUp).waitForShutdown()
            let before = openDescriptors()
            var pids: [Int32] = []
            var done = 0
            var forked = 0
            while done < count {
                var handles: [BackgroundWorkerHandle] = []
                for index in 0..<min(16, count - done) {
                    var worker = BackgroundWorker(name: "cycle-\(done + index)", entryPoint: entryPoint)
                    worker.reportsReadiness = index % 2 == 0  // half of them with a readiness pipe
                    let handle = try await supervisor.register(worker)
                    if await supervisor.isForked(handle) { forked += 1 }  // asked before it exits, mostly
                    handles.append(handle)
                }
                for handle in handles {
                    if let pid = try? await handle.waitForStartup() { pids.append(pid) }
                    _ = try await handle.waitForShutdown()
                    if case .unregistered(.completed, .exited(0)) = await handle.detail { done += 1 }
                }
            }
            let zombies = pids.filter { pid in
                guard let file = fopen("/proc/\(pid)/stat", "re") else { return false }
                defer { fclose(file) }
                var buffer = [CChar](repeating: 0, count: 512)
                guard fgets(&buffer, 512, file) != nil else { return false }
                let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                return line.split(separator: ")").last?.split(separator: " ").first == "Z"
            }
            emit("completed \(done) descriptors \(before) \(openDescriptors()) zombies \(zombies.count) slots \(await supervisor.slotsInUse) forked \(forked)")
        }
    }

    /// Workers that know nothing of the worker contract (a plain program, a shell script with a child of its own in
    /// its group, a runtime worker): prints every pid to watch, then waits to be killed, or calls `exit(0)`
    /// without a shutdown.
    static func orphans(exitAtOnce: Bool, arguments: [String]) async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            var sleeper = BackgroundWorker(name: "sleeper", entryPoint: .executable("/bin/sleep", arguments: ["1000"]))
            sleeper.restartInterval = .never
            let sleeperPid = try await supervisor.register(sleeper).waitForStartup()
            var shell = BackgroundWorker(
                name: "shell",
                entryPoint: .executable("/bin/sh", arguments: ["-c", "sleep 1000 & echo \"ERROR=$!\" >&4; echo READY=1 >&4; wait"])
            )
            shell.reportsReadiness = true
            shell.restartInterval = .never
            let shellHandle = try await supervisor.register(shell)
            let shellPid = try await shellHandle.waitForReady()
            emit("\(sleeperPid)")
            emit("\(shellPid)")
            emit(await shellHandle.lastReportedError ?? "no child pid")
            if arguments.contains("every-kind") {
                // The other kinds: a Swift worker on the runtime, a built-in, a library entry point, Python.
                let directory = String(CommandLine.arguments[0].split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
                var kinds: [BackgroundWorker] = [
                    BackgroundWorker(name: "swift", entryPoint: .executable(directory + "/swift-worker", arguments: ["serve"])),
                    BackgroundWorker(name: "builtin", entryPoint: .builtin("echo")),
                    BackgroundWorker(name: "library", entryPoint: .library("libExampleLibraryWorker.so", function: "library_worker_main")),
                ]
                if access("/usr/bin/python3", X_OK) == 0 {
                    kinds.append(BackgroundWorker(name: "python", entryPoint: .executable("/usr/bin/python3", arguments: [directory + "/../../../Examples/workers/example_worker.py"])))
                }
                for var worker in kinds {
                    worker.reportsReadiness = true
                    worker.restartInterval = .never
                    worker.mainArgument = 9  // the built-in checks it
                    worker.extra = Array("lib".utf8)  // the library worker checks it
                    emit("\(try await supervisor.register(worker).waitForReady())")
                }
            }
            emit("all ready")
            if exitAtOnce { exit(0) }
            let (forever, continuation) = AsyncStream<Void>.makeStream()
            for await _ in forever {}
            continuation.finish()
        }
    }

    /// A built-in worker in a binary whose main does not hand over: it must be reported, not restarted.
    static func builtinUnhandled() async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            var worker = BackgroundWorker(name: "forgotten", entryPoint: .builtin("echo"))
            worker.restartInterval = .seconds(0)
            let handle = try await supervisor.register(worker)
            _ = try await handle.waitForShutdown()
            emit("\(await handle.detail)")
        }
    }

    /// A worker whose notify pid is this very process, which watches no signal of its own.
    static func notifySelf() async throws {
        try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
            var worker = BackgroundWorker(name: "notifies-me", entryPoint: .executable("/bin/sleep", arguments: ["1000"]))
            worker.notifyPID = getpid()
            worker.restartInterval = .never
            let handle = try await supervisor.register(worker)
            _ = try await handle.waitForStartup()
            emit("started")
            await handle.terminate()
            _ = try await handle.waitForShutdown()
            emit("survived")
        }
    }

    /// Supervisors made and stopped one after another, a worker each: prints this process's open descriptors
    /// and resident memory every `every` lifetimes.
    static func lifetimes(_ count: Int, every: Int) async throws {
        for index in 1...count {
            try await withWorkerSupervisor(configuration: .fixture()) { supervisor in
                let handle = try await supervisor.register(BackgroundWorker(name: "once", entryPoint: .executable("/bin/true")))
                _ = try await handle.waitForShutdown()
            }
            if index % every == 0 {
                emit("lifetimes \(index) descriptors \(openDescriptors()) rss \(residentKiB())")
            }
        }
    }
}

extension WorkerSupervisor.Configuration {
    /// The defaults, with the spawn strategy the test asked for in FIXTURE_SPAWN_STRATEGY (`libuv`,
    /// `posixSpawn`; anything else: automatic).
    static func fixture() -> Self {
        var configuration = Self()
        switch getenv("FIXTURE_SPAWN_STRATEGY").map({ String(cString: $0) }) {
        case "libuv": configuration.spawnStrategy = .libuv
        case "posixSpawn": configuration.spawnStrategy = .posixSpawn
        default: break
        }
        configuration.forkServer = getenv("FIXTURE_FORK_SERVER") != nil
        return configuration
    }
}

/// Writes a line to standard output at once (a pipe would otherwise buffer it).
func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
