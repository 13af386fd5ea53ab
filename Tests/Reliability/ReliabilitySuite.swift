import BackgroundWorkers
import CWorkerSupport
import Foundation
import Logging
import TestSupport
import UVConcurrency

/// The project's reliability suite: what a supervisor must survive, each check printing its figure and failing
/// when the figure misses its goal. A developer runs the full form before a release
/// (`swift run -c release ReliabilitySuite`), CI the short one (`--short`, through the test suite).
///
/// Checks: register/exit cycles (descriptors, zombies, resident memory flat after warm-up), a restart storm
/// under default settings (the supervisor's CPU), SIGKILL of a supervisor running every kind of worker
/// (survivors), descriptor exhaustion at interval 0 and 1 s (alive, responsive, recovers), a burst of 50
/// simultaneous exits with notification, and Foundation `Process` and plain `posix_spawn` children of the same
/// process beside worker churn (no lost or late exit).
@main
struct ReliabilitySuite {
    static func main() async throws {
        let short = CommandLine.arguments.contains("--short")
        let only = CommandLine.arguments.dropFirst().filter { !$0.hasPrefix("--") }
        var failures = 0
        let checks: [(String, (Bool) async throws -> Bool)] = [
            ("cycles", Self.cycles),
            ("storm", Self.storm),
            ("kill", Self.kill),
            ("exhaustion", Self.exhaustion),
            ("burst", Self.burst),
            ("coexistence", Self.coexistence),
        ]
        for (name, check) in checks where only.isEmpty || only.contains(name) {
            let passed = try await check(short)
            report("\(name): \(passed ? "ok" : "FAILED")")
            if !passed { failures += 1 }
        }
        report(failures == 0 ? "all checks passed" : "\(failures) check(s) failed")
        exit(failures == 0 ? 0 : 1)
    }

    static var quiet: WorkerSupervisor.Configuration {
        var configuration = WorkerSupervisor.Configuration()
        configuration.logger = Logger(label: "reliability") { _ in SwiftLogNoOpLogHandler() }
        return configuration
    }

    // MARK: - Cycles

    /// Register/exit cycles of /bin/true, 16 slots, half with a readiness pipe: descriptors, zombies and
    /// resident memory at ten checkpoints, flat after the first.
    static func cycles(_ short: Bool) async throws -> Bool {
        let total = short ? 2000 : 10_000
        var configuration = Self.quiet
        configuration.maxWorkerProcesses = 16
        return try await withWorkerSupervisor(configuration: configuration) { supervisor in
            var checkpoints: [(done: Int, descriptors: Int, zombies: Int, rss: Int)] = []
            var done = 0
            var pids: [Int32] = []
            while done < total {
                var handles: [BackgroundWorkerHandle] = []
                for index in 0..<16 {
                    var worker = BackgroundWorker(name: "cycle", entryPoint: .executable("/bin/true"))
                    worker.reportsReadiness = index % 2 == 0
                    handles.append(try await supervisor.register(worker))
                }
                for handle in handles {
                    if let pid = try? await handle.waitForStartup() { pids.append(pid) }
                    _ = try await handle.waitForShutdown()
                }
                done += 16
                if done % (total / 10) < 16 {
                    checkpoints.append((done, openDescriptors(), zombies(among: pids), residentKiB()))
                    pids.removeAll(keepingCapacity: true)
                }
            }
            for point in checkpoints {
                report("cycles: \(point.done) done, \(point.descriptors) descriptors, \(point.zombies) zombies, \(point.rss) KiB resident")
            }
            guard let first = checkpoints.first, let last = checkpoints.last else { return false }
            let descriptorsFlat = checkpoints.allSatisfy { $0.descriptors == first.descriptors }
            let noZombies = checkpoints.allSatisfy { $0.zombies == 0 }
            let growth = last.rss - first.rss
            report("cycles: descriptors \(descriptorsFlat ? "flat" : "NOT flat"), zombies \(noZombies ? "none" : "FOUND"), resident memory +\(growth) KiB after warm-up (goal < 2048)")
            return descriptorsFlat && noZombies && growth < 2048
        }
    }

