import CWorkerSupport
import Synchronization
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

// Helpers shared by the test targets that spawn real processes.

/// Reads `/proc/<pid>/stat`: the process state letter and parent pid, or nil when no such process exists.
public func procStat(_ pid: pid_t) -> (state: Character, parent: pid_t)? {
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
public func zombieChildren(among pids: some Sequence<pid_t>) -> [pid_t] {
    let me = getpid()
    return pids.filter { pid in
        guard let stat = procStat(pid) else { return false }
        return stat.state == "Z" && stat.parent == me
    }
}

/// A Sendable, lock-protected box for collecting values from callbacks.
public final class Collector<Value: Sendable>: Sendable {
    /// Creates an empty collector.
    public init() {}

    private let values = Mutex<[Value]>([])

    /// Appends a value.
    public func append(_ value: Value) { self.values.withLock { $0.append(value) } }

    /// Every value so far, in order.
    public var all: [Value] { self.values.withLock { $0 } }
}


/// Spawns `options` (whose standard output is `pipe`'s write end) and returns every line it writes.
public func readAllLines(_ loop: UVEventLoop, _ pipe: UVPipePair, _ options: UVSpawnOptions) async throws -> [String] {
    try await withCheckedThrowingContinuation { (result: CheckedContinuation<[String], any Error>) in
        loop.execute {
            do {
                try loop.spawn(options)
                pipe.closeWriteEnd()
                var lines: [String] = []
                _ = try loop.readLines(from: pipe.readEnd) { line in
                    lines.append(line)
                } onEnd: { _ in
                    result.resume(returning: lines)
                }
            } catch {
                result.resume(throwing: error)
            }
        }
    }
}

/// Spawns `options` (whose standard output is `pipe`'s write end) and returns the first line it writes.
public func readFirstLine(_ loop: UVEventLoop, _ pipe: UVPipePair, _ options: UVSpawnOptions) async throws -> String {
    try await withCheckedThrowingContinuation { (result: CheckedContinuation<String, any Error>) in
        loop.execute {
            do {
                try loop.spawn(options)
                pipe.closeWriteEnd()
                var first: String?
                _ = try loop.readLines(from: pipe.readEnd) { line in
                    if first == nil { first = line }
                } onEnd: { _ in
                    result.resume(returning: first ?? "")
                }
            } catch {
                result.resume(throwing: error)
            }
        }
    }
}
