@testable import BackgroundWorkers
import CWorkerSupport
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("The Swift worker runtime (issue 4, item 2)")
    struct RuntimeTests {
        /// The `swift-worker` example, built beside this test binary.
        static var workerPath: String {
            let me = CommandLine.arguments[0]
            let directory = me.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            return directory + "/swift-worker"
        }

        /// The contract's variables for a worker named `name` with readiness, as a supervisor would set them, for
        /// tests that play the supervisor by hand.
        static func contractEnvironment(_ name: String) -> [String: String] {
            let identity = WorkerProcessContract.Identity(
                worker: BackgroundWorker(name: name, entryPoint: .executable(Self.workerPath)),
                slot: 0,
                generation: 1,
                supervisorPID: getpid(),
                reportsReadiness: true
            )
            return identity.environment.merging(["PATH": "/usr/bin:/bin"]) { contract, _ in contract }
        }

        /// How a test's Swift workers start (issue 13: the runtime cannot tell the difference).
        enum Start: String, CaseIterable, Sendable {
            /// The `swift-worker` executable, exec'd.
            case exec
            /// Built-ins of `swift-worker` (its mode is the built-in's name), forked by a fork server of it.
            case forkServer
        }

        static let starts = Start.allCases

        static func swiftWorker(_ name: String, _ mode: String, _ start: Start = .exec) -> BackgroundWorker {
            let entryPoint: BackgroundWorker.EntryPoint = start == .exec ? .executable(Self.workerPath, arguments: [mode]) : .builtin(mode)
            var worker = BackgroundWorker(name: name, entryPoint: entryPoint)
            worker.restartInterval = .never
            worker.reportsReadiness = true
            return worker
        }

        /// The configuration for `start`: `swift-worker`'s modes as the built-ins, forked by a fork server of it
        /// when forking.
        static func configure(_ configuration: inout WorkerSupervisor.Configuration, _ start: Start) {
            configuration.builtinExecutable = Self.workerPath
            configuration.forkServer = start == .forkServer
        }

        /// A supervisor whose Swift workers start as `start` says; when forking, the fork server is ready before
        /// `body` runs, and afterwards every worker `body` started was forked (none exec'd).
        static func withRuntimeSupervisor(_ start: Start, _ body: (WorkerSupervisor) async throws -> Void) async throws {
            try await withSupervisor(configure: { Self.configure(&$0, start) }) { supervisor in
                if start == .forkServer {
                    #expect(await supervisor.waitForForkServer())
                    #expect(await supervisor.libraryForkServerPID != nil)
                }
                try await body(supervisor)
                if start == .forkServer {
                    let counts = await supervisor.forkServedStarts
                    #expect(counts.forked > 0 && counts.execd == 0, "forked \(counts.forked), exec'd \(counts.execd)")
                }
            }
        }

        /// Runs the example worker in `mode` under a supervisor and expects it to exit 0 (done, unregistered): the
        /// test modes exit with another code when what they check fails.
        static func expectCompletes(_ name: String, _ mode: String, _ start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                let handle = try await supervisor.register(Self.swiftWorker(name, mode, start))
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.completed, lastExit: .exited(0)))
            }
        }

        @Test("returning exits 0 (unregistered); throwing exits 1 (restart policy applies)", arguments: Self.starts)
        func exitCodes(start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                let done = try await supervisor.register(Self.swiftWorker("returns", "return", start))
                #expect(try await done.waitForShutdown() == .stopped)
                #expect(await done.detail == .unregistered(.completed, lastExit: .exited(0)))
                let failed = try await supervisor.register(Self.swiftWorker("throws", "throw", start))
                #expect(try await failed.waitForShutdown() == .stopped)
                #expect(await failed.detail == .unregistered(.noRestart, lastExit: .exited(1)))
            }
        }

        @Test("cancel handlers run on SIGTERM; clean-ups run after the body ends, last registered first", arguments: Self.starts)
        func cancelHandlersAndCleanups(start: Start) async throws {
            let path = "/tmp/bgw-hooks-\(getpid())-\(start)"
            defer { unlink(path) }
            func contents() -> String {
                guard let file = fopen(path, "re") else { return "" }
                defer { fclose(file) }
                var buffer = [CChar](repeating: 0, count: 64)
                guard fgets(&buffer, 64, file) != nil else { return "" }
                return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            try await Self.withRuntimeSupervisor(start) { supervisor in
                // The file to write is the worker's extra bytes (a built-in has no arguments).
                var worker = Self.swiftWorker("hooks", "hooks", start)
                worker.extra = Array(path.utf8)
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
                await handle.terminate()
                _ = try await handle.waitForShutdown()
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))
                #expect(contents() == "CBA")
                unlink(path)
                var returning = Self.swiftWorker("hooks", "hooks-return", start)
                returning.extra = Array(path.utf8)
                let returned = try await supervisor.register(returning)
                _ = try await returned.waitForShutdown()
                #expect(await returned.detail == .unregistered(.completed, lastExit: .exited(0)))
                #expect(contents() == "BA")
            }
        }

        @Test("terminate: SIGTERM cancels the body, the worker exits 1 and is not restarted", arguments: Self.starts)
        func sigtermCancels(start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                var worker = Self.swiftWorker("serving", "serve", start)
                worker.restartInterval = .seconds(0)
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))
            }
        }

        @Test("SIGQUIT (immediate shutdown, crash reset) makes a Swift worker exit 2 at once", arguments: Self.starts)
        func sigquitExitsAtOnce(start: Start) async throws {
            var configuration = WorkerSupervisor.Configuration()
            Self.configure(&configuration, start)
            let supervisor = try WorkerSupervisor(configuration: configuration)
            let log = await EventLog(supervisor)
            let runner = Task { try await supervisor.run() }
            #expect(await supervisor.waitForForkServer() == (start == .forkServer))
            let handle = try await supervisor.register(Self.swiftWorker("quitter", "serve", start))
            let pid = try await handle.waitForReady()
            #expect(await supervisor.isForked(handle) == (start == .forkServer))
            let start = ContinuousClock.now
            await supervisor.shutdown(.immediate)
            try await runner.value
            #expect(log.kinds(of: "quitter").contains(.exited(pid: pid, status: .exited(2))))
            #expect(ContinuousClock.now - start < .seconds(4))  // not the 5 s SIGKILL fallback
        }

        @Test("SIGHUP arrives as a reload request", arguments: Self.starts)
        func sighupReloads(start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                let handle = try await supervisor.register(Self.swiftWorker("reloading", "exit-on-reload", start))
                let pid = try await handle.waitForReady()  // ready: its watchers are installed
                kill(pid, SIGHUP)
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.completed, lastExit: .exited(0)))
            }
        }

        @Test("a SIGHUP that came before the body first asked for reloads is not lost", arguments: Self.starts)
        func earlySighupIsKept(start: Start) async throws {
            // Exit 0: the body found the early request (3: it did not; 4: the SIGTERM was never seen).
            try await Self.expectCompletes("early", "early-reload", start)
        }

        @Test(
            "the body starts on the main thread, and a child task runs in parallel while the body is busy",
            .timeLimit(.minutes(1)),
            arguments: Self.starts
        )
        func bodyOnMainThreadChildrenInParallel(start: Start) async throws {
            // Exit 0: both met (3: the body was not on the main thread; 4: the child never ran beside it).
            try await Self.expectCompletes("parallel", "parallel", start)
        }

        @Test("MainActor work in a worker runs on the main thread and does not hang", .timeLimit(.minutes(1)), arguments: Self.starts)
        func mainActorRuns(start: Start) async throws {
            // Exit 0 (3 or 4: a MainActor job ran off the main thread).
            try await Self.expectCompletes("main-actor", "main-actor", start)
        }

        @Test(
            "supervisor death (end of file on descriptor 3) ends the worker with exit 1, promptly, even one stuck on the main thread",
            arguments: ["serve", "stuck"]
        )
        func supervisorDeath(mode: String) async throws {
            // Play the supervisor by hand: our own pipes as descriptors 3 and 4, and the contract's variables.
            let loop = try UVEventLoop(name: "fake-supervisor")
            let alive = try UVPipePair()
            let readiness = try UVPipePair()
            let environment = Self.contractEnvironment("orphan-to-be")
            var options = UVSpawnOptions(executable: Self.workerPath, arguments: [mode], environment: environment, detached: true)
            options.descriptors = [0: 0, 1: 1, 2: 2, 3: alive.readEnd, 4: readiness.writeEnd]
            let spawnOptions = options
            let worker = try await loop.submit { try loop.spawn(spawnOptions) }
            alive.closeReadEnd()
            readiness.closeWriteEnd()
            // The status lines up to READY=1 (NOTIFY=1 comes first: the runtime handles SIGUSR1).
            let ready: String = try await withCheckedThrowingContinuation { done in
                loop.execute {
                    var seen: [String] = []
                    var answered = false
                    do {
                        _ = try loop.readLines(from: readiness.readEnd) { line in
                            seen.append(line)
                            if line == "READY=1", !answered {
                                answered = true
                                done.resume(returning: seen.joined(separator: ","))
                            }
                        } onEnd: { _ in
                            if !answered { done.resume(returning: seen.joined(separator: ",")) }
                        }
                    } catch {
                        done.resume(throwing: error)
                    }
                }
            }
            #expect(ready == "NOTIFY=1,READY=1")
            let start = ContinuousClock.now
            alive.closeWriteEnd()  // the "supervisor" dies
            #expect(try await worker.waitForExit() == .exited(1))
            #expect(ContinuousClock.now - start < .seconds(1))  // promised: 100 ms; generous bound
            try await loop.shutdown()
        }

        @Test(
            "the runtime checks the contract's descriptors before it opens anything: a bad one exits 78 naming it",
            arguments: [("3", "closed"), ("-1", "open"), ("1", "open"), ("99999", "open"), ("3", "file")]
        )
        func badDescriptorsExit78(aliveVariable: String, descriptorThree: String) async throws {
            let loop = try UVEventLoop(name: "bad-descriptors")
            let output = try UVPipePair()
            let readiness = try UVPipePair()
            let alive = try UVPipePair()
            defer { readiness.close(); alive.close() }
            var environment = Self.contractEnvironment("misstarted")
            environment[WorkerProcessContract.Variable.aliveDescriptor] = aliveVariable
            let file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)  // a regular file, not a pipe
            defer { close(file) }
            var options = UVSpawnOptions(executable: Self.workerPath, arguments: ["serve"], environment: environment, detached: true)
            options.descriptors = [0: 0, 1: output.writeEnd, 2: output.writeEnd, 4: readiness.writeEnd]
            switch descriptorThree {
            case "open": options.descriptors[3] = alive.readEnd
            case "file": options.descriptors[3] = file
            default: break  // closed: the runtime's own first descriptor would get number 3
            }
            let spawnOptions = options
            let lines = Collector<String>()
            let worker = try await loop.submit { try loop.spawn(spawnOptions) }
            output.closeWriteEnd()
            let reader = try await loop.submit { try loop.readLines(from: output.readEnd) { lines.append($0) } onEnd: { _ in } }
            // Bounded: a worker that watches its own pipe as descriptor 3 never exits by itself.
            #expect(cws_wait_gone(worker.pid, 30_000) == 1, "the worker did not exit")
            if cws_wait_gone(worker.pid, 0) != 1 { _ = try await loop.submit { try worker.signalGroup(.kill) } }
            let status = try await worker.waitForExit()
            try await loop.submit { reader.drainAndClose() }
            try await loop.shutdown()
            let text = lines.all.joined(separator: " ")
            #expect(status == .exited(78), "\(text)")
            #expect(text.contains("BGW_ALIVE_FD is \(aliveVariable)"), "\(text)")
            #expect(text.contains("not started as the worker process contract says"), "\(text)")
        }

        @Test(
            "a supervisor killed with SIGKILL leaves no worker behind: each is gone within a second (forked: its fork servers and spares too)",
            arguments: Self.starts
        )
        func noOrphansAfterSupervisorKill(start: Start) async throws {
            let directory = Self.workerPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            let loop = try UVEventLoop(name: "kill-supervisor")
            let output = try UVPipePair()
            var environment = ["PATH": "/usr/bin:/bin"]
            if start == .forkServer { environment["FIXTURE_FORK_SERVER"] = "1" }
            var options = UVSpawnOptions(
                executable: directory + "/FixtureSupervisor",
                arguments: [Self.workerPath, "3"],
                environment: environment,
                detached: true
            )
            options.descriptors = [0: 0, 1: output.writeEnd, 2: 2]
            let spawnOptions = options
            let supervisor = try await loop.submit { try loop.spawn(spawnOptions) }
            output.closeWriteEnd()
            let lines = try await readLines(until: "all ready", on: loop, from: output.readEnd)
            let pids = lines.compactMap { Int32($0) }
            try #require(pids.count == 3)
            // Forked: the fork servers, and their spares (in a server's process group until they become workers).
            let servers = lines.first { $0.hasPrefix("servers ") }?.split(separator: " ").dropFirst().compactMap { Int32($0) } ?? []
            #expect(servers.count == (start == .forkServer ? 2 : 0) && !servers.contains(0), "\(lines)")
            // (The built-ins' server has a spare by now, all but certainly: asked for at the last start.)
            let serverGroups = servers.flatMap { processes(inGroup: $0) }
            if start == .forkServer { #expect(serverGroups.count >= 2, "servers and spares: \(serverGroups)") }
            #expect(try await loop.submit { try supervisor.signal(.kill) })
            #expect(try await supervisor.waitForExit() == .signaled(.kill))
            for pid in pids + serverGroups {
                #expect(cws_wait_gone(pid, 1000) == 1, "process \(pid) outlived its supervisor by more than a second")
            }
            try await loop.shutdown()
        }

        @Test("shared memory: flagged workers map the same segment, an unflagged one gets an error", arguments: Self.starts)
        func sharedMemory(start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                var writer = Self.swiftWorker("shm-writer", "shm-write", start)
                writer.flags = [.sharedMemoryAccess]
                writer.mainArgument = 0xfeed_f00d
                _ = try await supervisor.register(writer).waitForReady()
                var reader = Self.swiftWorker("shm-reader", "shm-read", start)
                reader.flags = [.sharedMemoryAccess]
                reader.mainArgument = 0xfeed_f00d
                _ = try await supervisor.register(reader).waitForReady()  // it read the writer's value
                _ = try await supervisor.register(Self.swiftWorker("shm-none", "shm-none", start)).waitForReady()
            }
        }

        @Test("SIGTERM while signals are blocked is held, then acted on at unblock", arguments: Self.starts)
        func blockedSignalsAreHeld(start: Start) async throws {
            try await Self.withRuntimeSupervisor(start) { supervisor in
                // The worker sends itself SIGTERM inside withSignalsBlocked and waits until the runtime saw it:
                // exit 3 if the body was cancelled while blocked, 4 if the runtime never saw it, 1 when held and
                // acted on at unblock.
                let handle = try await supervisor.register(Self.swiftWorker("blocker", "blocked", start))
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.noRestart, lastExit: .exited(1)))
            }
        }

        @Test("a library entry point: bgworker-host loads it, calls the function with the main argument; SIGTERM exits 1", arguments: Self.starts)
        func libraryEntryPoint(start: Start) async throws {
            // The supervisor looks up library names and bgworker-host beside its own executable: this test
            // binary, built beside both. Forked: by a fork server of bgworker-host, which loaded the library.
            try await Self.withRuntimeSupervisor(start) { supervisor in
                if start == .forkServer, let server = await supervisor.libraryForkServerPID {
                    // No spare made ahead of the first library worker (it would lack the library).
                    #expect(processes(inGroup: server) == [server])
                }
                var worker = BackgroundWorker(name: "library", entryPoint: .library("libExampleLibraryWorker.so", function: "library_worker_main"))
                worker.mainArgument = 77
                worker.extra = Array("lib".utf8)
                worker.reportsReadiness = true
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()  // the function saw BackgroundWorker.current, argument and extra
                #expect(await supervisor.isForked(handle) == (start == .forkServer))
                if start == .forkServer {
                    // Loaded once, in the server, before the spare that became this worker was forked.
                    let server = try #require(await supervisor.libraryForkServerPID)
                    #expect(mappedFiles(of: server).contains { $0.hasSuffix("/libExampleLibraryWorker.so") })
                }
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))

                // Without reportsReadiness too: a library entry point always gets the status descriptor.
                var missing = worker
                missing.reportsReadiness = false
                missing.entryPoint = .library("libExampleLibraryWorker.so", function: "no_such_function")
                let noFunction = try await supervisor.register(missing)
                #expect(try await noFunction.waitForShutdown() == .stopped)
                #expect(await noFunction.detail == .unregistered(.noRestart, lastExit: .exited(1)))
                // The status names both the library and the function.
                let reported = await noFunction.lastReportedError ?? ""
                #expect(reported.contains("libExampleLibraryWorker.so") && reported.contains("no_such_function"))

                // A library that does not exist is refused at registration, naming it.
                missing.entryPoint = .library("libNoSuchLibrary.so", function: "library_worker_main")
                let refused = await refusal(supervisor, missing)
                #expect(refused?.registrationError?.field == "entryPoint.library")
                #expect(refused?.message.contains("libNoSuchLibrary.so") == true)

                // One that exists but cannot be loaded: bgworker-host reports why.
                let garbage = "/tmp/libNotALibrary-\(getpid()).so"
                try #require(FileManagerLite.writeExecutable(garbage, "not an ELF file\n", mode: 0o644))
                defer { unlink(garbage) }
                missing.entryPoint = .library(garbage, function: "library_worker_main")
                let noLibrary = try await supervisor.register(missing)
                #expect(try await noLibrary.waitForShutdown() == .stopped)
                #expect(await noLibrary.detail == .unregistered(.noRestart, lastExit: .exited(1)))
                let unloadable = await noLibrary.lastReportedError ?? ""
                #expect(unloadable.contains("libNotALibrary") && unloadable.contains("library_worker_main"))
            }
        }

        @Test("a built-in entry point: the supervisor re-executes (or its fork server forks) its own binary, which runs the named closure", arguments: Self.starts)
        func builtinEntryPoint(start: Start) async throws {
            let directory = Self.workerPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            let loop = try UVEventLoop(name: "builtin-parent")
            let output = try UVPipePair()
            var environment = ["PATH": "/usr/bin:/bin"]
            if start == .forkServer { environment["FIXTURE_FORK_SERVER"] = "1" }
            var options = UVSpawnOptions(executable: directory + "/FixtureSupervisor", arguments: ["builtin"], environment: environment)
            options.descriptors = [0: 0, 1: output.writeEnd, 2: 2]
            var lines = try await readAllLines(loop, output, options)
            if start == .forkServer {
                // The fixture's async main hands over to BuiltinWorkers.runIfRequested: forked, it does the same.
                #expect(lines.first?.hasPrefix("fork server ready true pid ") == true, "\(lines)")
                #expect(lines.count > 2 && lines[2] == "forked true", "\(lines)")
                lines = lines.enumerated().filter { $0.offset != 0 && $0.offset != 2 }.map(\.element)
            }
            #expect(lines.count == 3)
            #expect(lines.first?.hasPrefix("builtin ready ") == true)
            #expect(lines.dropFirst().first == "unregistered: terminated (exited with code 1)")
            #expect(lines.last == "unregistered: exited and is never restarted (exited with code 1)")
            try await loop.shutdown()
        }

        @Test("outside a supervisor, the runtime says so and exits 78")
        func notStartedBySupervisor() async throws {
            let loop = try UVEventLoop(name: "plain-parent")
            let process = try await loop.spawnProcess(UVSpawnOptions(executable: Self.workerPath, environment: ["PATH": "/usr/bin:/bin"]))
            #expect(try await process.waitForExit() == .exited(78))
            try await loop.shutdown()
        }
    }
}
