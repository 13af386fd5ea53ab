import BackgroundWorkers
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    @Suite("Registration and slots (PG-SEMANTICS 2–6)")
    struct RegistrationTests {
        @Test("PG-2: static registration before run() validates and throws at once, changing nothing", arguments: spawnStrategies)
        func staticRegistrationValidates(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            var bad = shellWorker(String(repeating: "x", count: 64), Script.sleepForever)
            let tooLong = await refusal(supervisor, bad)
            #expect(tooLong?.code == .invalidRegistration)
            #expect(tooLong?.registrationError?.field == "name")
            bad = shellWorker("static-notify", Script.sleepForever)
            bad.notifyPID = getpid()
            #expect(await refusal(supervisor, bad)?.registrationError?.field == "notifyPID")
            #expect(await supervisor.slotsInUse == 0)
            let good = try await supervisor.register(shellWorker("static", Script.exit(0)))
            #expect(await good.status == .notYetStarted)
            #expect(await good.detail == .waitingForStartPhase)
            await supervisor.shutdown()
            try await supervisor.run()
            #expect(await good.status == .supervisorDied)
        }

        @Test("PG-2, PG-7: static workers start when run() starts", arguments: spawnStrategies)
        func staticWorkersStartWithRun(strategy: UVSpawnStrategy) async throws {
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            let handle = try await supervisor.register(shellWorker("static-runner", Script.sleepForever))
            let runner = Task { try await supervisor.run() }
            let pid = try await handle.waitForStartup()
            #expect(pid > 0)
            #expect(await handle.status == .started(pid: pid))
            await supervisor.shutdown(.fast)
            try await runner.value
            #expect(!processExists(pid) || zombieChildren(among: [pid]).isEmpty)
        }

        @Test("PG-3: no free slot is a typed error naming used and limit, and changes nothing", arguments: spawnStrategies)
        func noFreeSlot(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy, slots: 2) { supervisor in
                _ = try await supervisor.register(shellWorker("a", Script.sleepForever))
                _ = try await supervisor.register(shellWorker("b", Script.sleepForever))
                let error = await refusal(supervisor, shellWorker("c", Script.sleepForever))
                #expect(error?.code == .noFreeSlot)
                #expect(error?.message.contains("no free worker slot: 2 of 2 in use") == true)
                #expect(await supervisor.slotsInUse == 2)
            }
        }

        @Test("PG-4: an invalid dynamic registration is refused with the field named, and changes nothing", arguments: spawnStrategies)
        func invalidDynamicRegistration(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                var worker = shellWorker("db", Script.sleepForever)
                worker.flags = [.databaseConnection]
                worker.startTime = .consistentState
                let error = await refusal(supervisor, worker)
                #expect(error?.code == .invalidRegistration)
                #expect(error?.registrationError?.field == "flags")
                #expect(error?.description.contains("sharedMemoryAccess") == true)
                worker = shellWorker("interval", Script.sleepForever)
                worker.restartInterval = .seconds(100_000)
                await #expect(throws: SupervisorError.self) { _ = try await supervisor.register(worker) }
                #expect(await supervisor.slotsInUse == 0)
            }
        }

        @Test("PG-5: a dynamic registration takes the lowest free slot", arguments: spawnStrategies)
        func lowestFreeSlot(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy, slots: 4) { supervisor in
                let a = try await supervisor.register(shellWorker("a", Script.sleepForever))
                let b = try await supervisor.register(shellWorker("b", Script.sleepForever))
                let c = try await supervisor.register(shellWorker("c", Script.sleepForever))
                #expect([a.slot, b.slot, c.slot] == [0, 1, 2])
                await a.terminate()
                #expect(try await a.waitForShutdown() == .stopped)
                let d = try await supervisor.register(shellWorker("d", Script.sleepForever))
                #expect(d.slot == 0)
                #expect(d.generation == a.generation + 1)
            }
        }

        @Test("PG-6: a stale handle reports stopped with its own outcome, and its terminate does nothing (ABA-safe)", arguments: spawnStrategies)
        func staleHandle(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy, slots: 1) { supervisor in
                let old = try await supervisor.register(shellWorker("old", Script.exit(0)))
                #expect(try await old.waitForShutdown() == .stopped)
                #expect(await old.detail == .unregistered(.completed, lastExit: .exited(0)))
                let new = try await supervisor.register(shellWorker("new", Script.sleepForever))
                #expect(new.slot == old.slot && new.generation != old.generation)
                let pid = try await new.waitForStartup()
                #expect(await old.status == .stopped)
                #expect(await old.detail == .unregistered(.completed, lastExit: .exited(0)))
                await old.terminate()
                #expect(await new.status == .started(pid: pid))
                #expect(try await old.waitForShutdown() == .stopped)
                await #expect(throws: SupervisorError.self) { _ = try await old.waitForStartup() }
            }
        }
    }
}
