import CWorkerSupport
import Synchronization
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// Every suite of this target runs one test at a time: they spawn children, send process-wide signals and
/// read `/proc`, and would see each other's processes otherwise.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct UVConcurrencyTests {}

/// An actor whose executor is a loop.
actor LoopActor {
    let loop: UVEventLoop
    var log: [Int] = []

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.loop.asUnownedSerialExecutor() }

    init(loop: UVEventLoop) {
        self.loop = loop
    }

    func record(_ value: Int) {
        self.log.append(value)
    }

    func threadID() -> pid_t {
        cws_gettid()
    }

    func isOnLoopThread() -> Bool {
        self.loop.inEventLoop
    }
}

/// Runs `body` with a fresh loop and shuts it down afterwards, whatever happens.
func withLoop(
    name: String = "test-loop",
    _ body: (UVEventLoop) async throws -> Void
) async throws {
    let loop = try UVEventLoop(name: name)
    do {
        try await body(loop)
        try await loop.shutdown()
    } catch {
        try? await loop.shutdown()
        throw error
    }
}

/// Spawns on the loop and waits for the exit.
func run(_ loop: UVEventLoop, _ options: UVSpawnOptions) async throws -> UVExitStatus {
    let process = try await loop.spawnProcess(options)
    return try await process.waitForExit()
}

/// Reads `/proc/<pid>/stat`: the process state letter and parent pid, or nil when no such process exists.
func procStat(_ pid: pid_t) -> (state: Character, parent: pid_t)? {
    guard let file = fopen("/proc/\(pid)/stat", "re") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 1024)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so split after the last ')'.
    guard let close = line.lastIndex(of: ")") else { return nil }
    let fields = line[line.index(after: close)...].split(separator: " ")
    guard fields.count >= 2, let state = fields[0].first, let parent = pid_t(fields[1]) else { return nil }
    return (state, parent)
}

/// The zombie children of this process, read from `/proc`.
func zombieChildren(among pids: some Sequence<pid_t>) -> [pid_t] {
    let me = getpid()
    return pids.filter { pid in
        guard let stat = procStat(pid) else { return false }
        return stat.state == "Z" && stat.parent == me
    }
}

/// A Sendable, lock-protected box for collecting values from callbacks.
final class Collector<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])

    func append(_ value: Value) { self.values.withLock { $0.append(value) } }

    var all: [Value] { self.values.withLock { $0 } }
}

/// The loop's open handle count, read on the loop thread.
func openHandles(_ loop: UVEventLoop) async throws -> Int {
    try await loop.submit { loop.openHandleCount }
}
