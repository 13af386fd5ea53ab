import CWorkerSupport
import Logging
import Synchronization
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

// Helpers shared by the test targets that spawn real processes.

/// Reads `/proc/<pid>/stat`: the process state letter, parent pid and process group, or nil when no such process
/// exists.
public func procStat(_ pid: pid_t) -> (state: Character, parent: pid_t, group: pid_t)? {
    guard let file = fopen("/proc/\(pid)/stat", "re") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 1024)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // "pid (comm) S ppid pgrp ...": comm may contain spaces and parentheses, so split after the last ')'.
    guard let close = line.lastIndex(of: ")") else { return nil }
    let fields = line[line.index(after: close)...].split(separator: " ")
    guard fields.count >= 3, let state = fields[0].first, let parent = pid_t(fields[1]), let group = pid_t(fields[2]) else {
        return nil
    }
    return (state, parent, group)
}

/// The processes whose process group is `group`, read from `/proc`.
public func processes(inGroup group: pid_t) -> [pid_t] {
    (directoryEntries("/proc") ?? []).compactMap { pid_t($0) }.filter { procStat($0)?.group == group }
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

/// A process's open descriptors (this process's by default, less the one reading them), from /proc/PID/fd; -1
/// when they cannot be read.
public func openDescriptors(of pid: pid_t? = nil) -> Int {
    let count = entryCount("/proc/\(pid.map(String.init) ?? "self")/fd")
    return pid == nil && count > 0 ? count - 1 : count
}

/// A process's threads, from /proc/PID/task; -1 when they cannot be read.
public func threads(of pid: pid_t) -> Int {
    entryCount("/proc/\(pid)/task")
}

/// The entries of a folder, without "." and ".."; -1 when it cannot be read.
private func entryCount(_ path: String) -> Int {
    directoryEntries(path)?.count ?? -1
}

/// The names in a folder, without "." and ".."; nil when it cannot be read.
public func directoryEntries(_ path: String) -> [String]? {
    guard let directory = opendir(path) else { return nil }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// A process's resident memory in KiB (this process's by default), from /proc/PID/statm (its second field, in
/// pages); -1 when it cannot be read.
public func residentKiB(of pid: pid_t? = nil) -> Int {
    guard let file = fopen("/proc/\(pid.map(String.init) ?? "self")/statm", "re") else { return -1 }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 128)
    guard fgets(&buffer, 128, file) != nil else { return -1 }
    let fields = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return -1 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
}

/// The files a process has mapped (the paths in /proc/PID/maps), each once.
public func mappedFiles(of pid: pid_t) -> Set<String> {
    guard let file = fopen("/proc/\(pid)/maps", "re") else { return [] }
    defer { fclose(file) }
    var files: Set<String> = []
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, 4096, file) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let slash = line.firstIndex(of: "/") { files.insert(String(line[slash...])) }
    }
    return files
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

/// A folder of its own under /tmp with a short path (Unix socket paths must stay under 108 bytes), removed
/// with what is in it after `body`.
public func withTemporaryFolder<Result>(_ body: (String) async throws -> Result) async rethrows -> Result {
    var template = Array("/tmp/bgw-XXXXXX".utf8CString)
    let folder = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    defer {
        for name in directoryEntries(folder) ?? [] { unlink("\(folder)/\(name)") }
        rmdir(folder)
    }
    return try await body(folder)
}

/// A client connection to a Unix socket that reads and writes raw bytes, blocking with deadlines: for
/// throwing malformed messages at a server and reading exactly what it answers.
public final class RawUnixConnection {
    public let descriptor: Int32
    private var buffer: [UInt8] = []

    /// Connects, or throws the errno.
    public init(path: String) throws {
        let descriptor = cws_unix_connect(path)
        guard descriptor >= 0 else { throw UVError(.pipeFailed, errno: -descriptor, context: "connecting to '\(path)'") }
        self.descriptor = descriptor
    }

    deinit { Glibc.close(self.descriptor) }

    /// Writes every byte (false when the peer closed).
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(self.descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EAGAIN || errno == EINTR {
                    var entry = pollfd(fd: self.descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&entry, 1, 1000)
                    continue
                }
                return false
            }
            offset += written
        }
        return true
    }

    /// Writes a line (a newline is added).
    @discardableResult
    public func send(line: String) -> Bool { self.send(Array(line.utf8) + [10]) }

    /// The next line, nil when the peer closed first or nothing came within `timeout` seconds.
    public func readLine(timeout: Double = 10) -> String? {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while true {
            if let newline = self.buffer.firstIndex(of: 10) {
                let line = String(decoding: self.buffer[..<newline], as: UTF8.self)
                self.buffer.removeSubrange(...newline)
                return line
            }
            guard self.fill(until: deadline) else { return nil }
        }
    }

    /// Whether the peer closed the connection within `timeout` seconds (what is still unread is dropped).
    public func closedByPeer(timeout: Double = 10) -> Bool {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while self.fill(until: deadline) { self.buffer.removeAll() }
        return self.peerClosed
    }

    private var peerClosed = false

    /// Reads what is there; false at end of file, on an error or at the deadline.
    private func fill(until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return false }
            var entry = pollfd(fd: self.descriptor, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            let ready = poll(&entry, 1, milliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return false }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { Glibc.read(self.descriptor, $0.baseAddress, $0.count) }
            if count < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            guard count > 0 else {
                self.peerClosed = true  // end of file, or a reset
                return false
            }
            self.buffer.append(contentsOf: chunk[..<count])
            return true
        }
    }
}

