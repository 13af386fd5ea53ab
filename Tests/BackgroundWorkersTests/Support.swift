import BackgroundWorkers
import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// Every suite here spawns real workers and sends process-wide signals: one test at a time.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct SupervisorTests {}

/// A worker running a shell script. The script sees the worker contract (BGW_* variables, descriptors 3 and 4).
func shellWorker(_ name: String, _ script: String) -> BackgroundWorker {
    var worker = BackgroundWorker(name: name, entryPoint: .executable("/bin/sh", arguments: ["-c", script]))
    worker.restartInterval = .never
    worker.stopGracePeriod = .seconds(5)
    return worker
}

/// Scripts for test workers.
enum Script {
    /// Runs until signalled.
    static let sleepForever = "exec sleep 1000"
    /// Reports readiness, then runs until signalled.
    static let readyThenSleep = "echo READY=1 >&4; exec sleep 1000"
    /// Ignores SIGUSR1 and says so (NOTIFY=1), reports readiness, then runs until signalled: a notify target.
    static let notifiableThenSleep = "trap '' USR1; echo NOTIFY=1 >&4; echo READY=1 >&4; exec sleep 1000"
    /// Ignores SIGTERM (its `sleep` children too): only SIGKILL stops it.
    static let ignoreTerm = "trap '' TERM; echo READY=1 >&4; while :; do sleep 1; done"
    /// Exits 1 on SIGTERM, as a worker using the runtime does (PostgreSQL's bgworker_die).
    static let exitOneOnTerm = "trap 'exit 1' TERM; echo READY=1 >&4; while :; do sleep 1 & wait $!; done"
    /// Dies by SIGSEGV.
    static let crash = "kill -SEGV $$"
    static func exit(_ code: Int) -> String { "exit \(code)" }
}

/// The two ways a supervisor starts workers: the semantic (PG-numbered) tests run under both.
let spawnStrategies: [UVSpawnStrategy] = [.libuv, .posixSpawn]

extension WorkerSupervisor.Configuration {
    /// The defaults, spawning with `strategy`.
    static func testing(_ strategy: UVSpawnStrategy) -> Self {
        var configuration = Self()
        configuration.spawnStrategy = strategy
        return configuration
    }
}

/// A supervisor with a configuration suited to tests: quiet, a manual clock where asked.
func withSupervisor(
    strategy: UVSpawnStrategy = .automatic,
    slots: Int = 8,
    clock: (any Clock<Duration>)? = nil,
    configure: (inout WorkerSupervisor.Configuration) -> Void = { _ in },
    _ body: (WorkerSupervisor) async throws -> Void
) async throws {
    var configuration = WorkerSupervisor.Configuration.testing(strategy)
    configuration.maxWorkerProcesses = slots
    configuration.random = { 0.5 }
    if let clock { configuration.clock = clock }
    configure(&configuration)
    try await withWorkerSupervisor(configuration: configuration) { supervisor in
        try await body(supervisor)
    }
}

/// Counts SIGUSR1 wake-ups of this process, through a UVEventLoop of the test's own.
final class WakeUps: Sendable {
    let loop: UVEventLoop
    let sequence: UVSignalSequence

    init() async throws {
        self.loop = try UVEventLoop(name: "test-usr1")
        self.sequence = try await self.loop.signals(.user1)
    }

    /// Waits for the next wake-up (signals coalesce: one or more arrived).
    func next() async -> Bool {
        var iterator = self.sequence.makeAsyncIterator()
        return await iterator.next() != nil
    }

    func close() async throws {
        try await self.loop.shutdown()
    }
}

/// Matches the event after `index` earlier matching ones; events are offered to it once each, in order.
final class CountingMatch: Sendable {
    private let index: Int
    private let matches: @Sendable (WorkerEvent) -> Bool
    private let seen = Mutex(0)

    init(index: Int, matches: @escaping @Sendable (WorkerEvent) -> Bool) {
        self.index = index
        self.matches = matches
    }

    @Sendable func callAsFunction(_ event: WorkerEvent) -> Bool {
        guard self.matches(event) else { return false }
        return self.seen.withLock { seen in
            defer { seen += 1 }
            return seen == self.index
        }
    }
}

