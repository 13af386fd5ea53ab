import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension UVConcurrencyTests {
    @Suite("Processes")
    struct ProcessTests {
        static let strategies: [UVSpawnStrategy] = [.libuv, .posixSpawn]

        static func shell(_ script: String, detached: Bool = false, _ strategy: UVSpawnStrategy = .automatic) -> UVSpawnOptions {
            var options = UVSpawnOptions(executable: "/bin/sh", arguments: ["-c", script], detached: detached)
            options.strategy = strategy
            return options
        }

        static func program(_ executable: String, _ strategy: UVSpawnStrategy) -> UVSpawnOptions {
            var options = UVSpawnOptions(executable: executable)
            options.strategy = strategy
            return options
        }

        @Test("exit statuses: /bin/true, exit 1, exit 42, killed by SIGKILL", arguments: Self.strategies)
        func exitStatuses(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                #expect(try await run(loop, Self.program("/bin/true", strategy)) == .exited(0))
                #expect(try await run(loop, Self.shell("exit 1", strategy)) == .exited(1))
                #expect(try await run(loop, Self.shell("exit 42", strategy)) == .exited(42))
                #expect(try await run(loop, Self.shell("kill -9 $$", strategy)) == .signaled(.kill))
            }
        }

        @Test("the pid is known synchronously and the exit reaches onExit before waiters", arguments: Self.strategies)
        func pidAndOnExit(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let order = Collector<String>()
                let process = try await loop.submit {
                    try loop.spawn(Self.shell("exit 7", strategy)) { status in order.append("onExit \(status)") }
                }
                #expect(process.pid > 0)
                let status = try await process.waitForExit()
                order.append("waiter \(status)")
                #expect(order.all == ["onExit exited with code 7", "waiter exited with code 7"])
                #expect(try await loop.submit { process.exitStatus } == .exited(7))
            }
        }

        @Test("a missing executable is a synchronous ENOENT error, and nothing stays open", arguments: Self.strategies)
        func missingExecutable(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let error = try await loop.submit { () -> UVError? in
                    do throws(UVError) {
                        try loop.spawn(Self.program("/no/such/worker", strategy))
                        return nil
                    } catch {
                        return error
                    }
                }
                #expect(error?.code == .spawnFailed)
                #expect(error?.errno == ENOENT)
                #expect(error?.errnoName == "ENOENT")
                #expect(error?.description.contains("/no/such/worker") == true)
                #expect(try await openHandles(loop) == 0)
            }
        }

        @Test("a missing working directory is named as the missing file", arguments: Self.strategies)
        func missingWorkingDirectory(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                var options = Self.program("/bin/true", strategy)
                options.workingDirectory = "/no/such/directory"
                let spawnOptions = options
                let error = try await loop.submit { () -> UVError? in
                    do throws(UVError) {
                        try loop.spawn(spawnOptions)
                        return nil
                    } catch {
                        return error
                    }
                }
                #expect(error?.errno == ENOENT)
                #expect(error?.context == "spawning '/bin/true' in working directory '/no/such/directory', which does not exist")
            }
        }

        @Test("a file that is not executable is a synchronous EACCES error", arguments: Self.strategies)
        func notExecutable(strategy: UVSpawnStrategy) async throws {
            // mkstemp makes a file with mode 0600: not executable, even for root.
            var template = Array("/tmp/not-executable-XXXXXX".utf8CString)
            let fd = mkstemp(&template)
            try #require(fd >= 0)
            let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
            defer {
                close(fd)
                unlink(path)
            }
            try await withLoop { loop async throws in
                await #expect(throws: UVError(.spawnFailed, errno: EACCES, context: "spawning '\(path)'")) {
                    _ = try await loop.spawnProcess(Self.program(path, strategy))
                }
            }
        }

        @Test("malformed options are rejected before spawning, naming the value")
        func malformedOptions() async throws {
            try await withLoop { loop async throws in
                for options in [
                    UVSpawnOptions(executable: ""),
                    UVSpawnOptions(executable: "/bin/true", descriptors: [-1: 0]),
                    UVSpawnOptions(executable: "/bin/true", environment: ["A=B": "c"]),
                    UVSpawnOptions(executable: "/bin/true", arguments: ["a\u{0}b"]),
                ] {
                    do throws(UVError) {
                        _ = try await loop.spawnProcess(options)
                        Issue.record("spawned \(options)")
                    } catch {
                        #expect(error.code == .invalidArgument)
                    }
                }
            }
        }

        @Test("1,000 spawns leave no zombie and no open handle", arguments: Self.strategies)
        func thousandSpawnsNoZombies(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                var pids: [pid_t] = []
                for _ in 0..<10 {
                    let processes = try await loop.submit {
                        try (0..<100).map { _ in try loop.spawn(Self.program("/bin/true", strategy)) }
                    }
                    for process in processes {
                        #expect(try await process.waitForExit() == .exited(0))
                        pids.append(process.pid)
                    }
                }
                #expect(pids.count == 1000)
                #expect(zombieChildren(among: pids).isEmpty)
                #expect(try await openHandles(loop) == 0)
            }
        }

        @Test("a group signal reaches a grandchild", arguments: Self.strategies)
        func groupSignalReachesGrandchild(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                let lines = Collector<String>()
                var options = Self.shell("sleep 1000 & echo started; wait", detached: true, strategy)
                options.descriptors = [1: output.writeEnd, 2: 2]
                let spawnOptions = options
                let ended: UVLineReader.EndReason = try await withCheckedThrowingContinuation { ended in
                    loop.execute {
                        do {
                            let shell = try loop.spawn(spawnOptions)
                            _ = cws_close(output.writeEnd)
                            _ = try loop.readLines(from: output.readEnd) { line in
                                lines.append(line)
                                // The grandchild exists (it holds the pipe too): signal the whole group.
                                _ = try? shell.signalGroup(.terminate)
                            } onEnd: { reason in
                                ended.resume(returning: reason)
                            }
                        } catch {
                            ended.resume(throwing: error)
                        }
                    }
                }
                // End of file means every holder of the write end died, the grandchild `sleep` included.
                #expect(lines.all == ["started"])
                #expect(ended == .endOfFile)
            }
        }

        @Test("signalGroup on a child that is not detached is refused")
        func groupSignalNeedsDetached() async throws {
            try await withLoop { loop async throws in
                let process = try await loop.spawnProcess(Self.shell("exec sleep 1000"))
                let error = try await loop.submit { () -> UVError? in
                    do throws(UVError) {
                        try process.signalGroup(.terminate)
                        return nil
                    } catch {
                        return error
                    }
                }
                #expect(error?.code == .invalidArgument)
                #expect(try await loop.submit { try process.signal(.terminate) })
                #expect(try await process.waitForExit() == .signaled(.terminate))
                // After the reap, nothing is sent (the pid may be reused).
                #expect(try await loop.submit { try process.signal(.terminate) } == false)
            }
        }

        @Test("detached children get a session of their own; environment and working directory are applied", arguments: Self.strategies)
        func detachedEnvironmentAndDirectory(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                var options = Self.shell(#"echo "$(ps -o sid= -p $$ | tr -d ' ') $$ $GREETING $(pwd)""#, detached: true, strategy)
                options.environment = ["GREETING": "hello", "PATH": "/usr/bin:/bin"]
                options.workingDirectory = "/tmp"
                options.descriptors = [1: output.writeEnd, 2: 2]
                let line = try await readFirstLine(loop, output, options)
                let fields = line.split(separator: " ")
                #expect(fields.count == 4)
                #expect(fields.count == 4 && fields[0] == fields[1])  // session id == its own pid
                #expect(fields.count == 4 && fields[2] == "hello" && fields[3] == "/tmp")
            }
        }

        @Test("a base environment prepared once: the child gets it, with the options' own variables over it", arguments: Self.strategies)
        func baseEnvironment(strategy: UVSpawnStrategy) async throws {
            let base = try UVEnvironment(["PATH": "/usr/bin:/bin", "SHARED": "base", "REPLACED": "base"])
            #expect(throws: UVError.self) { try UVEnvironment(["A=B": "c"]) }
            #expect(throws: UVError.self) { try UVEnvironment(["": "c"]) }
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                var options = Self.shell("env | sort", strategy)
                options.baseEnvironment = base
                options.environment = ["REPLACED": "own", "OWN": "own"]
                options.descriptors = [1: output.writeEnd, 2: 2]
                let lines = try await readAllLines(loop, output, options).filter { !$0.hasPrefix("PWD=") && !$0.hasPrefix("SHLVL=") && !$0.hasPrefix("_=") }
                #expect(lines == ["OWN=own", "PATH=/usr/bin:/bin", "REPLACED=own", "SHARED=base"])
            }
        }

        @Test("a child gets the descriptors it was given and none of this package's", arguments: Self.strategies)
        func childGetsExactlyItsDescriptors(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                let extra = try UVPipePair()
                defer { extra.close() }
                // Descriptors of ours must not leak: the loop's own (epoll, eventfd, signal pipes, pidfds) and these
                // pipes' other ends, all close-on-exec. Descriptors that other code in this process left
                // inheritable (the test runner's sockets, say) are inherited by design: libuv has no hook to
                // close them. So every extra descriptor in the child must be one that is not close-on-exec here.
                // No pipeline in the script: the shell would hold the pipe's descriptors for a moment while `ls`
                // lists them.
                var options = Self.shell("ls -1 /proc/$$/fd", strategy)
                options.descriptors = [1: output.writeEnd, 2: 2, 5: extra.writeEnd]
                let lines = try await readAllLines(loop, output, options)
                let descriptors = Set(lines.compactMap { Int32($0) })
                #expect(descriptors.isSuperset(of: [0, 1, 2, 5]))
                let ours = descriptors.subtracting([0, 1, 2, 5]).filter { cws_is_cloexec($0) == 1 }
                #expect(ours.isEmpty, "close-on-exec descriptors of this process reached the child: \(ours)")
                #expect(!descriptors.contains(output.readEnd))
                #expect(!descriptors.contains(extra.readEnd))
                #expect(cws_is_cloexec(extra.writeEnd) == 1)
                #expect(cws_is_cloexec(extra.readEnd) == 1)
            }
        }

        @Test("descriptors can be permuted: each pipe goes to the other's descriptor number", arguments: Self.strategies)
        func descriptorPermutation(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let first = try UVPipePair()
                let second = try UVPipePair()
                defer {
                    first.close()
                    second.close()
                }
                let output = try UVPipePair()
                // Child descriptor A gets the pipe that is B in this process, and B the one that is A: a naive
                // sequence of dup2 calls would clobber one with the other.
                let (a, b) = (first.writeEnd, second.writeEnd)
                var options = Self.shell("echo first > /proc/self/fd/\(b); echo second > /proc/self/fd/\(a); echo done", strategy)
                options.descriptors = [1: output.writeEnd, 2: 2, b: a, a: b]
                #expect(try await readFirstLine(loop, output, options) == "done")
                var buffer = [UInt8](repeating: 0, count: 64)
                let firstCount = read(first.readEnd, &buffer, 64)
                #expect(firstCount == 6 && Array(buffer.prefix(6)) == Array("first\n".utf8))
                let secondCount = read(second.readEnd, &buffer, 64)
                #expect(secondCount == 7 && Array(buffer.prefix(7)) == Array("second\n".utf8))
            }
        }

        @Test("automatic picks posixSpawn where pidfds exist, libuv when a user switch is asked for")
        func automaticStrategy() async throws {
            try await withLoop { loop async throws in
                let plain = try await loop.spawnProcess(UVSpawnOptions(executable: "/bin/true"))
                #expect(plain.strategy == (cws_has_pidfd() == 1 ? .posixSpawn : .libuv))
                #expect(try await plain.waitForExit() == .exited(0))
                var switching = UVSpawnOptions(executable: "/bin/true")
                switching.userID = getuid()
                switching.groupID = getgid()
                let switched = try await loop.spawnProcess(switching)
                #expect(switched.strategy == .libuv)
                #expect(try await switched.waitForExit() == .exited(0))
                switching.strategy = .posixSpawn
                await #expect(throws: UVError.self) { _ = try await loop.spawnProcess(switching) }
            }
        }

        @Test("cancelling tasks that await exits resumes each exactly once and leaks nothing", arguments: Self.strategies)
        func cancellationRacesExits(strategy: UVSpawnStrategy) async throws {
            try await withLoop { loop async throws in
                let iterations = 300
                var cancelled = 0
                var completed = 0
                weak var lastProcess: UVChildProcess?
                for iteration in 0..<iterations {
                    let process = try await loop.spawnProcess(Self.program("/bin/true", strategy))
                    lastProcess = process
                    let resumes = Atomic<Int>(0)
                    let waiter = Task {
                        defer { resumes.add(1, ordering: .relaxed) }
                        return try await process.waitForExit()
                    }
                    // Vary where the cancellation lands relative to the exit.
                    if iteration % 3 == 0 { await Task.yield() }
                    if iteration % 3 != 2 { waiter.cancel() }
                    switch await waiter.result {
                    case .success(let status):
                        #expect(status == .exited(0))
                        completed += 1
                    case .failure(let error):
                        #expect(error is CancellationError)
                        cancelled += 1
                    }
                    #expect(resumes.load(ordering: .relaxed) == 1)
                    #expect(try await process.waitForExit() == .exited(0))
                }
                #expect(cancelled + completed == iterations)
                #expect(cancelled > 0)
                #expect(try await openHandles(loop) == 0)
                // The loop released the last process once it was reaped and every waiter was resumed.
                #expect(lastProcess == nil)
            }
        }

        @Test("shutdown with live handles returns promptly and cleanly", arguments: Self.strategies)
        func shutdownWithLiveHandles(strategy: UVSpawnStrategy) async throws {
            let loop = try UVEventLoop(name: "busy-loop-\(strategy)")
            let output = try UVPipePair()
            let quiet = try UVPipePair()  // its write end stays open here: only shutdown can end its reader
            defer { _ = cws_close(quiet.writeEnd) }
            let fired = Collector<String>()
            let exits = Collector<UVExitStatus>()
            let readerEnds = Collector<UVLineReader.EndReason>()
            var options = Self.shell("sleep 1000 & exec sleep 1000", detached: true, strategy)
            options.descriptors = [1: output.writeEnd, 2: 2]
            let spawnOptions = options
            let child = try await loop.submit {
                try loop.scheduleTimer(after: .seconds(3600)) { fired.append("timer") }
                _ = try loop.watchSignal(.user2) { fired.append("signal") }
                _ = try loop.readLines(from: quiet.readEnd, onLine: { _ in }, onEnd: { readerEnds.append($0) })
                return try loop.spawn(spawnOptions) { exits.append($0) }
            }
            output.close()
            let signals = try await loop.signals(.user2)
            #expect(try await openHandles(loop) == 5)

            let start = ContinuousClock.now
            try await loop.shutdown()
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(fired.all.isEmpty)
            #expect(exits.all == [.signaled(.kill)])
            #expect(readerEnds.all == [.closed])
            #expect(try await child.waitForExit() == .signaled(.kill))
            var iterator = signals.makeAsyncIterator()
            #expect(await iterator.next() == nil)
            #expect(zombieChildren(among: [child.pid]).isEmpty)
        }

        @Test("work enqueued after shutdown runs once, in order, isolated; libuv calls fail with loopStopped")
        func workAfterShutdown() async throws {
            let loop = try UVEventLoop(name: "stopped-loop")
            let actor = LoopActor(loop: loop)
            try await loop.shutdown()
            try await loop.shutdown()  // idempotent

            for value in 0..<100 { await actor.record(value) }
            #expect(await actor.log == Array(0..<100))
            #expect(await actor.isOnLoopThread())
            let error = try await loop.submit { () -> UVError? in
                do throws(UVError) {
                    try loop.scheduleTimer(after: .zero) {}
                    return nil
                } catch {
                    return error
                }
            }
            #expect(error?.code == .loopStopped)
            await #expect(throws: UVError.self) {
                _ = try await loop.spawnProcess(UVSpawnOptions(executable: "/bin/true"))
            }
        }

        @Test("jobs queued in the same batch as the shutdown run exactly once")
        func jobsBatchedWithShutdownRunOnce() async throws {
            for _ in 0..<20 {
                let loop = try UVEventLoop(name: "batched")
                let release = Atomic(false)
                let counts = Mutex([Int](repeating: 0, count: 100))
                // Hold the loop in a job while the shutdown and 100 more jobs queue up behind it, so that they are
                // drained as one batch.
                loop.execute {
                    while !release.load(ordering: .acquiring) {}
                }
                let stopper = Task.detached { try loop.syncShutdown() }
                while loop.isAcceptingWork {}  // the shutdown job is being enqueued
                for index in 0..<100 {
                    loop.execute { counts.withLock { $0[index] += 1 } }
                }
                release.store(true, ordering: .releasing)
                try await stopper.value
                _ = try await loop.submit { 0 }  // after shutdown: runs on the fallback thread, after the others
                #expect(counts.withLock { $0 } == [Int](repeating: 1, count: 100))
            }
        }

        @Test("an exit is reported while the loop is busy with other jobs")
        func readLinesAndEndOfFile() async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                var options = Self.shell("printf 'one\\ntwo\\r\\nthree'")
                options.descriptors = [1: output.writeEnd, 2: 2]
                let lines = Collector<String>()
                let spawnOptions = options
                let ended: UVLineReader.EndReason = try await withCheckedThrowingContinuation { ended in
                    loop.execute {
                        do {
                            try loop.spawn(spawnOptions)
                            _ = cws_close(output.writeEnd)
                            _ = try loop.readLines(from: output.readEnd) { lines.append($0) } onEnd: {
                                ended.resume(returning: $0)
                            }
                        } catch {
                            ended.resume(throwing: error)
                        }
                    }
                }
                #expect(lines.all == ["one", "two", "three"])
                #expect(ended == .endOfFile)
            }
        }

        @Test("drainAndClose delivers what an exited writer left in the pipe, before its reader's next turn")
        func drainAndClose() async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                var options = Self.shell("printf 'first\\nsecond'")
                options.descriptors = [1: output.writeEnd, 2: 2]
                let process = try await loop.spawnProcess(options)
                output.closeWriteEnd()
                #expect(try await process.waitForExit() == .exited(0))
                // Every writer gone: a child that another test forks at this moment (uv_spawn) holds every
                // descriptor of this process until it calls exec, this pipe's write end too.
                var hangUp = pollfd(fd: output.readEnd, events: 0, revents: 0)
                #expect(poll(&hangUp, 1, 10_000) == 1 && hangUp.revents & Int16(POLLHUP) != 0)
                let lines = Collector<String>()
                let ends = Collector<UVLineReader.EndReason>()
                try await loop.submit {
                    let reader = try loop.readLines(from: output.readEnd) { lines.append($0) } onEnd: { ends.append($0) }
                    reader.drainAndClose()  // in the same turn: nothing has been read by the loop yet
                }
                #expect(lines.all == ["first", "second"])
                #expect(ends.all == [.endOfFile])
            }
        }

        @Test("an overlong line ends reading with lineTooLong")
        func overlongLine() async throws {
            try await withLoop { loop async throws in
                let output = try UVPipePair()
                var options = Self.shell("echo ok; head -c 10000 /dev/zero | tr '\\0' x; echo; echo after")
                options.descriptors = [1: output.writeEnd, 2: 2]
                let lines = Collector<String>()
                let spawnOptions = options
                let ended: UVLineReader.EndReason = try await withCheckedThrowingContinuation { ended in
                    loop.execute {
                        do {
                            try loop.spawn(spawnOptions)
                            _ = cws_close(output.writeEnd)
                            _ = try loop.readLines(from: output.readEnd, maxLineLength: 100) { lines.append($0) } onEnd: {
                                ended.resume(returning: $0)
                            }
                        } catch {
                            ended.resume(throwing: error)
                        }
                    }
                }
                #expect(lines.all == ["ok"])
                #expect(ended == .lineTooLong(limit: 100))
            }
        }
    }
}
