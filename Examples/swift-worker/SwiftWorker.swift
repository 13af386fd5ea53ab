import BackgroundWorkerRuntime
import CWorkerSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A Swift background worker in a dozen lines: it reports ready, then serves reload requests until SIGTERM
/// cancels it (exit 1) or the supervisor dies (exit 1 within 100 ms).
///
/// Its first argument picks a behaviour, for the tests: `serve` (the default), `return` (exits 0 at once),
/// `throw` (exits 1 at once), `exit-on-reload` (reports ready, then exits 0 at its first SIGHUP), and the
/// test modes below.
@main
struct SwiftWorker: BackgroundWorkerMain {
    struct Failure: Error {}

    static func run(_ worker: WorkerContext) async throws {
        // As a built-in (a supervisor whose builtinExecutable is this binary), the built-in's name is the mode.
        let mode = BuiltinWorkers.requestedName ?? CommandLine.arguments.dropFirst().first ?? "serve"
        switch mode {
        case "return":
            return
        case "hooks", "hooks-return":  // appends C (cancelled), then B and A (clean-ups, last first) to the file
            // named by its extra bytes (bgw_extra: data for the worker, the same exec'd or as a built-in)
            let path = String(decoding: worker.identity.extra, as: UTF8.self)
            let append: @Sendable (String) -> Void = { text in
                guard let file = fopen(path, "ae") else { return }
                fputs(text, file)
                fclose(file)
            }
            worker.addCleanup { append("A") }
            worker.addCleanup { append("B") }
            worker.onCancel { append("C") }
            if mode == "hooks-return" { return }
            try worker.reportReady()
            while true { try await Task.sleep(for: .seconds(3600)) }
        case "throw":
            throw Failure()
        case "notified":  // ready, then exits 0 at its first SIGUSR1 notification
            try worker.reportReady()
            for await _ in worker.notifications { return }
            throw Failure()
        case "shm-write":  // writes its main argument at offset 0 of shared memory, then serves
            try worker.sharedMemory().storeBytes(of: worker.identity.mainArgument, toByteOffset: 0, as: UInt64.self)
            try worker.reportReady()
            for await _ in worker.reloads {}
        case "shm-read":  // ready only if offset 0 holds its main argument
            let value = try worker.sharedMemory().load(fromByteOffset: 0, as: UInt64.self)
            guard value == worker.identity.mainArgument else { throw Failure() }
            try worker.reportReady()
            for await _ in worker.reloads {}
        case "shm-none":  // ready only if it has no shared memory
            guard (try? worker.sharedMemory()) == nil else { throw Failure() }
            try worker.reportReady()
            for await _ in worker.reloads {}
        case "blocked":  // sends itself SIGTERM while signals are blocked: held until unblock, then exit 1
            worker.withSignalsBlocked {
                kill(getpid(), SIGTERM)
                let deadline = ContinuousClock.now + .seconds(5)
                while !worker.isTerminationRequested {  // the runtime saw it...
                    if ContinuousClock.now > deadline { exit(4) }
                }
                if Task.isCancelled { exit(3) }  // ...and must not have acted on it while blocked
            }
            try await Task.sleep(for: .seconds(3600))  // the held SIGTERM cancels this at once: exit 1
        case "early-reload":  // a SIGHUP before `reloads` was ever used is its first element: exit 0
            // SIGHUP, then SIGTERM: a lower-numbered signal is delivered first, so once the SIGTERM was seen
            // the SIGHUP was handled too, before anything asked for `reloads`.
            kill(getpid(), SIGHUP)
            kill(getpid(), SIGTERM)
            let deadline = ContinuousClock.now + .seconds(5)
            while !worker.isTerminationRequested {
                if ContinuousClock.now > deadline { exit(4) }
            }
            for await _ in worker.reloads { return }  // the early SIGHUP, kept for the body
            exit(3)
        case "parallel":  // starts on the main thread; a child task runs beside it while it is busy: exit 0
            guard cws_gettid() == getpid() else { exit(3) }
            let rendezvous = Rendezvous()
            async let childMet = rendezvous.meet()
            let bodyMet = rendezvous.meet()  // spins on the main thread until the child arrives
            guard await childMet, bodyMet else { exit(4) }
        case "main-actor":  // MainActor work runs, on the main thread, before and after a sleep: exit 0
            guard await MainActor.run(body: { cws_gettid() == getpid() }) else { exit(3) }
            try await Task.sleep(for: .milliseconds(1))
            guard await MainActor.run(body: { cws_gettid() == getpid() }) else { exit(4) }
        case "process-state":  // reports what the process was given, as its error line, and exits 1
            throw Report(description: Self.processState())
        case "command-line":  // reports its command line as ps shows it, as its error line, and exits 1
            throw Report(description: "command line " + Self.commandLine())
        case "stuck":  // reports ready, then keeps the main thread busy and ignores cancellation
            try worker.reportReady()
            while true { sched_yield() }
        case "exit-on-reload":
            try worker.reportReady()
            for await _ in worker.reloads { return }  // the first SIGHUP: done, exit 0
        default:
            try worker.reportReady()
            for await _ in worker.reloads {}
            try Task.checkCancellation()
        }
    }
}

