@testable import BackgroundWorkers
import CWorkerSupport
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("The fork server: built-in workers forked, not exec'd (issue 13)")
    struct ForkServerTests {

        /// A supervisor whose built-ins are `swift-worker`'s modes, forked when `forking`.
        static func withBuiltinSupervisor(
            forking: Bool,
            strategy: UVSpawnStrategy = .automatic,
            _ body: (WorkerSupervisor) async throws -> Void
        ) async throws {
            try await withSupervisor(strategy: strategy, configure: { RuntimeTests.configure(&$0, forking ? .forkServer : .exec) }) { supervisor in
                #expect(await supervisor.waitForForkServer() == forking)
                try await body(supervisor)
            }
        }

        /// Expects the supervisor's built-in fork server to be given up, for a reason that contains `reason`.
        static func expectGivenUp(_ supervisor: WorkerSupervisor, because reason: String) async {
            #expect(await supervisor.waitForForkServer() == false)
            let state = await supervisor.forkServer?.state
            guard case .disabled(let given)? = state else {
                Issue.record("the fork server is \(String(describing: state))")
                return
            }
            #expect(given.contains(reason), "\(given)")
        }

        /// What a worker's process was given (swift-worker's `process-state`), as it reports it.
        static func processState(forking: Bool) async throws -> (state: String, supervisor: Int32) {
            var state = ""
            var supervisorPID: Int32 = 0
            try await Self.withBuiltinSupervisor(forking: forking) { supervisor in
                supervisorPID = getpid()
                var worker = BackgroundWorker(name: "state", entryPoint: .builtin("process-state"))
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                #expect(try await handle.waitForShutdown() == .stopped)
                state = await handle.lastReportedError ?? ""
                #expect(await supervisor.forkServedStarts.forked == (forking ? 1 : 0))
            }
            return (state, supervisorPID)
        }

        @Test("a forked worker gets exactly what an exec'd one gets: descriptors, signals, session, parent, arguments, environment")
        func sameProcessState() async throws {
            let execd = try await Self.processState(forking: false)
            let forked = try await Self.processState(forking: true)
            #expect(forked.state == execd.state)
            // And what that is: descriptors 0 to 4 of the contract (plus what the runtime opened itself), no
            // signal ignored, its own session and group, the supervisor as parent.
            #expect(execd.state.contains(" 3=pipe 4=pipe"), "\(execd.state)")
            let ignored = execd.state.split(separator: ";").first { $0.contains("SigIgn:") }.flatMap { part in
                part.split(separator: " ").last.flatMap { UInt64($0, radix: 16) }
            }
            #expect(ignored.map { $0 & 0x7fff_ffff } == 0, "a standard signal is ignored: \(execd.state)")  // 1...31
            #expect(execd.state.contains("session-leader true group-leader true parent-is-supervisor true"), "\(execd.state)")
            #expect(execd.state.contains("arguments state --bgworker-builtin process-state"), "\(execd.state)")
            #expect(execd.state.contains("command line state --bgworker-builtin process-state;"), "\(execd.state)")
            #expect(execd.state.contains("BGW_NAME") && !execd.state.contains("bgworker-fork-server"), "\(execd.state)")
        }

        @Test("built-in workers registered before run() are forked too: the fork server is started and greeted first")
        func staticWorkersForked() async throws {
            // Seen before: run() started the server and the static workers at once, so every static worker's
            // first start was exec'd (the server was still starting).
            var configuration = WorkerSupervisor.Configuration.testing(.automatic)
            RuntimeTests.configure(&configuration, .forkServer)
            let supervisor = try WorkerSupervisor(configuration: configuration)
            let worker = RuntimeTests.swiftWorker("static", "serve", .forkServer)
            let handle = try await supervisor.register(worker)
            let running = Task { try await supervisor.run() }
            _ = try await handle.waitForReady()
            #expect(await supervisor.isForked(handle))
            #expect(await supervisor.forkServedStarts == (forked: 1, execd: 0))
            await supervisor.shutdown(.fast)
            try await running.value
        }

        @Test("withWorkerSupervisor's body starts with the fork server ready: its first built-in is forked")
        func scopedSupervisorForksAtOnce() async throws {
            var configuration = WorkerSupervisor.Configuration.testing(.automatic)
            RuntimeTests.configure(&configuration, .forkServer)
            try await withWorkerSupervisor(configuration: configuration) { supervisor in
                let worker = RuntimeTests.swiftWorker("first", "serve", .forkServer)
                let handle = try await supervisor.register(worker)  // no waitForForkServer() first
                _ = try await handle.waitForReady()
                #expect(await supervisor.isForked(handle))
                await handle.terminate()
                _ = try await handle.waitForShutdown()
            }
        }

        @Test("a forked worker's command line, as ps shows it, is its own, also when longer than the server's")
        func commandLine() async throws {
            // Short names fit in the server's own argument strings (NUL-separated, as an exec lays them out:
            // sameProcessState); a long one runs on over the server's environment strings, space-separated.
            let name = "a-worker-named-at-length-beyond-the-fork-server-arguments-60"  // 60 bytes; the limit is 63
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                var worker = BackgroundWorker(name: name, entryPoint: .builtin("command-line"))
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                #expect(await supervisor.isForked(handle))
                #expect(try await handle.waitForShutdown() == .stopped)
                let state = await handle.lastReportedError ?? ""
                #expect(state == "command line \(name) --bgworker-builtin command-line", "\(state)")
            }
        }

        @Test(
            "the fork server has one thread, and is the supervisor's child; its workers are the supervisor's children, not its own, under both spawn strategies",
            arguments: [UVSpawnStrategy.posixSpawn, .libuv]
        )
        func oneThreadAndParentage(strategy: UVSpawnStrategy) async throws {
            // With libuv's strategy too, a forked worker is watched through its pidfd (libuv reaps only what it spawned).
            try await Self.withBuiltinSupervisor(forking: true, strategy: strategy) { supervisor in
                let server = try #require(await supervisor.forkServerPID)
                #expect(threads(of: server) == 1)
                #expect(procStat(server)?.parent == getpid())
                var worker = BackgroundWorker(name: "forked", entryPoint: .builtin("serve"))
                worker.reportsReadiness = true
                let handles = try await (0..<4).asyncMap { index in
                    var named = worker
                    named.name = "forked-\(index)"
                    return try await supervisor.register(named)
                }
                for handle in handles {
                    let pid = try await handle.waitForReady()
                    #expect(procStat(pid)?.parent == getpid())
                    #expect(await supervisor.isForked(handle))
                }
                // Forking did not start a thread in the server.
                #expect(threads(of: server) == 1)
                for handle in handles { await handle.terminate() }
                for handle in handles { #expect(try await handle.waitForShutdown() == .stopped) }
            }
        }

        @Test("the fork server killed: noticed at once and started again; no registration lost, the next ones forked again")
        func serverKilled() async throws {
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                let first = try #require(await supervisor.forkServerPID)
                var worker = BackgroundWorker(name: "before", entryPoint: .builtin("serve"))
                worker.reportsReadiness = true
                let before = try await supervisor.register(worker)
                let beforePID = try await before.waitForReady()
                kill(first, SIGKILL)
                // Registrations right after the kill: each starts, forked or exec'd, none lost.
                var during: [BackgroundWorkerHandle] = []
                for index in 0..<3 {
                    var named = worker
                    named.name = "during-\(index)"
                    during.append(try await supervisor.register(named))
                }
                for handle in during { _ = try await handle.waitForReady() }
                #expect(await supervisor.waitForForkServer())
                let second = try #require(await supervisor.forkServerPID)
                #expect(second != first)
                #expect(threads(of: second) == 1)
                // The guardian holds the new server's group and has forgotten the dead one's: that number may be
                // any process's now, and a guardian that still held it would kill that process's group when the
                // supervisor stops (seen: other tests' fork servers and workers killed).
                let held = await supervisor.guardedGroups
                #expect(held.contains(second) && !held.contains(first), "\(held)")
                worker.name = "after"
                let after = try await supervisor.register(worker)
                _ = try await after.waitForReady()
                #expect(await supervisor.isForked(after))
                // The worker forked by the dead server is untouched: still the supervisor's, still running.
                #expect(await before.status == .started(pid: beforePID))
                #expect(procStat(beforePID)?.parent == getpid())
                for handle in [before, after] + during { await handle.terminate() }
                for handle in [before, after] + during { _ = try await handle.waitForShutdown() }
            }
        }

        @Test(
            "a forked worker terminated at once, before it has made its process group, still gets SIGTERM and ends",
            .timeLimit(.minutes(1))
        )
        func terminatedAtOnce() async throws {
            // The worker makes its own session as its first steps after the fork, while the supervisor already
            // holds its pid; a SIGTERM to its group that comes before that finds no group. Seen lost: the worker
            // ran on until the grace period's SIGKILL, 10 s later.
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                let worker = RuntimeTests.swiftWorker("brief", "serve", .forkServer)
                for _ in 0..<200 {
                    let handle = try await supervisor.register(worker)
                    #expect(await supervisor.isForked(handle))
                    await handle.terminate()
                    #expect(try await handle.waitForShutdown() == .stopped)
                    // SIGTERM ended it (before or after the runtime took it over), not the grace period's SIGKILL.
                    let detail = await handle.detail
                    #expect(
                        detail == .unregistered(.terminated, lastExit: .exited(1))
                            || detail == .unregistered(.terminated, lastExit: .signaled(.terminate)),
                        "\(detail)"
                    )
                }
            }
        }

        @Test("a spare killed before it is used is reaped by the supervisor, and the next built-in is forked all the same")
        func spareKilled() async throws {
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                let spare = try #require(await supervisor.forkServerSparePID())
                // A spare is a copy of the server: one thread, and the supervisor's child.
                #expect(threads(of: spare) == 1)
                #expect(procStat(spare)?.parent == getpid())
                kill(spare, SIGKILL)
                // Until it is dead (WNOWAIT: reaping it is the supervisor's job, which its pidfd watcher may have
                // done already: ECHILD).
                var info = siginfo_t()
                let waited = waitid(P_PID, id_t(spare), &info, WEXITED | WNOWAIT)
                #expect(waited == 0 || errno == ECHILD)
                let worker = RuntimeTests.swiftWorker("after-the-spare", "serve", .forkServer)
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForReady()
                #expect(pid != spare)
                #expect(await supervisor.isForked(handle))
                #expect(procStat(spare) == nil, "the killed spare \(spare) was not reaped: \(String(describing: procStat(spare)))")
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
            }
        }

        @Test("a supervisor that stops ends its fork server's spare and reaps it")
        func spareEndsWithSupervisor() async throws {
            var spare: Int32 = 0
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                spare = try #require(await supervisor.forkServerSparePID())
                #expect(procStat(spare)?.parent == getpid())
            }
            #expect(spare > 0 && procStat(spare) == nil, "spare \(spare) is left: \(String(describing: procStat(spare)))")
        }

        @Test("the fork server's memory and descriptors stay flat over many forks; no zombie, nothing exec'd")
        func flatOverForks() async throws {
            // 500 in the suite; FORK_CYCLES=10000 for RELIABILITY.md's figure.
            let cycles = getenv("FORK_CYCLES").flatMap { Int(String(cString: $0)) } ?? 500
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                let server = try #require(await supervisor.forkServerPID)
                var worker = BackgroundWorker(name: "cycle", entryPoint: .builtin("return"))
                worker.restartInterval = .never
                // A first fork: what the server allocates once (its request buffer) is there from now on.
                _ = try await supervisor.register(worker).waitForShutdown()
                let first = (resident: residentKiB(of: server), descriptors: openDescriptors(of: server))
                var pids: [Int32] = []
                for index in 0..<cycles {
                    let handle = try await supervisor.register(worker)
                    if let pid = try? await handle.waitForStartup() { pids.append(pid) }
                    _ = try await handle.waitForShutdown()
                    #expect(await handle.detail == .unregistered(.completed, lastExit: .exited(0)))
                    if (index + 1) % max(1, cycles / 10) == 0 {
                        print("fork cycles \(index + 1): server resident \(residentKiB(of: server)) KiB, \(openDescriptors(of: server)) descriptors")
                    }
                }
                let last = (resident: residentKiB(of: server), descriptors: openDescriptors(of: server))
                #expect(await supervisor.forkServerPID == server)  // the same server all along
                #expect(last.descriptors == first.descriptors)
                #expect(last.resident - first.resident < 512, "server resident \(first.resident) → \(last.resident) KiB")
                #expect(zombieChildren(among: pids).isEmpty)
                let counts = await supervisor.forkServedStarts
                #expect(counts.forked == cycles + 1 && counts.execd == 0)
            }
        }

        @Test("a binary that is no fork server: given up at once with the reason, built-ins exec'd, nothing lost")
        func notAForkServer() async throws {
            try await withSupervisor(configure: { configuration in
                configuration.builtinExecutable = "/bin/true"
                configuration.forkServer = true
            }) { supervisor in
                await Self.expectGivenUp(supervisor, because: "'/bin/true' ended (exited with code 0) before it said hello")
                // A built-in of /bin/true: exec'd, runs its own main (exits 0 without handing over).
                var worker = BackgroundWorker(name: "not-handed-over", entryPoint: .builtin("anything"))
                worker.restartInterval = .seconds(1)
                let handle = try await supervisor.register(worker)
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await supervisor.forkServedStarts == (forked: 0, execd: 1))
            }
        }

        @Test(
            "a fork server built with another version of the protocol is given up at once, with the reason; built-ins exec'd",
            .timeLimit(.minutes(1))
        )
        func otherProtocolVersion() async throws {
            // A binary that answers as a fork server of protocol version 1 would: its hello, then nothing. Seen
            // before the fix: waitForForkServer() never returned (the hello deadline was cancelled on the first
            // reply, whatever it said).
            try await withTemporaryFolder { folder in
                let script = folder + "/old-fork-server"
                let hello = "BGWF\\001\\000\\000\\000" + String(repeating: "\\000", count: 24)
                #expect(FileManagerLite.writeExecutable(script, "#!/bin/sh\nprintf '\(hello)' >&3\nexec sleep 30\n"))
                try await withSupervisor(configure: { configuration in
                    configuration.builtinExecutable = script
                    configuration.forkServer = true
                }) { supervisor in
                    await Self.expectGivenUp(supervisor, because: "speaks another version of the fork server's protocol")
                }
            }
        }

        @Test("a spare whose descriptors arrive while the table is full: EMFILE, the spare ended and reaped, the server serves on")
        func spareWhileDescriptorsFull() async throws {
            // In a process of its own (FixtureSupervisor), which lowers its own descriptor limit. Before: EPROTO,
            // a malformed reply, which the supervisor takes for the server's fault and restarts it for.
            let (lines, status) = try await runFixture(["fork-server-full"])
            #expect(status == .exited(0), "\(lines)")
            #expect(lines.contains("full: EMFILE; spare killed; descriptors -1 -1"), "\(lines)")
            #expect(lines.contains("next: a spare from request 2"), "\(lines)")
            #expect(lines.contains("server: exited with code 0"), "\(lines)")
        }

        @Test("a fork server that cannot be started again for want of descriptors is started again once they are free, not given up")
        func restartWhileDescriptorsFull() async throws {
            // In a process of its own (FixtureSupervisor), which lowers its own descriptor limit. Before: given up
            // for good ("not using the fork server: cannot make its socket"), every built-in exec'd from then on.
            let (lines, status) = try await runFixture(["fork-server-restart-full"])
            #expect(status == .exited(0), "\(lines)")
            // Its socket pair or its spawn fails with EMFILE, depending on what the dead server's end freed.
            #expect(lines.contains { $0.hasPrefix("while full: cannot start the fork server now (") && $0.contains("trying again in 1.0 seconds") }, "\(lines)")
            #expect(lines.contains("after: ready true, a new server true"), "\(lines)")
            #expect(lines.contains("forked true"), "\(lines)")
        }

        @Test("a fork server that keeps dying is given up after five restarts a minute; built-ins are then exec'd")
        func serverGivenUp() async throws {
            try await Self.withBuiltinSupervisor(forking: true) { supervisor in
                for _ in 0...ForkServer.maxRestartsPerMinute {
                    guard let pid = await supervisor.forkServerPID else { break }
                    kill(pid, SIGKILL)
                    _ = await supervisor.waitUntilForkServerReplaced(pid)
                }
                #expect(await supervisor.waitForForkServer() == false)
                #expect(await supervisor.forkServerPID == nil)
                var worker = BackgroundWorker(name: "execd", entryPoint: .builtin("serve"))
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
                #expect(await supervisor.isForked(handle) == false)
                await handle.terminate()
                _ = try await handle.waitForShutdown()
            }
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
