@testable import BackgroundWorkers
import TestSupport
import Testing
import UVConcurrency

extension SupervisorTests {
    @Suite("Registration that waits for a slot (beyond PostgreSQL)")
    struct SlotWaitTests {
        /// Returns once `count` registrations wait for a slot.
        func waiters(_ supervisor: WorkerSupervisor, _ count: Int) async {
            while await supervisor.waitingForSlots < count { await Task.yield() }
        }

        @Test("waiting registrations get freed slots in the order they began to wait", arguments: spawnStrategies)
        func servedInOrder(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy, slots: 2) { supervisor in
                let first = try await supervisor.register(shellWorker("a", Script.sleepForever))
                let second = try await supervisor.register(shellWorker("b", Script.sleepForever))
                let waitingA = Task { try await supervisor.register(shellWorker("wait-a", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                await self.waiters(supervisor, 1)
                let waitingB = Task { try await supervisor.register(shellWorker("wait-b", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                await self.waiters(supervisor, 2)
                // Without waiting, the table is still full.
                #expect(await refusal(supervisor, shellWorker("plain", Script.sleepForever))?.code == .noFreeSlot)

                await second.terminate()
                let a = try await waitingA.value
                #expect(a.slot == second.slot)
                #expect(await supervisor.waitingForSlots == 1)
                await first.terminate()
                let b = try await waitingB.value
                #expect(b.slot == first.slot)
                _ = try await b.waitForStartup()
            }
        }

        @Test("no slot in time: noFreeSlot saying how long it waited; cancellation ends the wait; nothing registered")
        func timeoutAndCancel() async throws {
            try await withSupervisor(slots: 1) { supervisor in
                _ = try await supervisor.register(shellWorker("full", Script.sleepForever))
                do {
                    _ = try await supervisor.register(shellWorker("late", Script.sleepForever), waitingForSlotUpTo: .milliseconds(200))
                    Issue.record("registered without a free slot")
                } catch let error as SupervisorError {
                    #expect(error.code == .noFreeSlot)
                    #expect(error.message.contains("within 0.2 seconds") && error.message.contains("1 of 1"), "\(error)")
                }
                let cancelled = Task { try await supervisor.register(shellWorker("cancelled", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                await self.waiters(supervisor, 1)
                cancelled.cancel()
                await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
                #expect(await supervisor.waitingForSlots == 0)
                #expect(await supervisor.slotsInUse == 1)
                // A refusal for another reason comes at once, waiting or not.
                let invalid = BackgroundWorker(name: "", entryPoint: .executable("/bin/true"))
                await #expect(throws: SupervisorError.self) { _ = try await supervisor.register(invalid, waitingForSlotUpTo: .seconds(60)) }
            }
        }

        @Test("a shutdown refuses the waiting registrations at once")
        func shutdownRefusesWaiters() async throws {
            try await withSupervisor(slots: 1) { supervisor in
                _ = try await supervisor.register(shellWorker("full", Script.sleepForever))
                let waiting = Task { try await supervisor.register(shellWorker("waiting", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                await self.waiters(supervisor, 1)
                await supervisor.shutdown(.fast)
                do {
                    _ = try await waiting.value
                    Issue.record("registered during shutdown")
                } catch let error as SupervisorError {
                    #expect(error.code == .shuttingDown)
                }
            }
        }
    }
}