    // MARK: - Restart storm

    /// /bin/false with interval 0 under default settings: the supervisor's own CPU time over the window.
    static func storm(_ short: Bool) async throws -> Bool {
        let seconds = short ? 3 : 10
        return try await withWorkerSupervisor(configuration: Self.quiet) { supervisor in
            let events = await supervisor.events()
            var worker = BackgroundWorker(name: "storm", entryPoint: .executable("/bin/false"))
            worker.restartInterval = .seconds(0)
            let before = cpuTime()
            let start = ContinuousClock.now
            let handle = try await supervisor.register(worker)
            let counter = Task {
                var starts = 0
                for await event in events where event.handle == handle {
                    if case .started = event.kind { starts += 1 }
                }
                return starts
            }
            try await Task.sleep(for: .seconds(seconds))  // the window is the measurement itself
            let elapsed = start.duration(to: .now)
            let used = cpuTime() - before
            await handle.terminate()
            await supervisor.shutdown(.fast)
            let starts = await counter.value
            let share = used / elapsed * 100
            report("storm: \(starts) starts in \(seconds) s, supervisor CPU \(String(format: "%.2f", share))% of one core (goal < 5%)")
            return share < 5
        }
    }

    // MARK: - SIGKILL of a supervisor

    /// A supervisor process running every kind of worker, SIGKILLed: which of their processes are left 1 s later.
    static func kill(_ short: Bool) async throws -> Bool {
        let (loop, fixture, lines) = try await startProgram(buildDirectory + "/FixtureSupervisor", ["orphans", "kill", "every-kind"], until: "all ready")
        let pids = lines.compactMap { Int32($0) }
        _ = try await loop.submit { try fixture.signal(.kill) }
        _ = try await fixture.waitForExit()
        let survivors = pids.filter { cws_wait_gone($0, 1000) != 1 }
        try await loop.shutdown()
        report("kill: \(pids.count) processes of 7 kinds of worker, \(survivors.count) alive 1 s after SIGKILL of their supervisor\(survivors.isEmpty ? "" : ": \(survivors)") (goal 0)")
        return pids.count >= 6 && survivors.isEmpty
    }

    // MARK: - Descriptor exhaustion

    /// No descriptor free (but the one libdispatch needs): the supervisor stays alive and answers, then the
    /// worker starts once descriptors are free again.
    static func exhaustion(_ short: Bool) async throws -> Bool {
        var passed = true
        for interval in [0, 1] {
            let hold: Duration = short ? .seconds(2) : .seconds(5)
            let figures = try await withWorkerSupervisor(configuration: Self.quiet) { supervisor in
                let events = await supervisor.events()
                var worker = BackgroundWorker(name: "starved", entryPoint: .executable("/bin/sleep", arguments: ["1000"]))
                worker.reportsReadiness = false
                worker.restartInterval = .seconds(interval)
                // With one descriptor free, a spawn still fails: posix_spawn needs a pidfd and a temporary copy.
                let (handle, counting, answer) = try await withOneFreeDescriptor {
                    let handle = try await supervisor.register(worker)
                    let counting = Task {
                        var count = 0
                        for await event in events where event.handle == handle {
                            if case .spawnFailed = event.kind { count += 1 }
                            if case .started = event.kind { break }
                        }
                        return count
                    }
                    try await Task.sleep(for: hold)  // the exhaustion lasts this long
                    let asked = ContinuousClock.now
                    _ = await handle.status
                    return (handle, counting, asked.duration(to: .now))
                }
                let freed = ContinuousClock.now
                _ = try await handle.waitForStartup()
                let recovery = freed.duration(to: .now)
                return (await counting.value, answer, recovery)
            }
            let ok = figures.0 > 0 && figures.1 < .milliseconds(100) && figures.2 < .seconds(31)
            report("exhaustion, interval \(interval) s: \(figures.0) failed spawns in \(hold), status answered in \(figures.1), started \(figures.2) after descriptors were free (goals: answers < 100 ms, starts < 31 s)")
            passed = passed && ok
        }
        return passed
    }

