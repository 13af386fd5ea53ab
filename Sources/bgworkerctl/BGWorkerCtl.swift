import ArgumentParser
import BackgroundWorkerControl
import BackgroundWorkers
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#endif

/// `bgworkerctl`: drives a running `bgworkerd` through its control socket.
@main
struct BGWorkerCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bgworkerctl",
        abstract: "Drive a running bgworkerd: list, register, wait for and terminate workers.",
        discussion: """
            Examples:
              bgworkerctl list
              bgworkerctl register --name report --restart-interval never -- /usr/bin/report --daily
              bgworkerctl wait started report && bgworkerctl terminate report
              bgworkerctl wait stopped report --timeout 30
              bgworkerctl register --name shell --linked -- /bin/sh -c 'exec sleep 600'   # ends with the command
              bgworkerctl events --follow
              bgworkerctl shutdown --mode smart

            A worker is named by its name, its slot (3) or its slot and generation (3/7). --json prints the
            daemon's answer as JSON on every command.

            Exit codes (for scripts):
              0   done
              1   the daemon refused the request (invalid registration, no free slot, shutting down, a limit)
              3   the daemon cannot be reached (not running, or this user may not use its socket)
              4   a wait timed out
              5   the worker (or the daemon) stopped before the awaited state
              6   no such worker
              64  the command line is wrong
            """,
        subcommands: [
            List.self, Status.self, Register.self, Wait.self, Terminate.self, Events.self, ResetBudget.self, Shutdown.self,
        ]
    )
}

/// The documented exit codes.
enum Exit {
    static let refused: Int32 = 1
    static let unreachable: Int32 = 3
    static let timedOut: Int32 = 4
    static let stopped: Int32 = 5
    static let unknownWorker: Int32 = 6
}

/// Options every command takes.
struct ClientOptions: ParsableArguments {
    @Option(help: "The daemon's control socket. Default: $BGWORKERD_SOCKET, or bgworkerd's default path.")
    var socket: String?

    @Flag(help: "Print the daemon's answer as JSON.")
    var json = false

    var path: String { self.socket ?? ControlSocketConfiguration.defaultPath }

    /// Connects, or ends the command with exit code 3 and a message saying what to do.
    func connect() async throws -> SupervisorClient {
        do {
            return try await SupervisorClient.connect(path: self.path, notifications: false)
        } catch {
            fail("cannot reach bgworkerd: \(error.message)")
            throw ExitCode(Exit.unreachable)
        }
    }

    /// Runs `body` with a connection; maps the daemon's refusals to the documented exit codes.
    func with<T>(_ body: (SupervisorClient) async throws -> T) async throws -> T {
        let client = try await self.connect()
        do {
            let value = try await body(client)
            await client.close()
            return value
        } catch let error as SupervisorError {
            await client.close()
            fail(error.message)
            throw ExitCode(exitStatus(for: error))
        } catch let error as CommandFailure {
            await client.close()
            fail(error.message)
            throw ExitCode(error.exitCode)
        } catch {
            await client.close()
            throw error
        }
    }

    func print<T: Encodable>(json value: T) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(value) { Swift.print(String(decoding: data, as: UTF8.self)) }
    }
}

func exitStatus(for error: SupervisorError) -> Int32 {
    switch error.code {
    case .workerStopped, .supervisorStopped: return Exit.stopped
    case .controlFailed:
        switch (error.underlying as? ControlError)?.code {
        case .timedOut?: return Exit.timedOut
        case .unknownWorker?: return Exit.unknownWorker
        case .limitReached?, .permissionDenied?, .invalidParams?: return Exit.refused
        default: return Exit.unreachable  // the connection ended
        }
    default: return Exit.refused
    }
}

func fail(_ message: String) {
    writeStandardError("bgworkerctl: \(message)\n")
}

/// A worker on the command line: `NAME`, `SLOT` or `SLOT/GENERATION`.
struct WorkerArgument: ExpressibleByArgument {
    let text: String
    init?(argument: String) {
        guard !argument.isEmpty else { return nil }
        self.text = argument
    }

