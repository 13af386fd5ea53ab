import BackgroundWorkers
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("Notification and waiting (PG-SEMANTICS 17–21)")
    struct NotifyTests {
        @Test("PG-17: the notify pid is woken at start, at every exit, and at unregistration", arguments: spawnStrategies)
        func notifiedOnStartExitAndUnregistration(strategy: UVSpawnStrategy) async throws {
            let wakeUps = try await WakeUps()
            let clock = ManualClock()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                var worker = shellWorker("notify-me", Script.exitOneOnTerm)
                worker.notifyPID = getpid()
                worker.restartInterval = .seconds(1)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForReady()
                #expect(await wakeUps.next())  // started
                kill(pid, SIGTERM)  // from outside: exit 1, restart scheduled
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await wakeUps.next())  // exited, although it will be restarted
                await handle.terminate()  // not running now: unregistered at once
                #expect(await wakeUps.next())
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))
            }
            try await wakeUps.close()
        }

        @Test("PG-17: a registration refused at shutdown wakes its notify pid", arguments: spawnStrategies)
        func notifiedOnRefusalAtShutdown(strategy: UVSpawnStrategy) async throws {
            let wakeUps = try await WakeUps()
            try await withSupervisor(strategy: strategy) { supervisor in
                await supervisor.shutdown(.smart)
                var worker = shellWorker("refused", Script.sleepForever)
                worker.notifyPID = getpid()
                #expect(await refusal(supervisor, worker)?.code == .shuttingDown)
                #expect(await wakeUps.next())
            }
            try await wakeUps.close()
        }

        @Test("PG-17, PG-18: a registration refused at shutdown never signals a notify pid that is not notifiable", arguments: spawnStrategies)
        func refusalDoesNotSignalStrangers(strategy: UVSpawnStrategy) async throws {
            // A child of this process that is not a worker, with SIGUSR1's default action (terminate).
            let loop = try UVEventLoop(name: "stranger")
            let stranger = try await loop.spawnProcess(UVSpawnOptions(executable: "/bin/sleep", arguments: ["1000"]))
            try await withSupervisor(strategy: strategy) { supervisor in
                await supervisor.shutdown(.smart)
                var worker = shellWorker("refused", Script.sleepForever)
                worker.notifyPID = stranger.pid
                #expect(await refusal(supervisor, worker)?.code == .shuttingDown)
            }
            // Had the refusal sent SIGUSR1, it would be pending before this SIGTERM and end the process first.
            #expect(try await loop.submit { try stranger.signal(.terminate) })
            #expect(try await stranger.waitForExit() == .signaled(.terminate))
            try await loop.shutdown()
        }

        @Test("PG-18: notify pids must be the supervisor or one of its live workers", arguments: spawnStrategies)
        func notifyPIDValidation(strategy: UVSpawnStrategy) async throws {
            let wakeUps = try await WakeUps()
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("target", Script.notifiableThenSleep)
                worker.reportsReadiness = true
                let target = try await supervisor.register(worker)
                let targetPid = try await target.waitForReady()

                var pointing = shellWorker("pointing", Script.sleepForever)
                pointing.notifyPID = targetPid
                let pointingHandle = try await supervisor.register(pointing)
                _ = try await pointingHandle.waitForStartup()  // the target got SIGUSR1 at this start
                await pointingHandle.terminate()
                #expect(try await pointingHandle.waitForShutdown() == .stopped)  // and at this exit
                #expect(await target.status == .started(pid: targetPid))  // it took them

                // A running worker that never said it takes SIGUSR1 is refused, and says why.
                var silent = shellWorker("silent", Script.readyThenSleep)
                silent.reportsReadiness = true
                let silentHandle = try await supervisor.register(silent)
                let silentPid = try await silentHandle.waitForReady()
                pointing.notifyPID = silentPid
                let refused = await refusal(supervisor, pointing)
                #expect(refused?.code == .notifyPIDRefused)
                #expect(refused?.message.contains("has not said it takes SIGUSR1") == true)
                #expect(await silentHandle.status == .started(pid: silentPid))

                pointing = shellWorker("self", Script.sleepForever)
                pointing.notifyPID = getpid()
                #expect(await refusal(supervisor, pointing) == nil)

                pointing = shellWorker("stranger", Script.sleepForever)
                pointing.notifyPID = 1  // init: alive, but not ours
                let error = await refusal(supervisor, pointing)
                #expect(error?.code == .notifyPIDRefused)
                #expect(error?.message.contains("notifyPID 1") == true)
            }
            try await wakeUps.close()
        }

        @Test("PG-19: when a notifiable worker exits, notify pids pointing at it are cleared and its dependants keep running", arguments: spawnStrategies)
        func notifyPIDClearedWhenTargetExits(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("target", Script.notifiableThenSleep)
                worker.reportsReadiness = true
                let target = try await supervisor.register(worker)
                let targetPid = try await target.waitForReady()
                var dependant = shellWorker("dependant", Script.sleepForever)
                dependant.notifyPID = targetPid
                let dependantHandle = try await supervisor.register(dependant)
                let dependantPid = try await dependantHandle.waitForStartup()
                await target.terminate()
                #expect(try await target.waitForShutdown() == .stopped)
                // Still running, and a later exit signals nobody (the target's pid may be reused).
                #expect(await dependantHandle.status == .started(pid: dependantPid))
                // A new worker can no longer name the dead pid.
                var late = shellWorker("late", Script.sleepForever)
                late.notifyPID = targetPid
                #expect(await refusal(supervisor, late)?.code == .notifyPIDRefused)
            }
        }

        @Test("PG-20: the four statuses, and a detail that tells 'will restart' from 'gone'", arguments: spawnStrategies)
        func fourStatuses(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            let supervisor = try WorkerSupervisor(configuration: {
                var configuration = WorkerSupervisor.Configuration.testing(strategy)
                configuration.clock = clock
                return configuration
            }())
            var worker = shellWorker("statuses", Script.exit(1))
            worker.restartInterval = .seconds(30)
            let handle = try await supervisor.register(worker)
            #expect(await handle.status == .notYetStarted)
            let runner = Task { try await supervisor.run() }
            #expect(try await handle.waitForShutdown() == .stopped)
            #expect(await handle.status == .stopped)
            guard case .restartScheduled(.seconds(30), .exited(1), nil) = await handle.detail else {
                Issue.record("detail: \(await handle.detail)")
                return
            }
            await supervisor.shutdown(.fast)
            try await runner.value
            #expect(await handle.status == .supervisorDied)
            #expect(await handle.detail == .unregistered(.shutdown(.fast), lastExit: .exited(1)))
        }

        @Test("PG-21: waits resolve: startup at the first status change, shutdown at the first exit, supervisor gone", arguments: spawnStrategies)
        func waitsResolve(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            let sleeper = try await supervisor.register(shellWorker("sleeper", Script.sleepForever))
            let runner = Task { try await supervisor.run() }
            let startup = Task { try await sleeper.waitForStartup() }
            let shutdown = Task { try await sleeper.waitForShutdown() }
            let pid = try await startup.value
            #expect(await sleeper.status == .started(pid: pid))
            await supervisor.shutdown(.fast)
            #expect(try await shutdown.value == .stopped)
            try await runner.value
            #expect(try await sleeper.waitForShutdown() == .supervisorDied)
            await #expect(throws: SupervisorError.self) { _ = try await sleeper.waitForStartup() }
        }

        @Test("PG-21: cancelled waits resume once with CancellationError and leave nothing behind", arguments: spawnStrategies, [200])
        func cancelledWaits(strategy: UVSpawnStrategy, iterations: Int) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                let handle = try await supervisor.register({
                    var worker = shellWorker("never-ready", "exec sleep 1000")
                    worker.reportsReadiness = true
                    return worker
                }())
                _ = try await handle.waitForStartup()
                var cancelled = 0
                for iteration in 0..<iterations {
                    let resumes = Atomic(0)
                    let waiter = Task {
                        defer { resumes.add(1, ordering: .relaxed) }
                        if iteration % 2 == 0 {
                            _ = try await handle.waitForReady()
                        } else {
                            _ = try await handle.waitForShutdown()
                        }
                    }
                    if iteration % 3 == 0 { await Task.yield() }
                    waiter.cancel()
                    if case .failure(let error) = await waiter.result {
                        #expect(error is CancellationError)
                        cancelled += 1
                    }
                    #expect(resumes.load(ordering: .relaxed) == 1)
                }
                #expect(cancelled == iterations)
            }
        }
    }

    @Suite("Terminate and shutdown (PG-SEMANTICS 22–24)")
    struct ShutdownTests {
        @Test("PG-22: terminate sends SIGTERM to the process group and never restarts, whatever the exit code", arguments: spawnStrategies)
        func terminateNeverRestarts(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("terminated", Script.exitOneOnTerm)
                worker.restartInterval = .seconds(0)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                _ = try await handle.waitForReady()
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .exited(1)))
                #expect(await supervisor.slotsInUse == 0)
            }
        }

        @Test("PG-22: an outside SIGTERM that makes the worker exit 1 restarts it", arguments: spawnStrategies)
        func outsideSigtermRestarts(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                let log = await EventLog(supervisor)
                var worker = shellWorker("outside", Script.exitOneOnTerm)
                worker.restartInterval = .seconds(0)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForReady()
                kill(pid, SIGTERM)
                let second = await log.startedPid(of: "outside", other: pid)
                #expect(second != pid)
            }
        }

        @Test("PG-22 (beyond): a worker that ignores SIGTERM is killed after its grace period, grandchildren too", arguments: spawnStrategies)
        func terminateKillsAfterGrace(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            let probe = try GroupProbe()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                var worker = shellWorker("stubborn", probe.prefix + Script.ignoreTerm)
                worker.stopGracePeriod = .seconds(10)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForReady()
                await handle.terminate()
                #expect(await handle.detail == .stopping(pid: pid))
                await clock.waitForSleepers(1)
                #expect(clock.pendingDelays == [.seconds(10)])
                clock.advance(by: .seconds(10))
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.terminated, lastExit: .signaled(.kill)))
                // Every process that held the probe (the worker and its `sleep` children) is gone.
                #expect(try await probe.awaitAllGone() == .endOfFile)
            }
        }

        @Test("PG-23: smart shutdown refuses registrations, restarts nothing, and waits for workers to exit", arguments: spawnStrategies)
        func smartShutdown(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            var worker = shellWorker("smart", Script.exitOneOnTerm)
            worker.restartInterval = .seconds(0)
            worker.reportsReadiness = true
            let handle = try await supervisor.register(worker)
            let runner = Task { try await supervisor.run() }
            let pid = try await handle.waitForReady()
            await supervisor.shutdown(.smart)
            #expect(await refusal(supervisor, shellWorker("late", Script.sleepForever))?.code == .shuttingDown)
            #expect(await handle.status == .started(pid: pid))  // smart: nobody is signalled
            kill(pid, SIGTERM)  // it exits 1 by itself: no restart during shutdown (PG-24)
            try await runner.value
            #expect(await handle.detail == .unregistered(.shutdown(.smart), lastExit: .exited(1)))
        }

        @Test("PG-23, PG-24: fast shutdown: SIGTERM, then SIGKILL after the grace period; a stuck worker cannot hang it", arguments: spawnStrategies)
        func fastShutdownNeverHangs(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            let probe = try GroupProbe()
            var configuration = WorkerSupervisor.Configuration.testing(strategy)
            configuration.clock = clock
            let supervisor = try WorkerSupervisor(configuration: configuration)
            var stubborn = shellWorker("stubborn", probe.prefix + Script.ignoreTerm)
            stubborn.reportsReadiness = true
            stubborn.stopGracePeriod = .seconds(3)
            var polite = shellWorker("polite", Script.exitOneOnTerm)
            polite.reportsReadiness = true
            polite.restartInterval = .seconds(0)
            let stubbornHandle = try await supervisor.register(stubborn)
            let politeHandle = try await supervisor.register(polite)
            let runner = Task { try await supervisor.run() }
            let stubbornPid = try await stubbornHandle.waitForReady()
            _ = try await politeHandle.waitForReady()
            await supervisor.shutdown(.fast)
            #expect(try await politeHandle.waitForShutdown() == .stopped)
            #expect(await politeHandle.detail == .unregistered(.shutdown(.fast), lastExit: .exited(1)))  // no restart
            await clock.waitForSleepers(1)
            clock.advance(by: .seconds(3))
            try await runner.value  // returns only once every child was reaped
            #expect(zombieChildren(among: [stubbornPid]).isEmpty)
            #expect(try await probe.awaitAllGone() == .endOfFile)
        }

        @Test("PG-23: immediate shutdown sends SIGQUIT", arguments: spawnStrategies)
        func immediateShutdown(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            let log = await EventLog(supervisor)
            var worker = shellWorker("quit", Script.readyThenSleep)
            worker.reportsReadiness = true
            let handle = try await supervisor.register(worker)
            let runner = Task { try await supervisor.run() }
            let pid = try await handle.waitForReady()
            await supervisor.shutdown(.immediate)
            try await runner.value
            #expect(log.kinds(of: "quit").contains(.exited(pid: pid, status: .signaled(.quit))))
        }
    }
}
