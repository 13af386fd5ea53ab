import BackgroundWorkerControl
import BackgroundWorkers
import BackgroundWorkersDaemon
import CWorkerSupport
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

let sleeperConfig = """
    maxWorkerProcesses: 6
    workers:
      - name: alpha
        executable: /bin/sleep
        arguments: ["1000"]
        restartInterval: never
      - name: beta
        executable: /bin/sleep
        arguments: ["1000"]
        restartInterval: 5
    """

/// The worker rows of `bgworkerctl list --json`.
func listed(_ socket: String) throws -> [WorkerInfo] {
    let (status, output) = try ctl(socket, ["list", "--json"])
    #expect(status == 0, "\(output)")
    return try ControlCodec.decodeResult(Array(("{\"result\":" + output + "}").utf8), as: [WorkerInfo].self)
}

@Suite("bgworkerd and bgworkerctl, end to end with the built binaries (issue 12)", .timeLimit(.minutes(5)))
struct DaemonTests {
    @Test("no file: the built-in default set runs; list shows it; SIGINT stops it, removing socket and pid file")
    func builtinDefault() async throws {
        try await withDaemon { daemon, socket, _ in
            let rows = try listed(socket)
            #expect(rows.map(\.name) == ["heartbeat"])
            let pidFile = socket.replacingLastComponent(with: "bgworkerd.pid")
            #expect(readFile(pidFile) == "\(daemon.process.pid)\n")
            let (status, table) = try ctl(socket, ["list"])
            #expect(status == 0)
            #expect(table.hasPrefix("SLOT  GEN  NAME") && table.contains("heartbeat") && table.contains("running"), "\(table)")
            try daemon.signal(.interrupt)
            #expect(try await daemon.exit() == .exited(0))
            #expect(access(pidFile, F_OK) != 0)
            #expect(daemon.output.contains("fast"), "\(daemon.output)")
        }
    }

    @Test("a file: its static workers run; a second daemon on the same socket exits 1 naming the first")
    func withFile() async throws {
        try await withDaemon(config: sleeperConfig) { daemon, socket, _ in
            let rows = try listed(socket)
            #expect(rows.map(\.name) == ["alpha", "beta"] && rows.allSatisfy { $0.pid != nil })
            let second = try runProgram(bgworkerd, ["--socket", socket])
            #expect(second.status == 1)
            #expect(second.output.contains("another daemon is serving") && second.output.contains("\(daemon.process.pid)"), "\(second.output)")
            #expect(try listed(socket).map(\.pid) == rows.map(\.pid), "the second daemon disturbed the first")
        }
    }

    @Test("an invalid file: exit 2, the message names the entry and the field; nothing is started")
    func invalidFile() async throws {
        try await withTemporaryFolder { folder in
            let cases: [(String, String)] = [
                ("workers:\n  - name: ok\n    executable: /bin/true\n  - name: bad\n    executable: /bin/true\n    restartInterval: soon\n", "workers[1].restartInterval"),
                ("workers:\n  - name: typo\n    executabel: /bin/true\n", "executabel is not a known key"),
                ("workers:\n  - name: two\n    executable: /bin/true\n    builtin: heartbeat\n", "workers[0] 'two': give exactly one entry point"),
                ("workers:\n  - name: missing\n    executable: /no/such/binary\n", "workers[0] 'missing'"),
                ("maxWorkerProcesses: 0\n", "maxWorkerProcesses 0"),
                ("limits: { messageTimeout: 0 }\n", "limits: messageTimeout 0.0 is outside 0.001...86400 seconds"),
                ("workers: [\n", "is not valid YAML"),
                ("workers:\n  - name: \"\"\n    executable: /bin/true\n", "name is"),
            ]
            for (index, (text, expected)) in cases.enumerated() {
                let file = "\(folder)/bad\(index).yaml"
                try writeFile(file, text)
                let result = try runProgram(bgworkerd, ["--config", file, "--socket", "\(folder)/s\(index)/control.sock"])
                #expect(result.status == 2, "\(text): \(result.output)")
                #expect(result.output.contains("invalid configuration \(file)") && result.output.contains(expected), "\(result.output)")
                #expect(access("\(folder)/s\(index)/control.sock", F_OK) != 0)
            }
            let check = try runProgram(bgworkerd, ["--check", "--config", "\(folder)/bad0.yaml"])
            #expect(check.status == 2 && check.output.contains("workers[1].restartInterval"), "\(check.output)")
        }
    }