    /// The reference; a bare slot is looked up in the daemon's list.
    func reference(_ client: SupervisorClient) async throws -> WorkerReference {
        let parts = self.text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, let slot = Int(parts[0]), let generation = UInt64(parts[1]) {
            return WorkerReference(slot: slot, generation: generation)
        }
        if let slot = Int(self.text) {
            guard let info = try await client.list().first(where: { $0.slot == slot }) else {
                throw CommandFailure(exitCode: Exit.unknownWorker, message: "no worker is registered in slot \(slot)")
            }
            return info.reference
        }
        return WorkerReference(name: self.text)
    }
}

/// A failure found on this side, with its exit code.
struct CommandFailure: Error {
    let exitCode: Int32
    let message: String
}

/// Seconds, for people: `42 s`, `3 min`, `2 h 5 min`.
func humanDuration(_ seconds: Double) -> String {
    let whole = Int(seconds)
    if whole < 120 { return "\(whole) s" }
    if whole < 7200 { return "\(whole / 60) min" }
    return "\(whole / 3600) h \((whole % 3600) / 60) min"
}

func describe(_ info: WorkerInfo) -> String {
    var lines = [
        "worker:      \(info.name)",
        "slot:        \(info.slot)/\(info.generation)",
        "status:      \(info.status)\(info.pid.map { " (pid \($0))" } ?? "")",
        "state:       \(info.detail)",
        "restarts:    \(info.restarts)",
    ]
    if let uptime = info.uptime { lines.append("uptime:      \(humanDuration(uptime))") }
    if let exit = info.lastExit { lines.append("last exit:   \(exit)") }
    if let error = info.lastReportedError { lines.append("last error:  \(error)") }
    return lines.joined(separator: "\n")
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the registered workers: slot, generation, name, pid, state, restarts, uptime, last exit."
    )
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let workers = try await self.options.with { try await $0.list() }
        if self.options.json { return self.options.print(json: workers) }
        var rows = [["SLOT", "GEN", "NAME", "PID", "STATE", "RESTARTS", "UPTIME", "LAST EXIT"]]
        for info in workers {
            rows.append([
                "\(info.slot)", "\(info.generation)", info.name, info.pid.map { "\($0)" } ?? "-", info.state.kind.rawValue,
                "\(info.restarts)", info.uptime.map(humanDuration) ?? "-", info.lastExit.map { "\($0)" } ?? "-",
            ])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max()! }
        for row in rows {
            print(zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: "  ").trimmingTrailingSpaces)
        }
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one worker's state.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "NAME, SLOT or SLOT/GENERATION.") var worker: WorkerArgument

    func run() async throws {
        let info = try await self.options.with { client in try await client.info(try await self.worker.reference(client)) }
        if self.options.json { return self.options.print(json: info) }
        print(describe(info))
    }
}

