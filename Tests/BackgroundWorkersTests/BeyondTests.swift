import BackgroundWorkers
import Logging
import MetricsTestKit
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("Contract, readiness, events, integration")
    struct BeyondTests {
        @Test("a worker receives its registration through the contract's variables (PG-27, MyBgworkerEntry's data)")
        func contractEnvironment() async throws {
            try await withSupervisor { supervisor in
                let check = #"""
                    [ "$BGW_NAME" = "contract ✓" ] && [ "$BGW_TYPE" = "checker" ] && [ "$BGW_SLOT" = 0 ] && \
                    [ "$BGW_GENERATION" = 1 ] && [ "$BGW_MAIN_ARG" = 18446744073709551615 ] && \
                    [ "$BGW_EXTRA" = "00ff10" ] && [ "$BGW_FLAGS" = 1 ] && [ "$BGW_SUPERVISOR_PID" = "\#(getpid())" ] && \
                    [ "$BGW_ALIVE_FD" = 3 ] && [ "$BGW_READY_FD" = 4 ] && [ "$EXTRA_VAR" = "from-entry" ] && \
                    [ "$0" = "contract ✓" ] || exit 3
                    echo READY=1 >&4; exec sleep 1000
                    """#
                var worker = BackgroundWorker(
                    name: "contract ✓",
                    entryPoint: .executable("/bin/sh", arguments: ["-c", check], environment: ["EXTRA_VAR": "from-entry"])
                )
                worker.type = "checker"
                worker.flags = [.sharedMemoryAccess]
                worker.mainArgument = .max
                worker.extra = [0x00, 0xff, 0x10]
                worker.restartInterval = .never
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForReady()
                #expect(await handle.detail == .running(pid: pid, ready: true))
            }
        }

        @Test("the Python example worker follows the contract: argument, readiness, SIGTERM → exit 1, --once → exit 0")
        func pythonExampleWorker() async throws {
            // Tests run from the package root.
            let script = "Examples/workers/example_worker.py"
            try await withSupervisor { supervisor in
                var worker = BackgroundWorker(
                    name: "python",
                    entryPoint: .executable("/usr/bin/env", arguments: ["python3", script, "--expect-main-arg", "42"])
                )
                worker.mainArgument = 42
                worker.flags = [.sharedMemoryAccess]
                worker.reportsReadiness = true
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))

                worker.mainArgument = 7  // not what it expects: it refuses to become ready (exit 3)
                worker.flags = []  // without shared memory, exit 3 is no crash reset: it just stops (never-restart)
                let wrong = try await supervisor.register(worker)
                await #expect(throws: SupervisorError.self) { _ = try await wrong.waitForReady() }
                #expect(await wrong.detail == .unregistered(.noRestart, lastExit: .exited(3)))

                var once = worker
                once.mainArgument = 42
                once.entryPoint = .executable("/usr/bin/env", arguments: ["python3", script, "--once"])
                let done = try await supervisor.register(once)
                #expect(try await done.waitForShutdown() == .stopped)
                #expect(await done.detail == .unregistered(.completed, lastExit: .exited(0)))
            }
        }

        @Test("the supervisor-alive pipe is descriptor 3 in every worker, open and empty while the supervisor lives")
        func alivePipeIsInherited() async throws {
            try await withSupervisor { supervisor in
                let probe = """
                    import os, fcntl, stat
                    fd = int(os.environ["BGW_ALIVE_FD"])
                    assert stat.S_ISFIFO(os.fstat(fd).st_mode)
                    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
                    try:
                        os.read(fd, 1)
                        raise SystemExit(3)   # data or end of file: the supervisor's end is not held
                    except BlockingIOError:
                        os.write(int(os.environ["BGW_READY_FD"]), b"READY=1\\n")
                    os.read(0, 1) if False else __import__("time").sleep(1000)
                    """
                var worker = BackgroundWorker(name: "alive", entryPoint: .executable("/usr/bin/env", arguments: ["python3", "-c", probe]))
                worker.restartInterval = .never
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
            }
        }

        @Test("waitForReady means the worker said READY=1; a worker without readiness is told to await startup")
        func readiness() async throws {
            try await withSupervisor { supervisor in
                let gate = try UVPipePair()
                defer { gate.close() }
                // Ready only once the test writes to the gate: readiness cannot be racy or implied by the spawn.
                var worker = shellWorker("gated", "read line < /proc/\(getpid())/fd/\(gate.readEnd); echo READY=1 >&4; exec sleep 1000")
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForStartup()
                #expect(await handle.detail == .running(pid: pid, ready: false))
                let ready = Task { try await handle.waitForReady() }
                _ = write(gate.writeEnd, "go\n", 3)
                #expect(try await ready.value == pid)

                let plain = try await supervisor.register(shellWorker("plain", Script.sleepForever))
                do {
                    _ = try await plain.waitForReady()
                    Issue.record("waitForReady succeeded without readiness")
                } catch let error as SupervisorError {
                    #expect(error.code == .notReportingReadiness)
                }
            }
        }

        @Test("the event sequence tells a worker's life in order")
        func events() async throws {
            try await withSupervisor { supervisor in
                let log = await EventLog(supervisor)
                var worker = shellWorker("eventful", Script.exit(1))
                worker.restartInterval = .seconds(0)
                worker.restartBudget = .init(maxRestarts: 1, window: .seconds(3600))
                let handle = try await supervisor.register(worker)
                _ = await log.first { $0.name == "eventful" && $0.kind == .gaveUp }
                await handle.terminate()
                _ = await log.first { event in
                    if case .unregistered = event.kind { return event.name == "eventful" }
                    return false
                }
                let kinds = log.kinds(of: "eventful").map { kind -> String in
                    switch kind {
                    case .registered: "registered"
                    case .started: "started"
                    case .exited(_, let status): "exited \(status)"
                    case .restartScheduled(let after): "restart after \(after)"
                    case .gaveUp: "gave up"
                    case .unregistered(let reason): "unregistered: \(reason)"
                    default: "\(kind)"
                    }
                }
                #expect(kinds == [
                    "registered", "started", "exited exited with code 1", "restart after 0.1 seconds", "started",
                    "exited exited with code 1", "gave up", "unregistered: terminated",
                ])
            }
        }

        @Test(
            "1,000 register/exit cycles leave no zombie, no open descriptor and no used slot (exec'd, and forked from spares)",
            arguments: [false, true]
        )
        func thousandCycles(forking: Bool) async throws {
            // In a process of its own, where no other test opens descriptors meanwhile.
            let (lines, status) = try await runFixture(["cycles", "1000"], environment: forking ? ["FIXTURE_FORK_SERVER": "1"] : [:])
            #expect(status == .exited(0))
            let fields = try #require(lines.last?.split(separator: " ").map(String.init), "\(lines)")
            try #require(fields.count == 11, "\(lines)")
            #expect(fields[1] == "1000", "every cycle completed: \(lines)")
            #expect(fields[3] == fields[4], "descriptors before and after: \(lines)")
            #expect(fields[6] == "0", "zombies: \(lines)")
            #expect(fields[8] == "0", "slots in use: \(lines)")
            // Forked: asked right after each register, before the worker (exiting at once) is reaped, so most.
            #expect(forking ? Int(fields[10]) ?? 0 > 500 : fields[10] == "0", "forked: \(lines)")
        }

        @Test("withWorkerSupervisor stops and reaps every worker when its body throws")
        func scopedCleanupOnThrow() async throws {
            struct Boom: Error {}
            let pids = Mutex<[Int32]>([])
            await #expect(throws: Boom.self) {
                try await withWorkerSupervisor { supervisor in
                    for index in 0..<3 {
                        let handle = try await supervisor.register(shellWorker("doomed-\(index)", Script.sleepForever))
                        let pid = try await handle.waitForStartup()
                        pids.withLock { $0.append(pid) }
                    }
                    throw Boom()
                }
            }
            let all = pids.withLock { $0 }
            #expect(all.count == 3)
            #expect(zombieChildren(among: all).isEmpty)
            #expect(all.allSatisfy { !processExists($0) })
        }

        @Test("metrics count starts, exits by cause, restarts, crash resets, running workers and slots in use")
        func metrics() async throws {
            let metrics = TestMetrics()
            try await withSupervisor(configure: { $0.metricsFactory = metrics }) { supervisor in
                let log = await EventLog(supervisor)
                var flaky = shellWorker("flaky", Script.exit(1))
                flaky.restartInterval = .seconds(0)
                flaky.restartBudget = .init(maxRestarts: 1, window: .seconds(3600))
                _ = try await supervisor.register(flaky)
                _ = await log.first { $0.name == "flaky" && $0.kind == .gaveUp }
                let done = try await supervisor.register(shellWorker("done", Script.exit(0)))
                _ = try await done.waitForShutdown()
                var crasher = shellWorker("crasher", Script.crash)
                crasher.flags = [.sharedMemoryAccess]
                let crashed = try await supervisor.register(crasher)
                _ = try await crashed.waitForShutdown()
                let sleeper = try await supervisor.register(shellWorker("sleeper", Script.sleepForever))
                _ = try await sleeper.waitForStartup()

                #expect(try metrics.expectCounter("bgworker_starts_total").totalValue == 5)
                #expect(try metrics.expectCounter("bgworker_restarts_total").totalValue == 1)
                #expect(try metrics.expectCounter("bgworker_exits_total", [("cause", "restart")]).totalValue == 2)
                #expect(try metrics.expectCounter("bgworker_exits_total", [("cause", "done")]).totalValue == 1)
                #expect(try metrics.expectCounter("bgworker_exits_total", [("cause", "crash")]).totalValue == 1)
                #expect(try metrics.expectCounter("bgworker_crash_resets_total").totalValue == 1)
                #expect(try metrics.expectGauge("bgworker_running").lastValue == 1)
                // flaky (gave up, still registered) and sleeper.
                #expect(try metrics.expectGauge("bgworker_slots_in_use").lastValue == 2)
            }
        }

        @Test("as a ServiceLifecycle service, a graceful shutdown is a fast shutdown")
        func serviceLifecycle() async throws {
            let supervisor = try WorkerSupervisor()
            let handle = try await supervisor.register(shellWorker("service", Script.sleepForever))
            let group = ServiceGroup(
                configuration: .init(services: [.init(service: supervisor)], gracefulShutdownSignals: [], logger: .init(label: "test"))
            )
            let running = Task { try await group.run() }
            let pid = try await handle.waitForStartup()
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(await handle.status == .supervisorDied)
            #expect(zombieChildren(among: [pid]).isEmpty)
            #expect(!processExists(pid))
        }
    }
}