    // MARK: - Burst

    /// 50 workers, each notifying this process, exit in the same instant: every exit seen, and this process
    /// (the notify target of all of them) survives the SIGUSR1 storm.
    static func burst(_ short: Bool) async throws -> Bool {
        var configuration = Self.quiet
        configuration.maxWorkerProcesses = 64
        return try await withWorkerSupervisor(configuration: configuration) { supervisor in
            var handles: [BackgroundWorkerHandle] = []
            var pids: [Int32] = []
            for index in 0..<50 {
                var worker = BackgroundWorker(name: "burst-\(index)", entryPoint: .executable("/bin/sh", arguments: ["-c", "echo READY=1 >&4; exec sleep 1000"]))
                worker.reportsReadiness = true
                worker.restartInterval = .never
                worker.notifyPID = getpid()
                let handle = try await supervisor.register(worker)
                handles.append(handle)
                pids.append(try await handle.waitForReady())
            }
            // All 50 ended within a few microseconds of each other.
            let start = ContinuousClock.now
            for pid in pids { Glibc.kill(pid, SIGKILL) }
            var stopped = 0
            for handle in handles where try await handle.waitForShutdown() == .stopped { stopped += 1 }
            let elapsed = start.duration(to: .now)
            report("burst: \(stopped) of 50 simultaneous exits seen in \(elapsed), this process notified by all and alive (goals: 50, < 5 s)")
            return stopped == 50 && elapsed < .seconds(5)
        }
    }

    // MARK: - Coexistence

    /// Foundation `Process` and plain `posix_spawn` children of this process beside worker churn: no exit lost,
    /// none late (an inherited pipe end once held `waitUntilExit` for a second).
    static func coexistence(_ short: Bool) async throws -> Bool {
        let rounds = short ? 40 : 200
        return try await withWorkerSupervisor(configuration: Self.quiet) { supervisor in
            let churn = Task {
                var seen = 0
                for _ in 0..<rounds {
                    var worker = BackgroundWorker(name: "churn", entryPoint: .executable("/bin/true"))
                    worker.reportsReadiness = true
                    let handle = try await supervisor.register(worker)
                    if try await handle.waitForShutdown() == .stopped { seen += 1 }
                }
                return seen
            }
            let foundation = Task.detached {
                var slowest: Duration = .zero
                var exits = 0
                for _ in 0..<rounds {
                    let process = Process()
                    process.executableURL = URL(fileURLWithPath: "/bin/true")
                    process.standardOutput = Pipe()
                    let start = ContinuousClock.now
                    try process.run()
                    process.waitUntilExit()
                    slowest = max(slowest, start.duration(to: .now))
                    if process.terminationStatus == 0 { exits += 1 }
                }
                return (exits, slowest)
            }
            let plain = Task.detached {
                var exits = 0
                for _ in 0..<rounds {
                    var pid: pid_t = 0
                    var argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
                    defer { free(argv[0]) }
                    guard posix_spawn(&pid, "/bin/true", nil, nil, &argv, environ) == 0 else { continue }
                    var status: Int32 = 0
                    if waitpid(pid, &status, 0) == pid { exits += 1 }
                }
                return exits
            }
            let seen = try await churn.value
            let (foundationExits, slowest) = try await foundation.value
            let plainExits = await plain.value
            report("coexistence: workers \(seen)/\(rounds), Foundation Process \(foundationExits)/\(rounds) (slowest waitUntilExit \(slowest)), posix_spawn \(plainExits)/\(rounds) (goals: every exit, slowest < 500 ms)")
            return seen == rounds && foundationExits == rounds && plainExits == rounds && slowest < .milliseconds(500)
        }
    }
}

// MARK: - Helpers

/// Writes a line to standard output at once.
func report(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

/// This process's user and system CPU time.
func cpuTime() -> Duration {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let micros = Int64(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1_000_000 + Int64(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
    return .microseconds(micros)
}

/// How many of `pids` are zombies of this process.
func zombies(among pids: [Int32]) -> Int {
    pids.filter { pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }.count
}
