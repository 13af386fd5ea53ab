import BackgroundWorkers
import Synchronization
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("Start (PG-SEMANTICS 7–10)")
    struct StartTests {
        @Test("PG-7: workers start when the startup step reaches their phase, and nothing starts after shutdown began", arguments: spawnStrategies)
        func startPhases(strategy: UVSpawnStrategy) async throws {
            let gate = Gate()
            var configuration = WorkerSupervisor.Configuration.testing(strategy)
            configuration.startupStep = { progress in
                await gate.wait("consistent")
                await progress.reportConsistent()
                await gate.wait("finished")
            }
            let supervisor = try WorkerSupervisor(configuration: configuration)
            var early = shellWorker("early", Script.sleepForever)
            early.startTime = .supervisorStart
            var consistent = shellWorker("consistent", Script.sleepForever)
            consistent.startTime = .consistentState
            var late = shellWorker("late", Script.sleepForever)
            late.startTime = .recoveryFinished
            let earlyHandle = try await supervisor.register(early)
            let consistentHandle = try await supervisor.register(consistent)
            let lateHandle = try await supervisor.register(late)
            let runner = Task { try await supervisor.run() }

            _ = try await earlyHandle.waitForStartup()
            #expect(await consistentHandle.status == .notYetStarted)
            #expect(await lateHandle.status == .notYetStarted)
            gate.open("consistent")
            _ = try await consistentHandle.waitForStartup()
            #expect(await lateHandle.status == .notYetStarted)
            #expect(await lateHandle.detail == .waitingForStartPhase)
            gate.open("finished")
            _ = try await lateHandle.waitForStartup()
            await supervisor.shutdown(.fast)
            try await runner.value
        }

        @Test("PG-7: a worker registered while shutting down is refused and never started", arguments: spawnStrategies)
        func nothingStartsAfterShutdown(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                _ = try await supervisor.register(shellWorker("keeps-running", Script.ignoreTerm))
                await supervisor.shutdown(.smart)
                let error = await refusal(supervisor, shellWorker("too-late", Script.sleepForever))
                #expect(error?.code == .shuttingDown)
                await supervisor.shutdown(.immediate)
            }
        }

        @Test("PG-8: workers start in registration order", arguments: spawnStrategies)
        func registrationOrder(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            let log = await EventLog(supervisor)
            var handles: [BackgroundWorkerHandle] = []
            for name in ["first", "second", "third", "fourth"] {
                handles.append(try await supervisor.register(shellWorker(name, Script.sleepForever)))
            }
            let runner = Task { try await supervisor.run() }
            for handle in handles { _ = try await handle.waitForStartup() }
            await supervisor.shutdown(.fast)
            try await runner.value
            let started = log.all.compactMap { event -> String? in
                if case .started = event.kind { return event.name }
                return nil
            }
            #expect(started == ["first", "second", "third", "fourth"])
        }

        @Test("PG-9: started means a pid exists, and the notify pid is woken at once; ready is separate", arguments: spawnStrategies)
        func startedAndNotified(strategy: UVSpawnStrategy) async throws {
            let wakeUps = try await WakeUps()
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("notified", "read line <&0; exec sleep 1000")  // never ready
                worker.notifyPID = getpid()
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let pid = try await handle.waitForStartup()
                #expect(await wakeUps.next())
                #expect(processExists(pid))
                #expect(await handle.detail == .running(pid: pid, ready: false))
            }
            try await wakeUps.close()
        }

        @Test("PG-10: a permanent spawn error stops the worker with the error in its status, no retry", arguments: spawnStrategies)
        func permanentSpawnError(strategy: UVSpawnStrategy) async throws {
            // A program that exists at registration (checked then) and is gone when the supervisor starts it.
            let path = "/tmp/bgw-vanishing-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try #require(FileManagerLite.writeExecutable(path, "#!/bin/sh\nexit 0\n"))
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            var worker = BackgroundWorker(name: "missing", entryPoint: .executable(path))
            worker.restartInterval = .seconds(0)
            let handle = try await supervisor.register(worker)
            unlink(path)
            let runner = Task { try await supervisor.run() }
            do {
                _ = try await handle.waitForStartup()
                Issue.record("a missing executable started")
            } catch let error as SupervisorError {
                #expect(error.code == .workerStopped)
                if case .unregistered(let reason, _) = error.detail {
                    #expect(reason.spawnError?.errno == ENOENT)
                } else {
                    Issue.record("detail \(String(describing: error.detail))")
                }
            }
            #expect(await handle.status == .stopped)
            #expect(await supervisor.slotsInUse == 0)
            await supervisor.shutdown(.fast)
            try await runner.value
        }
    }

    @Suite("Transient spawn errors (PG-SEMANTICS 10)")
    struct TransientSpawnErrorTests {
        @Test("PG-10: a transient spawn error (EMFILE) is retried after the interval; a never-restart worker stops", arguments: spawnStrategies)
        func transientSpawnError(strategy: UVSpawnStrategy) async throws {
            // In a process of its own: it lowers the descriptor limit, which every test in this one would feel.
            let (lines, status) = try await runFixture(["emfile-retry"], strategy: strategy)
            #expect(status == .exited(0))
            #expect(lines == [
                "retried: not yet started; restarting 1.0 seconds after pipeFailed: creating a pipe: EMFILE (too many open files)",
                "once: stopped; unregistered: could not be started: pipeFailed: creating a pipe: EMFILE (too many open files)",
                "retried: ready",
            ])
        }
    }

    @Suite("Exit and restart (PG-SEMANTICS 11–16)")
    struct ExitTests {
        @Test("PG-11: exit 0 unregisters and frees the slot, whatever the interval", arguments: spawnStrategies)
        func exitZeroUnregisters(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("done", Script.exit(0))
                worker.restartInterval = .seconds(0)
                let handle = try await supervisor.register(worker)
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.detail == .unregistered(.completed, lastExit: .exited(0)))
                #expect(await supervisor.slotsInUse == 0)
            }
        }

        @Test("PG-12: exit 1 restarts after the interval counted from the reap; never-restart unregisters", arguments: spawnStrategies)
        func exitOneRestartsFromReap(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                let log = await EventLog(supervisor)
                // Exits 1 when told: a SIGTERM from outside (not through the handle) makes this script exit 1.
                var worker = shellWorker("restarter", Script.exitOneOnTerm)
                worker.restartInterval = .seconds(10)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                let firstPid = try await handle.waitForReady()
                // Time passes while it runs: the interval must not count from the start.
                clock.advance(by: .seconds(100))
                kill(firstPid, SIGTERM)
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.status == .stopped)
                guard case .restartScheduled(let after, let lastExit, _) = await handle.detail else {
                    Issue.record("not scheduled: \(await handle.detail)")
                    return
                }
                #expect(after == .seconds(10))
                #expect(lastExit == .exited(1))
                await clock.waitForSleepers(1)
                #expect(clock.pendingDelays == [.seconds(10)])
                clock.advance(by: .seconds(9))
                #expect(await handle.status == .stopped)
                clock.advance(by: .seconds(1))
                let secondPid = try await handle.waitForReady()
                #expect(secondPid != firstPid)
                #expect(log.kinds(of: "restarter").contains(.restartScheduled(after: .seconds(10))))

                var once = shellWorker("once", Script.exit(1))
                once.restartInterval = .never
                let onceHandle = try await supervisor.register(once)
                #expect(try await onceHandle.waitForShutdown() == .stopped)
                #expect(await onceHandle.detail == .unregistered(.noRestart, lastExit: .exited(1)))
            }
        }

        @Test("PG-13: a crash of a shared-memory worker resets every shared-memory worker; others are isolated", arguments: spawnStrategies)
        func crashResetsSharedMemoryWorkers(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                let log = await EventLog(supervisor)
                var peer = shellWorker("peer", Script.readyThenSleep)
                peer.flags = [.sharedMemoryAccess]
                peer.restartInterval = .seconds(3600)  // a reset restarts it at once anyway (PG-14)
                peer.reportsReadiness = true
                var bystander = shellWorker("bystander", Script.readyThenSleep)
                bystander.reportsReadiness = true
                let peerHandle = try await supervisor.register(peer)
                let bystanderHandle = try await supervisor.register(bystander)
                let peerPid = try await peerHandle.waitForReady()
                let bystanderPid = try await bystanderHandle.waitForReady()

                var crasher = shellWorker("crasher", Script.crash)
                crasher.flags = [.sharedMemoryAccess]
                crasher.restartInterval = .never
                let crasherHandle = try await supervisor.register(crasher)
                #expect(try await crasherHandle.waitForShutdown() == .stopped)

                // The peer got SIGQUIT, died, and came back at once with a new pid.
                let newPeerPid = await log.startedPid(of: "peer", other: peerPid)
                #expect(newPeerPid != peerPid)
                #expect(log.kinds(of: "peer").contains(.exited(pid: peerPid, status: .signaled(.quit))))
                // The worker without shared memory never noticed.
                #expect(await bystanderHandle.status == .started(pid: bystanderPid))
                #expect(log.kinds(of: "crasher").contains(.crashReset))
            }
        }

        @Test("PG-13: a crash of a worker without shared memory only restarts itself", arguments: spawnStrategies)
        func crashIsolation(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                var peer = shellWorker("shm-peer", Script.readyThenSleep)
                peer.flags = [.sharedMemoryAccess]
                peer.reportsReadiness = true
                let peerHandle = try await supervisor.register(peer)
                let peerPid = try await peerHandle.waitForReady()
                var isolated = shellWorker("isolated", Script.crash)
                isolated.restartInterval = .seconds(5)
                let handle = try await supervisor.register(isolated)
                #expect(try await handle.waitForShutdown() == .stopped)
                guard case .restartScheduled(.seconds(5), .signaled(let signal), _) = await handle.detail else {
                    Issue.record("detail: \(await handle.detail)")
                    return
                }
                #expect(signal.rawValue == SIGSEGV)
                #expect(await peerHandle.status == .started(pid: peerPid))
            }
        }

        @Test("PG-14: after a crash reset, never-restart workers are forgotten, restartable ones return at once", arguments: spawnStrategies)
        func crashResetForgetsNeverRestart(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                let log = await EventLog(supervisor)
                var restartable = shellWorker("restartable", Script.readyThenSleep)
                restartable.flags = [.sharedMemoryAccess]
                restartable.restartInterval = .seconds(86_400)
                restartable.reportsReadiness = true
                var oneShot = shellWorker("one-shot", Script.readyThenSleep)
                oneShot.flags = [.sharedMemoryAccess]
                oneShot.restartInterval = .never
                oneShot.reportsReadiness = true
                let restartableHandle = try await supervisor.register(restartable)
                let oneShotHandle = try await supervisor.register(oneShot)
                let firstPid = try await restartableHandle.waitForReady()
                _ = try await oneShotHandle.waitForReady()

                var crasher = shellWorker("crasher2", Script.exit(3))
                crasher.flags = [.sharedMemoryAccess]
                _ = try await supervisor.register(crasher)

                let secondPid = await log.startedPid(of: "restartable", other: firstPid)  // at once, not after a day
                #expect(secondPid != firstPid)
                #expect(try await oneShotHandle.waitForShutdown() == .stopped)
                #expect(await oneShotHandle.detail == .unregistered(.crashReset, lastExit: .signaled(.quit)))
            }
        }

        @Test("PG-14 (opt-in): keepStaticWorkersAcrossCrashReset keeps never-restart static workers", arguments: spawnStrategies)
        func keepStaticAcrossReset(strategy: UVSpawnStrategy) async throws {
            var configuration = WorkerSupervisor.Configuration.testing(strategy)
            configuration.keepStaticWorkersAcrossCrashReset = true
            let supervisor = try WorkerSupervisor(configuration: configuration)
            var kept = shellWorker("kept", Script.readyThenSleep)
            kept.flags = [.sharedMemoryAccess]
            kept.reportsReadiness = true
            let keptHandle = try await supervisor.register(kept)
            let runner = Task { try await supervisor.run() }
            let log = await EventLog(supervisor)
            let firstPid = try await keptHandle.waitForReady()
            var crasher = shellWorker("crasher3", Script.crash)
            crasher.flags = [.sharedMemoryAccess]
            _ = try await supervisor.register(crasher)
            let secondPid = await log.startedPid(of: "kept", other: firstPid)
            #expect(secondPid != firstPid)
            await supervisor.shutdown(.fast)
            try await runner.value
        }

        @Test("PG-15: the slot is freed before the exit notification, so a waiter can register again at once", arguments: spawnStrategies)
        func slotFreedBeforeNotification(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy, slots: 1) { supervisor in
                let first = try await supervisor.register(shellWorker("first", Script.exit(0)))
                #expect(try await first.waitForShutdown() == .stopped)
                let second = try await supervisor.register(shellWorker("second", Script.exit(0)))
                #expect(second.slot == 0)
                #expect(try await second.waitForShutdown() == .stopped)
            }
        }

        @Test("PG-16 (beyond): exponential backoff with a cap, reset after stable uptime", arguments: spawnStrategies)
        func backoff(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                var worker = shellWorker("flaky", Script.exit(1))
                worker.restartInterval = .seconds(1)
                worker.restartBackoff = .init(multiplier: 2, maximum: .seconds(5), jitter: 0, resetAfter: .seconds(60))
                let log = await EventLog(supervisor)
                _ = try await supervisor.register(worker)
                let delays = await log.restartDelays(of: "flaky", count: 5, advancing: clock)
                #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
            }
        }

        @Test("PG-16 (beyond): a spent restart budget is a visible gave-up state that the handle can clear", arguments: spawnStrategies)
        func restartBudget(strategy: UVSpawnStrategy) async throws {
            let clock = ManualClock()
            try await withSupervisor(strategy: strategy, clock: clock) { supervisor in
                var worker = shellWorker("budgeted", Script.exit(1))
                worker.restartInterval = .seconds(0)
                worker.restartThrottle = nil  // PostgreSQL's restarts at once; only the budget stops them
                worker.restartBudget = .init(maxRestarts: 3, window: .seconds(60))
                let handle = try await supervisor.register(worker)
                let log = await EventLog(supervisor)
                // Interval 0: restarted at once, three times, then gave up.
                while true {
                    _ = try await handle.waitForShutdown()
                    if case .gaveUp = await handle.detail { break }
                    _ = try? await handle.waitForStartup()
                }
                #expect(await handle.detail == .gaveUp(lastExit: .exited(1), restarts: 3, window: .seconds(60)))
                #expect(await handle.status == .stopped)
                #expect(await supervisor.slotsInUse == 1)
                await #expect(throws: SupervisorError.self) { _ = try await handle.waitForStartup() }
                await handle.resetRestartBudget()
                #expect(try await handle.waitForShutdown() == .stopped)
                _ = log
            }
        }
    }
}

/// Named gates a test opens to let a startup step proceed.
final class Gate: Sendable {
    private let state = Mutex<(open: Set<String>, waiters: [String: [CheckedContinuation<Void, Never>]])>(([], [:]))

    func wait(_ name: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isOpen = self.state.withLock { state -> Bool in
                if state.open.contains(name) { return true }
                state.waiters[name, default: []].append(continuation)
                return false
            }
            if isOpen { continuation.resume() }
        }
    }

    func open(_ name: String) {
        let waiters = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open.insert(name)
            return state.waiters.removeValue(forKey: name) ?? []
        }
        for waiter in waiters { waiter.resume() }
    }
}
