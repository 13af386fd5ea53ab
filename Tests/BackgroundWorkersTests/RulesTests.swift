import BackgroundWorkerContract
import Testing
import UVConcurrency

@testable import BackgroundWorkers

/// The bgworker rules as pure functions, without processes or clocks.
@Suite("Restart rules and slots, without processes")
struct RulesTests {
    static func context(
        _ configure: (inout BackgroundWorker) -> Void = { _ in },
        terminate: Bool = false,
        shuttingDown: Bool = false,
        recent: Int = 0,
        consecutive: Int = 0,
        uptime: Duration = .seconds(1)
    ) -> ExitContext {
        var worker = BackgroundWorker(name: "w", entryPoint: .executable("/bin/true"))
        worker.restartInterval = .seconds(10)
        configure(&worker)
        return ExitContext(
            worker: worker,
            terminateRequested: terminate,
            shuttingDown: shuttingDown,
            recentRestarts: recent,
            consecutiveRestarts: consecutive,
            uptime: uptime
        )
    }

    func decide(_ status: UVExitStatus, _ context: ExitContext, random: Double = 0.5) -> ExitDecision {
        RestartRules.decide(status, context) { random }
    }

    @Test("PG-11, PG-12: exit 0 unregisters; exit 1 restarts after the interval or unregisters when never")
    func exitCodes() {
        #expect(decide(.exited(0), Self.context()) == .unregister(.completed))
        #expect(decide(.exited(1), Self.context()) == .restart(after: .seconds(10)))
        #expect(decide(.exited(1), Self.context { $0.restartInterval = .never }) == .unregister(.noRestart))
        #expect(decide(.exited(0), Self.context { $0.restartInterval = .seconds(0) }) == .unregister(.completed))
    }

    @Test("PG-13: crashes reset shared-memory workers and only restart isolated ones")
    func crashes() {
        let shared = Self.context { $0.flags = [.sharedMemoryAccess] }
        #expect(decide(.exited(2), shared) == .crashReset)
        #expect(decide(.signaled(.kill), shared) == .crashReset)
        #expect(decide(.exited(1), shared) == .restart(after: .seconds(10)))
        #expect(decide(.exited(2), Self.context()) == .restart(after: .seconds(10)))
        #expect(decide(.signaled(.terminate), Self.context()) == .restart(after: .seconds(10)))
        #expect(RestartRules.isCrash(.exited(255)) && !RestartRules.isCrash(.exited(1)) && !RestartRules.isCrash(.exited(0)))
    }

    @Test("PG-22, PG-24: a terminated worker is never restarted; nothing is restarted during shutdown")
    func terminateAndShutdown() {
        #expect(decide(.exited(1), Self.context(terminate: true)) == .unregister(.terminated))
        #expect(decide(.exited(1), Self.context(shuttingDown: true)) == .unregister(.shutdown))
        #expect(decide(.exited(3), Self.context({ $0.flags = [.sharedMemoryAccess] }, shuttingDown: true)) == .unregister(.shutdown))
    }

    @Test("PG-16: backoff grows, is capped, jitters within its share, and resets after a stable uptime")
    func backoff() {
        let policy: (inout BackgroundWorker) -> Void = {
            $0.restartInterval = .seconds(1)
            $0.restartBackoff = .init(multiplier: 3, maximum: .seconds(20), jitter: 0.5, resetAfter: .seconds(30))
        }
        let waits = (0..<5).map { attempt in
            RestartRules.delay(interval: .seconds(1), context: Self.context(policy, consecutive: attempt), random: { 0.5 })
        }
        #expect(waits == [.seconds(1), .seconds(3), .seconds(9), .seconds(20), .seconds(20)])
        let low = RestartRules.delay(interval: .seconds(1), context: Self.context(policy, consecutive: 2), random: { 0 })
        let high = RestartRules.delay(interval: .seconds(1), context: Self.context(policy, consecutive: 2), random: { 0.999_999 })
        #expect(low == .seconds(4.5))
        #expect(high > .seconds(13.49) && high <= .seconds(13.5))
        let stable = RestartRules.delay(interval: .seconds(1), context: Self.context(policy, consecutive: 4, uptime: .seconds(31)), random: { 0.5 })
        #expect(stable == .seconds(1))
    }

    @Test("PG-16: a spent budget gives up")
    func budget() {
        let budgeted: (inout BackgroundWorker) -> Void = { $0.restartBudget = .init(maxRestarts: 2, window: .seconds(60)) }
        #expect(decide(.exited(1), Self.context(budgeted, recent: 1)) == .restart(after: .seconds(10)))
        #expect(decide(.exited(1), Self.context(budgeted, recent: 2)) == .giveUp)
        #expect(decide(.exited(0), Self.context(budgeted, recent: 2)) == .unregister(.completed))
    }

    @Test("PG-5, PG-6: lowest free slot, generations bumped on reuse, stale handles see the last outcome or 'replaced'")
    func slots() {
        var table = SlotTable<String>(capacity: 3)
        let a = table.insert { slot, generation in "a\(slot).\(generation)" }
        let b = table.insert { slot, generation in "b\(slot).\(generation)" }
        #expect(a?.slot == 0 && b?.slot == 1 && a?.generation == 1)
        table.remove(slot: 0, outcome: .unregistered(.completed, lastExit: .exited(0)))
        #expect(table.entry(slot: 0, generation: 1) == nil)
        #expect(table.outcome(slot: 0, generation: 1) == .unregistered(.completed, lastExit: .exited(0)))
        let c = table.insert { slot, generation in "c\(slot).\(generation)" }
        #expect(c?.slot == 0 && c?.generation == 2)
        #expect(table.entry(slot: 0, generation: 2) == "c0.2")
        #expect(table.outcome(slot: 0, generation: 1) == .unregistered(.replaced, lastExit: nil))
        _ = table.insert { _, _ in "d" }
        #expect(table.insert { _, _ in "e" } == nil)
        #expect(table.used == 3)
        #expect(table.entry(slot: 7, generation: 1) == nil)
    }
}
