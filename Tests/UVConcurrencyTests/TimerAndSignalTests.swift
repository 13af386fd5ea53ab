import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension UVConcurrencyTests {
    @Suite("Timers")
    struct TimerTests {
        @Test("timers fire in deadline order, and ties in scheduling order")
        func timersFireInOrder() async throws {
            try await withLoop { loop async throws in
                let fired = Collector<String>()
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    loop.execute {
                        do {
                            try loop.scheduleTimer(after: .milliseconds(30)) { fired.append("30ms") }
                            try loop.scheduleTimer(after: .milliseconds(10)) { fired.append("10ms-a") }
                            try loop.scheduleTimer(after: .milliseconds(10)) { fired.append("10ms-b") }
                            try loop.scheduleTimer(after: .zero) { fired.append("0ms") }
                            try loop.scheduleTimer(after: .milliseconds(40)) { done.resume() }
                        } catch {
                            Issue.record(error)
                            done.resume()
                        }
                    }
                }
                #expect(fired.all == ["0ms", "10ms-a", "10ms-b", "30ms"])
            }
        }

        @Test("a cancelled timer never fires; cancelling twice or after firing does nothing")
        func cancelledTimerDoesNotFire() async throws {
            try await withLoop { loop async throws in
                let fired = Collector<String>()
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    loop.execute {
                        do {
                            let cancelled = try loop.scheduleTimer(after: .milliseconds(5)) { fired.append("cancelled") }
                            let kept = try loop.scheduleTimer(after: .milliseconds(1)) { fired.append("kept") }
                            #expect(cancelled.isPending)
                            cancelled.cancel()
                            cancelled.cancel()
                            #expect(!cancelled.isPending)
                            try loop.scheduleTimer(after: .milliseconds(20)) {
                                #expect(!kept.isPending)
                                kept.cancel()
                                done.resume()
                            }
                        } catch {
                            Issue.record(error)
                            done.resume()
                        }
                    }
                }
                #expect(fired.all == ["kept"])
            }
        }

        @Test("a timer waits at least its delay")
        func timerWaitsItsDelay() async throws {
            try await withLoop { loop async throws in
                let elapsed: Duration = await withCheckedContinuation { done in
                    loop.execute {
                        let start = ContinuousClock.now
                        _ = try? loop.scheduleTimer(after: .milliseconds(50)) {
                            done.resume(returning: ContinuousClock.now - start)
                        }
                    }
                }
                #expect(elapsed >= .milliseconds(49))
            }
        }

        @Test("a negative delay is an invalid argument naming the value")
        func negativeDelayIsRejected() async throws {
            try await withLoop { loop async throws in
                let error = try await loop.submit { () -> UVError? in
                    do throws(UVError) {
                        try loop.scheduleTimer(after: .milliseconds(-5)) {}
                        return nil
                    } catch {
                        return error
                    }
                }
                #expect(error?.code == .invalidArgument)
                #expect(error?.description.contains("-0.005 seconds") == true)
            }
        }
    }

    @Suite("Line readers with an incomplete-line timeout")
    struct IncompleteLines {
        @Test("whole lines are delivered; a line begun and left without its newline ends reading after the timeout")
        func incompleteLine() async throws {
            try await withLoop { loop async throws in
                let pipe = try UVPipePair()
                let lines = Collector<String>()
                let start = ContinuousClock.now
                let ended: UVLineReader.EndReason = try await withCheckedThrowingContinuation { ended in
                    loop.execute {
                        do {
                            _ = try loop.readLines(from: pipe.readEnd, incompleteLineTimeout: .milliseconds(200)) { line in
                                lines.append(line)
                            } onEnd: { reason in
                                ended.resume(returning: reason)
                            }
                        } catch {
                            ended.resume(throwing: error)
                        }
                    }
                    // One whole line in two writes, then a line begun and never ended; the writer stays.
                    for part in ["wh", "ole\nhal", "f"] {
                        _ = part.withCString { write(pipe.writeEnd, $0, strlen($0)) }
                    }
                }
                #expect(lines.all == ["whole"])
                #expect(ended == .lineIncomplete(bytes: 4, after: .milliseconds(200)))
                // libuv measures from its loop time, cached at the start of the loop turn: a little before `start`.
                #expect(ContinuousClock.now - start >= .milliseconds(150))
                _ = close(pipe.writeEnd)
            }
        }

        @Test("a timeout that is not positive is refused naming the value")
        func invalidTimeout() async throws {
            try await withLoop { loop async throws in
                let pipe = try UVPipePair()
                let error = try await loop.submit { () -> UVError? in
                    do throws(UVError) {
                        _ = try loop.readLines(from: pipe.readEnd, incompleteLineTimeout: .zero, onLine: { _ in }, onEnd: { _ in })
                        return nil
                    } catch {
                        return error
                    }
                }
                #expect(error?.code == .invalidArgument && "\(error!)".contains("incompleteLineTimeout 0.0 seconds must be positive"), "\(String(describing: error))")
                pipe.close()
            }
        }
    }

    @Suite("Signals")
    struct SignalTests {
        @Test("SIGUSR1 sent to the process reaches a watcher callback and a signal sequence")
        func sigusr1ReachesWatchers() async throws {
            try await withLoop { loop async throws in
                let sequence = try await loop.signals(.user1)
                let calledBack = Mutex<CheckedContinuation<Void, Never>?>(nil)
                let watcher = try await loop.submit {
                    try loop.watchSignal(.user1) {
                        calledBack.withLock { continuation in
                            continuation?.resume()
                            continuation = nil
                        }
                    }
                }
                // Both must see it: the callback resumes this wait, the sequence yields an element.
                await withCheckedContinuation { continuation in
                    calledBack.withLock { $0 = continuation }
                    kill(getpid(), SIGUSR1)
                }
                var iterator = sequence.makeAsyncIterator()
                #expect(await iterator.next() == .user1)
                try await loop.submit { watcher.cancel() }
            }
        }

        @Test("SIGUSR1 after every watcher closed and the loop stopped does not kill the process")
        func sigusr1AfterWatchersClosedIsHarmless() async throws {
            try await withLoop(name: "usr1-first") { loop async throws in
                let sequence = try await loop.signals(.user1)
                kill(getpid(), SIGUSR1)
                var iterator = sequence.makeAsyncIterator()
                #expect(await iterator.next() == .user1)
            }
            // Every watcher of the first loop is closed now: libuv would have restored SIG_DFL (which kills).
            #expect(cws_signal_is_default(SIGUSR1) == 0)
            kill(getpid(), SIGUSR1)
            // A second loop receives the next one, so the first one was handled by then and we are alive.
            try await withLoop(name: "usr1-second") { loop async throws in
                let sequence = try await loop.signals(.user1)
                kill(getpid(), SIGUSR1)
                var iterator = sequence.makeAsyncIterator()
                #expect(await iterator.next() == .user1)
            }
            #expect(cws_signal_is_default(SIGUSR1) == 0)
        }

        @Test("a signal sequence finishes when the loop shuts down")
        func sequenceFinishesAtShutdown() async throws {
            let loop = try UVEventLoop(name: "seq-finish")
            let sequence = try await loop.signals(.user2)
            let consumer = Task {
                var count = 0
                for await _ in sequence { count += 1 }
                return count
            }
            try await loop.shutdown()
            #expect(await consumer.value == 0)
        }

        @Test("a cancelled consumer stops its watcher")
        func cancellingConsumerStopsWatcher() async throws {
            try await withLoop { loop async throws in
                let sequence = try await loop.signals(.user2)
                let consumer = Task {
                    for await _ in sequence {}
                }
                consumer.cancel()
                await consumer.value
                // The watcher's cancellation hopped to the loop; once the loop ran past it, nothing is open.
                _ = try await loop.submit { 0 }
                #expect(try await openHandles(loop) == 0)
            }
        }

        @Test("watching after shutdown began fails with loopStopped")
        func watchingAfterShutdownFails() async throws {
            let loop = try UVEventLoop(name: "late-watch")
            try await loop.shutdown()
            await #expect(throws: UVError.self) {
                _ = try await loop.signals(.user2)
            }
            do throws(UVError) {
                _ = try await loop.signals(.user2)
            } catch {
                #expect(error.code == .loopStopped)
            }
        }
    }
}
