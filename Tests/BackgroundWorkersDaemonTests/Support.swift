import BackgroundWorkers
import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

let bgworkerd = "\(buildDirectory)/bgworkerd"
let bgworkerctl = "\(buildDirectory)/bgworkerctl"

/// A program running in the background whose output (standard output and error) is collected line by line,
/// with waits for a line containing a text: `bgworkerd`, or a control client.
final class RunningProgram: Sendable {
    private struct State {
        /// Reaped: its pid may belong to another process now, so it is never signalled again.
        var reaped = false
        /// Its exit status, once ``exit()`` returned (the loop is stopped then: later calls answer from here).
        var exitStatus: UVExitStatus?
    }

    let loop: UVEventLoop
    let process: UVChildProcess
    private let collected = LineCollector()
    private let state = Mutex(State())

    /// Starts `executable` in a process group of its own.
    init(_ executable: String, _ arguments: [String], environment: [String: String] = ["PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]) async throws {
        self.loop = try UVEventLoop(name: "program")
        let output = try UVPipePair()
        var options = UVSpawnOptions(executable: executable, arguments: arguments, environment: environment, detached: true)
        options.descriptors = [1: output.writeEnd, 2: output.writeEnd]
        let spawnOptions = options
        let loop = self.loop
        self.process = try await loop.submit { try loop.spawn(spawnOptions) }
        output.closeWriteEnd()
        let descriptor = output.readEnd
        let collected = self.collected
        try await loop.submit {
            _ = try loop.readLines(from: descriptor, maxLineLength: 1 << 20) { line in
                collected.add(line)
            } onEnd: { _ in
                collected.end()
            }
        }
    }

    /// Every line so far.
    var lines: [String] { self.collected.lines }

    /// The output so far, one string.
    var output: String { self.lines.joined(separator: "\n") }

    /// Waits for a line containing `text` (one already written counts); false when the output ended first.
    func waitFor(_ text: String) async -> Bool {
        await self.collected.waitFor(text)
    }

    /// Waits for the process's exit and for the end of its output; returns the exit status.
    func exit() async throws -> UVExitStatus {
        if let status = self.state.withLock({ $0.exitStatus }) { return status }
        let status = try await self.process.waitForExit()
        self.state.withLock { $0.reaped = true }
        _ = await self.waitFor("\u{0}never printed\u{0}")
        try await self.loop.shutdown()
        self.state.withLock { $0.exitStatus = status }
        return status
    }

    /// Sends `signal` to the process (it is ours and not reaped until ``exit()``, so the pid is its own).
    func signal(_ signal: UVSignal) throws {
        guard !self.state.withLock({ $0.reaped }) else { return }
        guard kill(self.process.pid, signal.rawValue) == 0 else { throw UVError(.signalFailed, errno: errno, context: "kill \(self.process.pid)") }
    }
}

/// A running `bgworkerd` on a socket in a folder of the test's own; stopped with SIGINT (fast) at the end if
/// the test did not stop it.
func withDaemon(
    config: String? = nil,
    extraArguments: [String] = [],
    _ body: (RunningProgram, String, String) async throws -> Void
) async throws {
    try await withTemporaryFolder { folder in
        let socket = "\(folder)/run/control.sock"
        var arguments = ["--socket", socket]
        if let config {
            let file = "\(folder)/bgworkerd.yaml"
            try writeFile(file, config)
            arguments += ["--config", file]
        }
        let daemon = try await RunningProgram(bgworkerd, arguments + extraArguments)
        let ready = await daemon.waitFor("bgworkerd ready")
        #expect(ready, "bgworkerd did not start: \(daemon.output)")
        do {
            if ready { try await body(daemon, socket, folder) }
        } catch {
            try? daemon.signal(.interrupt)
            _ = try? await daemon.exit()
            throw error
        }
        try? daemon.signal(.interrupt)  // fails harmlessly when the test already stopped it
        _ = try await daemon.exit()
        #expect(access(socket, F_OK) != 0, "the socket was left behind")
    }
}

/// Runs `bgworkerctl --socket SOCKET ARGUMENTS...`; its exit code and output.
func ctl(_ socket: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    guard let command = arguments.first else { return (64, "") }
    return try runProgram(bgworkerctl, [command, "--socket", socket] + arguments.dropFirst())
}

func writeFile(_ path: String, _ text: String) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw UVError(.pipeFailed, errno: errno, context: "writing \(path)") }
    defer { close(descriptor) }
    let bytes = Array(text.utf8)
    guard write(descriptor, bytes, bytes.count) == bytes.count else { throw UVError(.pipeFailed, errno: errno, context: "writing \(path)") }
}

func readFile(_ path: String) -> String? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = read(descriptor, &chunk, chunk.count)
        guard count > 0 else { break }
        bytes.append(contentsOf: chunk[..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}