    @Test("an unusable folder: exit 1 with the reason")
    func unusableFolder() async throws {
        try await withTemporaryFolder { folder in
            mkdir("\(folder)/open", 0o755)
            chmod("\(folder)/open", 0o755)
            let result = try runProgram(bgworkerd, ["--socket", "\(folder)/open/control.sock"])
            #expect(result.status == 1 && result.output.contains("users other than this one may enter it"), "\(result.output)")
            let missing = try runProgram(bgworkerd, ["--socket", "\(folder)/no/such/control.sock"])
            #expect(missing.status == 1 && missing.output.contains("cannot make folder"), "\(missing.output)")
        }
    }

    @Test("bgworkerctl: register → wait started → terminate → wait stopped, and the documented exit codes")
    func cliLifecycle() async throws {
        try await withDaemon(config: sleeperConfig) { _, socket, _ in
            var result = try ctl(socket, ["register", "--name", "job", "--", "/bin/sleep", "1000"])
            #expect(result.status == 0 && result.output.contains("registered job"), "\(result.output)")
            result = try ctl(socket, ["wait", "started", "job"])
            #expect(result.status == 0 && result.output.contains("job started: pid"), "\(result.output)")
            let pid = try #require(try listed(socket).first { $0.name == "job" }?.pid)
            result = try ctl(socket, ["terminate", "job"])
            #expect(result.status == 0, "\(result.output)")
            result = try ctl(socket, ["wait", "stopped", "job", "--json"])
            #expect(result.status == 0 && result.output.contains("\"reason\" : \"terminated\""), "\(result.output)")
            #expect(kill(pid, 0) != 0)
            // Exit codes a script relies on.
            #expect(try ctl(socket, ["status", "nobody-here"]).status == 6)
            #expect(try ctl(socket, ["wait", "stopped", "alpha", "--timeout", "0.2"]).status == 4)
            result = try ctl(socket, ["register", "--name", "once", "--", "/bin/true"])
            #expect(result.status == 0)
            #expect(try ctl(socket, ["wait", "stopped", "once"]).status == 0)
            result = try ctl(socket, ["register", "--name", "", "--", "/bin/true"])
            #expect(result.status == 1 && result.output.contains("name"), "\(result.output)")
            #expect(try ctl(socket, ["register", "--name", "x"]).status == 64)
            // Slots: 6, two static, one waiting line.
            for index in 0..<4 { #expect(try ctl(socket, ["register", "--name", "fill\(index)", "--", "/bin/sleep", "1000"]).status == 0) }
            result = try ctl(socket, ["register", "--name", "over", "--", "/bin/sleep", "1000"])
            #expect(result.status == 1 && result.output.contains("no free worker slot"), "\(result.output)")
            result = try ctl(socket, ["reset-budget", "alpha"])
            #expect(result.status == 0, "\(result.output)")
            let unreachable = try ctl(socket + ".none", ["list"])
            #expect(unreachable.status == 3 && unreachable.output.contains("is the daemon running"), "\(unreachable.output)")
        }
    }

    @Test("register --linked: the worker ends when the command is killed")
    func linkedCommand() async throws {
        try await withDaemon { _, socket, _ in
            let command = try await RunningProgram(bgworkerctl, ["register", "--socket", socket, "--name", "tied", "--linked", "--", "/bin/sleep", "1000"])
            #expect(await command.waitFor("registered tied"))
            let pid = try #require(try listed(socket).first { $0.name == "tied" }?.pid)
            try command.signal(.kill)
            _ = try await command.exit()
            let result = try ctl(socket, ["wait", "stopped", "tied", "--json"])
            #expect(result.status == 0 && result.output.contains("terminated"), "\(result.output)")
            #expect(kill(pid, 0) != 0)
        }
    }

    @Test("a client process: SIGUSR1 reaches it on status changes; SIGKILLed, its notify pids are cleared, its linked workers terminated, the others untouched")
    func clientProcess() async throws {
        try await withDaemon { _, socket, _ in
            let client = try await RunningProgram("\(buildDirectory)/FixtureControlClient", [socket])
            #expect(await client.waitFor("client pid"), "\(client.output)")
            let clientPID = client.process.pid
            var rows = try listed(socket)
            let before = Dictionary(uniqueKeysWithValues: rows.map { ($0.name, $0) })
            #expect(before["notified-linked"]?.notifyPID == clientPID && before["notified-kept"]?.notifyPID == clientPID)
            // A status change of a notified worker: the client is woken and reads it.
            #expect(try ctl(socket, ["terminate", "notified-free"]).status == 0)
            #expect(await client.waitFor("change notified-free unregistered"), "\(client.output)")
            #expect(!client.output.contains("wakeups 0"), "\(client.output)")

            try client.signal(.kill)
            _ = try await client.exit()
            let linked = try ctl(socket, ["wait", "stopped", "notified-linked", "--json"])
            #expect(linked.status == 0 && linked.output.contains("terminated"), "\(linked.output)")
            rows = try listed(socket)
            let kept = try #require(rows.first { $0.name == "notified-kept" })
            #expect(kept.pid == before["notified-kept"]?.pid && kept.notifyPID == nil, "\(kept)")
            #expect(rows.first { $0.name == "heartbeat" }?.pid == before["heartbeat"]?.pid)
        }
    }

    @Test("SIGHUP: added workers start, removed ones are terminated, changed ones restart with the new definition; an invalid file changes nothing")
    func reload() async throws {
        try await withDaemon(config: sleeperConfig) { daemon, socket, folder in
            let before = try listed(socket)
            let file = "\(folder)/bgworkerd.yaml"
            try writeFile(file, """
                maxWorkerProcesses: 6
                workers:
                  - name: beta
                    executable: /bin/sleep
                    arguments: ["2000"]
                    restartInterval: 5
                  - name: gamma
                    executable: /bin/sleep
                    arguments: ["1000"]
                """)
            try daemon.signal(.hangup)
            #expect(await daemon.waitFor("reload done"), "\(daemon.output)")
            let after = try listed(socket)
            #expect(after.map(\.name).sorted() == ["beta", "gamma"], "\(after)")
            let beta = try #require(after.first { $0.name == "beta" })
            #expect(beta.pid != before.first { $0.name == "beta" }?.pid)
            #expect(try ctl(socket, ["status", "alpha", "--json"]).output.contains("terminated"))
            let betaArguments = readFile("/proc/\(beta.pid ?? 0)/cmdline")?.split(separator: "\0").map(String.init)
            #expect(betaArguments?.dropFirst() == ["2000"], "\(String(describing: betaArguments))")

            try writeFile(file, "workers: [ {name: broken} ]\n")
            try daemon.signal(.hangup)
            #expect(await daemon.waitFor("reload refused"), "\(daemon.output)")
            #expect(try listed(socket).map(\.pid) == after.map(\.pid))
        }
    }

    @Test("shutdown modes from signals: SIGTERM smart waits for workers, SIGINT fast sends SIGTERM, SIGQUIT immediate sends SIGQUIT")
    func signalModes() async throws {
        let config = """
            workers:
              - name: short
                executable: /bin/sh
                arguments: ["-c", "exec sleep 1000"]
                restartInterval: never
            """
        // Smart: the worker keeps running, new registrations are refused, the daemon exits when it ends.
        try await withDaemon(config: config) { daemon, socket, _ in
            let pid = try #require(try listed(socket).first?.pid)
            try daemon.signal(.terminate)
            #expect(await daemon.waitFor("shutting down (smart)"))
            let refused = try ctl(socket, ["register", "--name", "late", "--", "/bin/true"])
            #expect(refused.status == 1 && refused.output.contains("shutting down"), "\(refused.output)")
            #expect(kill(pid, 0) == 0, "smart shutdown signalled the worker")
            kill(pid, SIGKILL)  // the worker ends by itself (as far as the daemon can tell)
            #expect(try await daemon.exit() == .exited(0))
        }
        for (signal, mode, death) in [(UVSignal.interrupt, "fast", "SIGTERM"), (.quit, "immediate", "SIGQUIT")] {
            try await withDaemon(config: config) { daemon, _, _ in
                try daemon.signal(signal)
                #expect(try await daemon.exit() == .exited(0))
                #expect(daemon.output.contains("shutting down (\(mode))") && daemon.output.contains("killed by \(death)"), "\(daemon.output)")
            }
        }
    }

    @Test("shutdown modes from the CLI", arguments: ["smart", "fast", "immediate"])
    func cliModes(mode: String) async throws {
        try await withDaemon(config: "workers: []\n") { daemon, socket, _ in
            let result = try ctl(socket, ["shutdown", "--mode", mode])
            #expect(result.status == 0 && result.output.contains("\(mode) shutdown started"), "\(result.output)")
            #expect(try await daemon.exit() == .exited(0))
            #expect(daemon.output.contains("shutting down (\(mode))"), "\(daemon.output)")
        }
        #expect(try runProgram(bgworkerctl, ["shutdown", "--mode", "gentle", "--socket", "/nonexistent"]).status == 64)
    }

    @Test("events --count prints the daemon's events in order")
    func events() async throws {
        try await withDaemon(config: "workers: []\n") { _, socket, _ in
            let follower = try await RunningProgram(bgworkerctl, ["events", "--socket", socket, "--count", "4"])
            #expect(await follower.waitFor("following the events"), "\(follower.output)")
            #expect(try ctl(socket, ["register", "--name", "evented", "--", "/bin/true"]).status == 0)
            #expect(try await follower.exit() == .exited(0))
            let events = follower.lines.filter { !$0.hasPrefix("bgworkerctl:") }
            let kinds = events.map { $0.split(separator: " ").dropFirst(2).first.map(String.init) ?? "" }
            #expect(kinds == ["registered", "started", "exited", "unregistered"], "\(follower.lines)")
            #expect(events.allSatisfy { $0.contains("evented") })
        }
    }
}

@Suite("The control socket's peer check, with another user's client (issue 12)", .timeLimit(.minutes(2)))
struct PeerCheckTests {
    /// Runs `bgworkerctl ARGUMENTS` as `nobody` (through runuser, as root) against `socket`, from a copy in
    /// `folder`: the build folder may be in a checkout that nobody cannot enter.
    func asNobody(_ folder: String, _ socket: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let copy = "\(folder)/bgworkerctl"
        if access(copy, X_OK) != 0 {
            let copied = try runProgram("/bin/cp", [bgworkerctl, copy])
            #expect(copied.status == 0, "\(copied.output)")
            chmod(copy, 0o755)
        }
        return try runProgram("/usr/sbin/runuser", ["-u", "nobody", "--", copy, arguments[0], "--socket", socket] + arguments.dropFirst())
    }