/// Collects a supervisor's events from the moment it is created.
final class EventLog: Sendable {
    private struct State {
        var events: [WorkerEvent] = []
        var waiters: [(matches: @Sendable (WorkerEvent) -> Bool, continuation: CheckedContinuation<WorkerEvent, Never>)] = []
    }

    private let state = Mutex(State())

    init(_ supervisor: WorkerSupervisor) async {
        let sequence = await supervisor.events()
        Task {
            for await event in sequence { self.append(event) }
        }
    }

    private func append(_ event: WorkerEvent) {
        let ready = self.state.withLock { state -> [CheckedContinuation<WorkerEvent, Never>] in
            state.events.append(event)
            // Each waiter sees each event once.
            var ready: [CheckedContinuation<WorkerEvent, Never>] = []
            state.waiters.removeAll { waiter in
                guard waiter.matches(event) else { return false }
                ready.append(waiter.continuation)
                return true
            }
            return ready
        }
        for continuation in ready { continuation.resume(returning: event) }
    }

    var all: [WorkerEvent] { self.state.withLock { $0.events } }

    /// The first event, past or future, that matches.
    func first(where matches: @escaping @Sendable (WorkerEvent) -> Bool) async -> WorkerEvent {
        await withCheckedContinuation { continuation in
            let past = self.state.withLock { state -> WorkerEvent? in
                if let event = state.events.first(where: matches) { return event }
                state.waiters.append((matches, continuation))
                return nil
            }
            if let past { continuation.resume(returning: past) }
        }
    }

    /// The delays of the first `count` restarts scheduled for `name`, past or future. `clock` is advanced past
    /// each delay as soon as it is scheduled, so that the next one comes.
    func restartDelays(of name: String, count: Int, advancing clock: ManualClock) async -> [Duration] {
        var delays: [Duration] = []
        for index in 0..<count {
            let event = await self.nth(index) { event in
                guard event.name == name, case .restartScheduled = event.kind else { return false }
                return true
            }
            guard case .restartScheduled(let after) = event.kind else { return delays }
            delays.append(after)
            if after > .zero {
                await clock.waitForSleepers(1)
                clock.advance(by: after)
            }
        }
        return delays
    }

    /// The event after `index` earlier ones that match (0: the first), past or future.
    func nth(_ index: Int, where matches: @escaping @Sendable (WorkerEvent) -> Bool) async -> WorkerEvent {
        await self.first(where: CountingMatch(index: index, matches: matches).callAsFunction)
    }

    /// The pid of the first start of `name` other than `excluded`.
    func startedPid(of name: String, other excluded: Int32? = nil) async -> Int32 {
        let event = await self.first { event in
            guard event.name == name, case .started(let pid) = event.kind else { return false }
            return pid != excluded
        }
        guard case .started(let pid) = event.kind else { return -1 }
        return pid
    }

    func kinds(of name: String) -> [WorkerEvent.Kind] {
        self.all.filter { $0.name == name }.map(\.kind)
    }
}

/// A clock that only moves when a test says so.
final class ManualClock: Clock, @unchecked Sendable {
    // @unchecked Sendable: all state is behind `state`'s lock.
    struct Instant: InstantProtocol, Hashable {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - self.offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct Sleeper {
        let id: UInt64
        let deadline: Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        var sleeperWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())