struct Register: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register a worker: an executable and its arguments after --, a built-in, or a library function.",
        discussion: """
            With --linked the command stays connected until the worker stops, and the daemon terminates the
            worker if the command goes away first (Ctrl-C, a killed shell): nothing is left behind.
            """
    )
    @OptionGroup var options: ClientOptions
    @Option(help: "The worker's name (at most 63 bytes).") var name: String
    @Option(help: "A worker built into the daemon's binary.") var builtin: String?
    @Option(help: "A shared library (with --function).") var library: String?
    @Option(help: "The library's C function.") var function: String?
    @Option(help: "Seconds between an exit 1 and the restart, or never.") var restartInterval: String = "never"
    @Option(help: "supervisorStart, consistentState or recoveryFinished.") var startTime: String?
    @Option(name: .customLong("flag"), help: "sharedMemoryAccess or databaseConnection; repeat for both.") var flags: [String] = []
    @Option(help: "The main argument (a 64-bit number).") var mainArgument: UInt64 = 0
    @Option(help: "Extra bytes for the worker, as text (at most 128 bytes).") var extra: String?
    @Flag(help: "The worker reports readiness (READY=1).") var ready = false
    @Option(help: "Seconds between SIGTERM and SIGKILL.") var grace: Double?
    @Flag(help: "Terminate the worker when this command ends; wait here until it stops.") var linked = false
    @Option(help: "Seconds to wait for a free slot when all are taken.") var waitForSlot: Double?
    @Argument(parsing: .captureForPassthrough, help: "-- EXECUTABLE [ARGUMENT...]") var command: [String] = []

    func worker() throws -> BackgroundWorker {
        var command = self.command
        if command.first == "--" { command.removeFirst() }
        let entryPoint: BackgroundWorker.EntryPoint
        switch (command.first, self.builtin, self.library) {
        case (let path?, nil, nil): entryPoint = .executable(path, arguments: Array(command.dropFirst()))
        case (nil, let name?, nil): entryPoint = .builtin(name)
        case (nil, nil, let path?):
            guard let function = self.function else { throw ValidationError("--library needs --function") }
            entryPoint = .library(path, function: function)
        default: throw ValidationError("give exactly one of: -- EXECUTABLE [ARGUMENT...], --builtin NAME, --library PATH --function NAME")
        }
        var worker = BackgroundWorker(name: self.name, entryPoint: entryPoint)
        if self.restartInterval == "never" {
            worker.restartInterval = .never
        } else if let seconds = Int(self.restartInterval) {
            worker.restartInterval = .seconds(seconds)
        } else {
            throw ValidationError("--restart-interval '\(self.restartInterval)' is not a whole number of seconds or never")
        }
        switch self.startTime {
        case nil: break
        case "supervisorStart": worker.startTime = .supervisorStart
        case "consistentState": worker.startTime = .consistentState
        case "recoveryFinished": worker.startTime = .recoveryFinished
        case let other?: throw ValidationError("--start-time '\(other)' is not supervisorStart, consistentState or recoveryFinished")
        }
        for flag in self.flags {
            switch flag {
            case "sharedMemoryAccess": worker.flags.insert(.sharedMemoryAccess)
            case "databaseConnection": worker.flags.insert(.databaseConnection)
            default: throw ValidationError("--flag '\(flag)' is not sharedMemoryAccess or databaseConnection")
            }
        }
        worker.mainArgument = self.mainArgument
        if let extra = self.extra { worker.extra = Array(extra.utf8) }
        worker.reportsReadiness = self.ready
        if let grace = self.grace {
            guard grace.isFinite, grace > 0, grace <= 3600 else { throw ValidationError("--grace \(grace) is outside (0, 3600] seconds") }
            worker.stopGracePeriod = .milliseconds(Int64(grace * 1000))
        }
        return worker
    }

    func run() async throws {
        let worker = try self.worker()
        let slotWait = Duration.milliseconds(Int64((self.waitForSlot ?? 0) * 1000))
        try await self.options.with { client in
            let handle = try await client.register(worker, notify: false, linked: self.linked, waitingForSlotUpTo: slotWait)
            let info = try await handle.info
            if self.options.json { self.options.print(json: info) } else { print("registered \(info.name) in slot \(info.slot)/\(info.generation): \(info.detail)") }
            guard self.linked else { return }
            fflush(nil)  // the line must be out now, not when the worker ends
            _ = try await handle.waitForShutdown()
            let end = try await handle.info
            if !self.options.json { print("\(end.name): \(end.detail)") }
        }
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until a worker has started, is ready, or has stopped.",
        discussion: "On a terminal a progress line counts the seconds; in a pipe it is quiet. Exit 4 on timeout, 5 when the worker stopped first."
    )
    @OptionGroup var options: ClientOptions
    @Argument(help: "started, ready or stopped.") var until: WaitParams.Until
    @Argument(help: "NAME, SLOT or SLOT/GENERATION.") var worker: WorkerArgument
    @Option(help: "Seconds to wait at most.") var timeout: Double = 60

    func validate() throws {
        guard self.timeout.isFinite, self.timeout > 0, self.timeout <= 86_400 else {
            throw ValidationError("--timeout \(self.timeout) is outside (0, 86400] seconds")
        }
    }

    func run() async throws {
        let result = try await self.options.with { client in
            let reference = try await self.worker.reference(client)
            let progress = isatty(STDERR_FILENO) == 1 ? Task {
                let start = ContinuousClock.now
                while !Task.isCancelled {
                    let elapsed = start.duration(to: .now).components.seconds
                    writeStandardError("\rwaiting for \(self.worker.text) to be \(self.until.rawValue)… \(elapsed) s ")
                    try? await Task.sleep(for: .milliseconds(250))
                }
                writeStandardError("\r\u{1B}[K")
            } : nil
            defer { progress?.cancel() }
            let result = try await client.wait(for: reference, until: self.until, timeout: .milliseconds(Int64(self.timeout * 1000)))
            progress?.cancel()
            _ = await progress?.value
            return result
        }
        if self.options.json { return self.options.print(json: result) }
        switch self.until {
        case .started, .ready: print("\(result.worker.name) \(self.until.rawValue): pid \(result.pid ?? 0)")
        case .stopped: print("\(result.worker.name) stopped: \(result.worker.detail)")
        }
        if result.status == "supervisorDied" { throw ExitCode(Exit.stopped) }
    }
}