    @Test(
        "a peer whose uid is neither the supervisor's, root, nor in the allowed group is refused before any request is read; the group lets it in",
        .enabled(if: geteuid() == 0, "needs root to run a client as nobody")
    )
    func otherUser() async throws {
        try await withTemporaryFolder { folder in
            // The file system would already stop nobody (0700 folder, 0600 socket): open both up, so that only
            // the server's own check stands between nobody and the supervisor.
            chmod(folder, 0o755)
            let path = "\(folder)/control.sock"
            let nogroup = try #require(getgrnam("nogroup")?.pointee.gr_gid)
            for allowed in [nil, nogroup] as [UInt32?] {
                var configuration = WorkerSupervisor.Configuration()
                configuration.maxWorkerProcesses = 2
                try await withWorkerSupervisor(configuration: configuration) { supervisor in
                    try await supervisor.serveControlSocket(ControlSocketConfiguration(path: path, allowedGroup: allowed, socketMode: 0o666))
                    let result = try self.asNobody(folder, path, ["register", "--name", "intruder", "--", "/bin/sleep", "1000"])
                    if allowed == nil {
                        #expect(result.status == 3, "\(result.output)")
                        #expect(result.output.contains("permissionDenied") && result.output.contains("uid 65534"), "\(result.output)")
                        #expect(await supervisor.slotsInUse == 0)
                    } else {
                        #expect(result.status == 0, "\(result.output)")
                        #expect(await supervisor.slotsInUse == 1)
                    }
                    await supervisor.stopServingControlSocket()
                }
            }
        }
    }
}

@Suite("Deployment files (issue 12)")
struct DeploymentTests {
    /// The repository: this file's path up to `/Tests/`.
    static let repository = "\(#filePath)".split(separator: "/Tests/", maxSplits: 1).first.map(String.init) ?? "."