    var now: Instant { self.state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = self.state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (resumeNow, ready) = self.state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if deadline <= state.now { return (true, []) }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    let count = state.sleepers.count
                    let ready = state.sleeperWaiters.filter { count >= $0.count }.map(\.continuation)
                    state.sleeperWaiters.removeAll { count >= $0.count }
                    return (false, ready)
                }
                if resumeNow { continuation.resume() }
                for waiter in ready { waiter.resume() }
            }
        } onCancel: {
            let sleeper = self.state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Waits until at least `count` sleepers are waiting on this clock.
    func waitForSleepers(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = self.state.withLock { state -> Bool in
                if state.sleepers.count >= count { return true }
                state.sleeperWaiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// The deadlines of the current sleepers, relative to now.
    var pendingDelays: [Duration] {
        self.state.withLock { state in state.sleepers.map { state.now.duration(to: $0.deadline) } }
    }

    /// Moves time forward and wakes every sleeper that is due.
    func advance(by duration: Duration) {
        let due = self.state.withLock { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let due = state.sleepers.filter { $0.deadline <= state.now }
            state.sleepers.removeAll { $0.deadline <= state.now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}

/// Whether a process with this pid exists (a zombie counts).
func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

/// The number of open descriptors of this process.
func openDescriptorCount() -> Int {
    var count = 0
    for fd in Int32(0)..<4096 where cws_is_cloexec(fd) >= 0 { count += 1 }
    return count
}

/// The error a registration is refused with, or nil when it was accepted.
func refusal(_ supervisor: WorkerSupervisor, _ worker: BackgroundWorker) async -> SupervisorError? {
    do {
        _ = try await supervisor.register(worker)
        return nil
    } catch {
        return error
    }
}

/// Proves that every process of a worker's group died: the worker opens a FIFO as descriptor 5 before it
/// starts children, everything it starts inherits it, and the FIFO reaches end of file only when the last of
/// them is gone.
final class GroupProbe: Sendable {
    let path: String
    let readEnd: Int32

    init() throws {
        self.path = "/tmp/bgw-probe-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        guard mkfifo(self.path, 0o600) == 0 else { throw SupervisorError.probe("mkfifo \(self.path): errno \(errno)") }
        self.readEnd = open(self.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard self.readEnd >= 0 else { throw SupervisorError.probe("open \(self.path): errno \(errno)") }
    }

    /// A script prefix that holds the FIFO open in the worker and everything it starts.
    var prefix: String { "exec 5>\(self.path); " }

    /// Waits until every holder of the FIFO's write end is gone. Call once the worker reported readiness.
    func awaitAllGone() async throws -> UVLineReader.EndReason {
        let loop = try UVEventLoop(name: "probe")
        let fd = self.readEnd
        let reason: UVLineReader.EndReason = try await withCheckedThrowingContinuation { done in
            loop.execute {
                do {
                    _ = try loop.readLines(from: fd, onLine: { _ in }, onEnd: { done.resume(returning: $0) })
                } catch {
                    done.resume(throwing: error)
                }
            }
        }
        try await loop.shutdown()
        unlink(self.path)
        return reason
    }
}

extension SupervisorError {
    static func probe(_ message: String) -> any Error {
        struct ProbeError: Error, CustomStringConvertible { let description: String }
        return ProbeError(description: message)
    }
}

/// Runs the fixture supervisor (`Tests/Fixtures/FixtureSupervisor`) in a process of its own, for tests that change
/// process-wide state or count a whole process's descriptors, and returns what it printed and how it ended.
func runFixture(
    _ arguments: [String],
    strategy: UVSpawnStrategy = .automatic,
    environment: [String: String] = [:],
    program: String = "FixtureSupervisor"
) async throws -> (lines: [String], status: UVExitStatus) {
    let loop = try UVEventLoop(name: "fixture")
    let output = try UVPipePair()
    var options = UVSpawnOptions(
        executable: buildDirectory + "/" + program,
        arguments: arguments,
        environment: ["PATH": "/usr/bin:/bin", "FIXTURE_SPAWN_STRATEGY": "\(strategy)"].merging(environment) { _, new in new },
        detached: true
    )
    options.descriptors = [0: 0, 1: output.writeEnd]  // its log lines (standard error) are not wanted here
    let spawnOptions = options
    do {
        let process = try await loop.submit { try loop.spawn(spawnOptions) }
        output.closeWriteEnd()
        let lines = Collector<String>()
        let reader = try await loop.submit {
            try loop.readLines(from: output.readEnd) { lines.append($0) } onEnd: { _ in }
        }
        // Its exit, not the end of its output: a worker it leaves behind may hold the pipe.
        let status = try await process.waitForExit()
        try await loop.submit { reader.drainAndClose() }
        try await loop.shutdown()
        return (lines.all, status)
    } catch {
        output.close()
        try? await loop.shutdown()
        throw error
    }
}

/// Writes small files for tests, without Foundation.
enum FileManagerLite {
    /// Writes `contents` to `path` with mode 0755; false on failure.
    static func writeExecutable(_ path: String, _ contents: String, mode: mode_t = 0o755) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(contents.utf8)
        return bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count && fchmod(fd, mode) == 0
    }
}