/// Runs a program to its end (the project's posix_spawn, then waitpid; standard output and error to one
/// file) and returns its exit code (128 + N for a signal) and what it printed.
public func runProgram(_ executable: String, _ arguments: [String], environment: [String] = ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"]) throws -> (status: Int32, output: String) {
    var template = Array("/tmp/bgw-out-XXXXXX".utf8CString)
    let outputFD = mkstemp(&template)
    guard outputFD >= 0 else { throw UVError(.pipeFailed, errno: errno, context: "mkstemp") }
    let outputPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    defer {
        close(outputFD)
        unlink(outputPath)
    }
    func cStrings(_ strings: [String]) -> [UnsafeMutablePointer<CChar>?] {
        strings.map { strdup($0) } + [nil]
    }
    let argv = cStrings([executable] + arguments)
    defer { argv.forEach { free($0) } }
    let environ = cStrings(environment)
    defer { environ.forEach { free($0) } }
    var pid: pid_t = 0
    var pidfd: Int32 = -1
    let error = cws_spawn(executable, argv, environ, nil, 0, 0, [1, 2], [outputFD, outputFD], 2, &pid, &pidfd)
    guard error == 0 else { throw UVError(.spawnFailed, errno: error, context: "starting \(executable)") }
    close(pidfd)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    var text: [UInt8] = []
    let reader = open(outputPath, O_RDONLY | O_CLOEXEC)
    if reader >= 0 {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(reader, &chunk, chunk.count)
            guard count > 0 else { break }
            text.append(contentsOf: chunk[..<count])
        }
        close(reader)
    }
    let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (code, String(decoding: text, as: UTF8.self))
}

/// Lines as they come (a program's output, log messages), and waits for a line containing a text. A wait
/// ends with true once enough such lines came, false when no more lines will come (``end()``) or the waiting
/// task is cancelled (a test's time limit cancels it).
public final class LineCollector: Sendable {
    private struct Waiter {
        let id: Int
        let text: String
        let count: Int
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var lines: [String] = []
        var ended = false
        var waiters: [Waiter] = []
        var nextID = 0

        func occurrences(of text: String) -> Int { self.lines.count { $0.contains(text) } }
    }

    private let state = Mutex(State())

    public init() {}

    /// Every line so far.
    public var lines: [String] { self.state.withLock { $0.lines } }

    /// Adds a line; the waits it completes end.
    public func add(_ line: String) {
        let ready = self.state.withLock { state -> [Waiter] in
            state.lines.append(line)
            let lines = state.lines
            let satisfied = { (waiter: Waiter) in line.contains(waiter.text) && lines.count { $0.contains(waiter.text) } >= waiter.count }
            let matched = state.waiters.filter(satisfied)
            state.waiters.removeAll(where: satisfied)
            return matched
        }
        ready.forEach { $0.continuation.resume(returning: true) }
    }

    /// No more lines will come: every wait still open ends with false.
    public func end() {
        let waiters = self.state.withLock { state in
            state.ended = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        waiters.forEach { $0.continuation.resume(returning: false) }
    }

    /// Returns true once `count` lines containing `text` came (those already there count).
    @discardableResult
    public func waitFor(_ text: String, count: Int = 1) async -> Bool {
        let id = self.state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> Bool? in
                    if state.occurrences(of: text) >= count { return true }
                    if state.ended || Task.isCancelled { return false }
                    state.waiters.append(Waiter(id: id, text: text, count: count, continuation: continuation))
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(returning: false)
        }
    }
}

/// Collects log messages and lets a test await one.
public final class LogCollector: Sendable {
    private let messages = LineCollector()

    public init() {}

    /// A logger whose messages (debug and above) this collects.
    public var logger: Logger {
        Logger(label: "collector") { _ in CollectingHandler(collector: self) }
    }

    /// Every message so far.
    public var lines: [String] { self.messages.lines }

    /// Adds a message.
    public func add(_ message: String) {
        self.messages.add(message)
    }

    /// Returns true once `count` messages containing `text` were logged, false if the task was cancelled first
    /// (a test's time limit cancels it).
    @discardableResult
    public func waitFor(_ text: String, count: Int = 1) async -> Bool {
        await self.messages.waitFor(text, count: count)
    }
}

/// The log handler behind ``LogCollector/logger``.
struct CollectingHandler: LogHandler {
    let collector: LogCollector
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        self.collector.add("\(event.message)")
    }
}