extension WaitParams.Until: ExpressibleByArgument {}

struct Terminate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Terminate a worker: SIGTERM, SIGKILL after its grace period, never restarted.")
    @OptionGroup var options: ClientOptions
    @Argument(help: "NAME, SLOT or SLOT/GENERATION.") var worker: WorkerArgument

    func run() async throws {
        let info = try await self.options.with { client in try await client.terminate(try await self.worker.reference(client)) }
        if self.options.json { return self.options.print(json: info) }
        print("\(info.name): \(info.detail)")
    }
}

struct ResetBudget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset-budget",
        abstract: "Start a worker that gave up (its restart budget ran out) again, with a fresh budget."
    )
    @OptionGroup var options: ClientOptions
    @Argument(help: "NAME, SLOT or SLOT/GENERATION.") var worker: WorkerArgument

    func run() async throws {
        let info = try await self.options.with { client in try await client.resetRestartBudget(try await self.worker.reference(client)) }
        if self.options.json { return self.options.print(json: info) }
        print("\(info.name): \(info.detail)")
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the daemon's worker events as they happen.",
        discussion: "--follow prints until the daemon stops or the command is interrupted; --count N stops after N events."
    )
    @OptionGroup var options: ClientOptions
    @Flag(help: "Keep printing until the daemon stops.") var follow = false
    @Option(help: "Stop after this many events.") var count: Int?

    func validate() throws {
        guard self.follow || self.count != nil else { throw ValidationError("give --follow, or --count N") }
        if let count = self.count, count < 1 { throw ValidationError("--count \(count) must be at least 1") }
    }

    func run() async throws {
        try await self.options.with { client in
            let events = try await client.events()
            // On standard error, so that a script reading the events sees only them.
            writeStandardError("bgworkerctl: following the events of \(client.path)\n")
            var printed = 0
            for await event in events {
                if self.options.json {
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                    if let data = try? encoder.encode(event) { print(String(decoding: data, as: UTF8.self)) }
                } else {
                    let slot = "\(event.worker.slot ?? -1)/\(event.worker.generation ?? 0)"
                    print("\(slot) \(event.name): \(event.kind)\(event.detail.map { " (\($0))" } ?? "")")
                }
                fflush(nil)
                printed += 1
                if let count = self.count, printed >= count { return }
            }
        }
    }
}

struct Shutdown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Shut the daemon down: smart (wait for workers), fast (SIGTERM them) or immediate (SIGQUIT)."
    )
    @OptionGroup var options: ClientOptions
    @Option(help: "smart, fast or immediate.") var mode: String = "fast"

    func validate() throws {
        guard ShutdownMode(name: self.mode) != nil else { throw ValidationError("--mode '\(self.mode)' is not smart, fast or immediate") }
    }

    func run() async throws {
        try await self.options.with { try await $0.shutdown(ShutdownMode(name: self.mode)!) }
        if self.options.json { return self.options.print(json: ["shutdown": self.mode]) }
        print("bgworkerd: \(self.mode) shutdown started")
    }
}

/// Writes `text` to descriptor 2 unbuffered (no shared `FILE *`).
func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}