/// A report carried by the worker's `ERROR=` line.
struct Report: Error, CustomStringConvertible {
    let description: String
}

extension SwiftWorker {
    /// What a worker's process was given, in one line: open descriptors and what they are, ignored and blocked
    /// signals, its session, group and parent, its arguments, its command line as `ps` shows it, and the names of
    /// its environment variables. An exec'd and a forked worker must give the same line.
    static func processState() -> String {
        var descriptors: [String] = []
        if let folder = opendir("/proc/self/fd") {
            let own = dirfd(folder)
            while let entry = readdir(folder) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                guard let number = Int32(name), number != own else { continue }
                var target = [CChar](repeating: 0, count: 256)
                let count = readlink("/proc/self/fd/\(name)", &target, 255)
                let text = count > 0 ? String(decoding: target.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
                // pipe:[1234] and socket:[1234] name inodes that differ from process to process.
                descriptors.append("\(number)=\(text.split(separator: ":").first.map(String.init) ?? text)")
            }
            closedir(folder)
        }
        var signals: [String] = []
        if let status = fopen("/proc/self/status", "re") {
            var line = [CChar](repeating: 0, count: 512)
            while fgets(&line, 512, status) != nil {
                let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if text.hasPrefix("SigIgn:") || text.hasPrefix("SigBlk:") { signals.append(text.split(whereSeparator: { $0 == "\t" || $0 == "\n" || $0 == " " }).joined(separator: " ")) }
            }
            fclose(status)
        }
        let supervisor = getenv("BGW_SUPERVISOR_PID").map { String(cString: $0) } ?? "?"
        var names: [String] = []
        var variable = environ
        while let entry = variable.pointee {
            let text = String(cString: entry)
            names.append(String(text.prefix { $0 != "=" }))
            variable += 1
        }
        return [
            "fds " + descriptors.sorted().joined(separator: " "),
            signals.sorted().joined(separator: " "),
            "session-leader \(getsid(0) == getpid()) group-leader \(getpgrp() == getpid()) parent-is-supervisor \(String(getppid()) == supervisor)",
            "arguments " + CommandLine.arguments.joined(separator: " "),
            "command line " + Self.commandLine(),
            "environment " + names.sorted().joined(separator: ","),
        ].joined(separator: "; ")
    }
}

extension SwiftWorker {
    /// This process's command line as the kernel shows it (`/proc/self/cmdline`, what `ps` prints), its NULs as
    /// spaces, trailing ones dropped.
    static func commandLine() -> String {
        guard let file = fopen("/proc/self/cmdline", "re") else { return "?" }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer.prefix(count)
        }
        while bytes.last == 0 { bytes.removeLast() }
        return String(decoding: bytes.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }
}

/// Two parties that each wait, busily, for the other: both arrive only if they run at the same time.
final class Rendezvous: Sendable {
    private let arrived = Atomic<Int>(0)

    /// Arrives and waits up to five seconds for the other party; false when it never came.
    func meet() -> Bool {
        self.arrived.add(1, ordering: .sequentiallyConsistent)
        let deadline = ContinuousClock.now + .seconds(5)
        while self.arrived.load(ordering: .sequentiallyConsistent) < 2 {
            if ContinuousClock.now > deadline { return false }
        }
        return true
    }
}