    @Test("the systemd unit passes systemd-analyze verify", .enabled(if: access("/usr/bin/systemd-analyze", X_OK) == 0, "no systemd-analyze here"))
    func systemdUnit() async throws {
        let unit = try #require(readFile("\(Self.repository)/deploy/bgworkerd.service"))
        #expect(unit.contains("ExecStart=/usr/local/bin/bgworkerd") && unit.contains("KillSignal=SIGINT"))
        try await withTemporaryFolder { folder in
            // The unit names the installed binary; verify checks that it exists, so point it at the built one.
            let file = "\(folder)/bgworkerd.service"
            try writeFile(file, unit.replacingOccurrences(of: "/usr/local/bin/bgworkerd", with: bgworkerd))
            let result = try runProgram("/usr/bin/systemd-analyze", ["verify", file])
            #expect(result.status == 0 && result.output.isEmpty, "\(result.output)")
        }
    }

    @Test("the example configuration is valid")
    func exampleConfiguration() throws {
        let result = try runProgram(bgworkerd, ["--check", "--config", "\(Self.repository)/deploy/bgworkerd.yaml"])
        #expect(result.status == 0 && result.output.contains("is valid: 1 workers, 16 slots"), "\(result.output)")
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }

    func replacingLastComponent(with name: String) -> String {
        String(self[..<(self.lastIndex(of: "/") ?? self.startIndex)]) + "/" + name
    }
}
