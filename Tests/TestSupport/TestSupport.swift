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

/// The lines a process writes to `descriptor`, up to and including the line `last` (or all of them, if it ends
/// without writing it). The reader owns `descriptor` from then on.
public func readLines(until last: String, on loop: UVEventLoop, from descriptor: Int32) async throws -> [String] {
    try await withCheckedThrowingContinuation { done in
        loop.execute {
            var lines: [String] = []
            var finished = false
            do {
                _ = try loop.readLines(from: descriptor) { line in
                    lines.append(line)
                    if line == last, !finished {
                        finished = true
                        done.resume(returning: lines)
                    }
                } onEnd: { _ in
                    if !finished {
                        finished = true
                        done.resume(returning: lines)
                    }
                }
            } catch {
                done.resume(throwing: error)
            }
        }
    }
}

/// This process's open descriptors, from /proc/self/fd (less the one reading it).
public func openDescriptors() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        if entry.pointee.d_name.0 != 0x2e { count += 1 }  // not "." or ".."
    }
    return count - 1
}

/// This process's resident memory in KiB, from /proc/self/statm (its second field, in pages).
public func residentKiB() -> Int {
    guard let file = fopen("/proc/self/statm", "re") else { return -1 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, 128, file) != nil else { return -1 }
    let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return -1 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
}

/// Starts `executable` detached on a loop of its own, its standard output to a pipe, and returns the loop, the
/// process and the lines it wrote up to and including `last`. Shut the loop down when done.
public func startProgram(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String] = ["PATH": "/usr/bin:/bin"],
    until last: String
) async throws -> (loop: UVEventLoop, process: UVChildProcess, lines: [String]) {
    let loop = try UVEventLoop(name: "program")
    let output = try UVPipePair()
    var options = UVSpawnOptions(executable: executable, arguments: arguments, environment: environment, detached: true)
    options.descriptors = [0: 0, 1: output.writeEnd]
    let spawnOptions = options
    let process = try await loop.submit { try loop.spawn(spawnOptions) }
    output.closeWriteEnd()
    let lines = try await readLines(until: last, on: loop, from: output.readEnd)
    return (loop, process, lines)
}

/// Runs `body` while this process may open exactly one more descriptor: a pipe (two descriptors) then fails with
/// EMFILE, while libdispatch can still open the one file it needs to watch its thread pool (it traps when that
/// fails: a Swift process at its descriptor limit can die in Dispatch whatever else it does).
public func withOneFreeDescriptor<Result>(_ body: () async throws -> Result) async rethrows -> Result {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let lowestFree = dup(0)
    close(lowestFree)
    var lowered = limit
    lowered.rlim_cur = rlim_t(lowestFree + 1)
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lowered)
    defer { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
    return try await body()
}

/// The directory of the running test binary or executable, where SwiftPM puts the package's executables too.
public let buildDirectory: String = {
    let me = CommandLine.arguments[0]
    return me.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
}()
