import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension UVConcurrencyTests {
    @Suite("UVEventLoop as an executor")
    struct ExecutorTests {
        @Test("an actor on the loop runs on the loop thread")
        func actorRunsOnLoopThread() async throws {
            try await withLoop { loop async throws in
                let loopThread = try await loop.submit { cws_gettid() }
                let actor = LoopActor(loop: loop)
                #expect(await actor.isOnLoopThread())
                #expect(await actor.threadID() == loopThread)
                #expect(loopThread != cws_gettid())
                #expect(!loop.inEventLoop)
            }
        }

        @Test("jobs from one thread run in FIFO order")
        func fifoOrder() async throws {
            try await withLoop { loop async throws in
                let order = Collector<Int>()
                for index in 0..<10_000 {
                    loop.execute { order.append(index) }
                }
                _ = try await loop.submit { 0 }
                #expect(order.all == Array(0..<10_000))
            }
        }

        @Test("a million jobs enqueued from several threads at once all run exactly once")
        func millionJobsFromSeveralThreads() async throws {
            try await withLoop { loop async throws in
                let producers = 4
                let perProducer = 250_000
                // Written only on the loop thread; read after the final job ran there.
                final class Tally: @unchecked Sendable {
                    var counts = [UInt8](repeating: 0, count: 1_000_000)
                    var lastSeen = [Int](repeating: -1, count: 4)
                    var outOfOrder = 0
                    var total = 0
                }
                let tally = Tally()
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    for producer in 0..<producers {
                        Thread.detach {
                            for index in 0..<perProducer {
                                loop.execute {
                                    let job = producer * perProducer + index
                                    tally.counts[job] &+= 1
                                    if tally.lastSeen[producer] >= index { tally.outOfOrder += 1 }
                                    tally.lastSeen[producer] = index
                                    tally.total += 1
                                    if tally.total == producers * perProducer { done.resume() }
                                }
                            }
                        }
                    }
                }
                #expect(tally.counts.allSatisfy { $0 == 1 })
                #expect(tally.outOfOrder == 0)
            }
        }

        @Test("assumeIsolated works inside a timer callback")
        func assumeIsolatedFromTimer() async throws {
            try await withLoop { loop async throws in
                let actor = LoopActor(loop: loop)
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    loop.execute {
                        _ = try? loop.scheduleTimer(after: .milliseconds(1)) {
                            actor.assumeIsolated { actor in
                                actor.record(42)
                            }
                            done.resume()
                        }
                    }
                }
                #expect(await actor.log == [42])
            }
        }

        @Test("hops between two actors on the same loop stay on the loop thread")
        func hopsBetweenActorsOnOneLoop() async throws {
            try await withLoop { loop async throws in
                let first = LoopActor(loop: loop)
                let second = LoopActor(loop: loop)
                    let threads = [await first.threadID(), await second.threadID()]
                #expect(threads[0] == threads[1])
            }
        }

        @Test("a loop that never spins sleeps and is woken for every job", arguments: [Duration.zero, .microseconds(50)])
        func loopWithAndWithoutSpin(spin: Duration) async throws {
            let loop = try UVEventLoop(name: "spin-\(spin)", spinBeforeSleep: spin)
            let actor = LoopActor(loop: loop)
            for value in 0..<2000 {
                await actor.record(value)
            }
            #expect(await actor.log == Array(0..<2000))
            try await loop.shutdown()
        }

        @Test("an out-of-range spin is refused, naming the value")
        func invalidSpinIsRefused() throws {
            #expect(throws: UVError.self) { _ = try UVEventLoop(name: "bad", spinBeforeSleep: .milliseconds(-1)) }
            do {
                _ = try UVEventLoop(name: "bad", spinBeforeSleep: .seconds(1))
                Issue.record("a one-second spin was accepted")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.description.contains("1.0 seconds"))
            }
        }

        @Test("withTaskExecutorPreference runs a task group's children on the loop thread")
        func taskExecutorPreference() async throws {
            try await withLoop { loop async throws in
                let loopThread = try await loop.submit { cws_gettid() }
                let threads = await withTaskExecutorPreference(loop.taskExecutor) {
                    await withTaskGroup(of: pid_t.self) { group in
                        for _ in 0..<8 {
                            group.addTask { cws_gettid() }
                        }
                        return await group.reduce(into: [pid_t]()) { $0.append($1) }
                    }
                }
                #expect(threads.count == 8)
                #expect(threads.allSatisfy { $0 == loopThread })
            }
        }
    }
}

/// Starts a plain POSIX thread (the tests need producers that are not Swift executor threads).
enum Thread {
    static func detach(_ body: @escaping @Sendable () -> Void) {
        final class Box: @unchecked Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread,
            nil,
            { context in
                Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            },
            context
        )
        precondition(status == 0)
        pthread_detach(thread)
    }
}
