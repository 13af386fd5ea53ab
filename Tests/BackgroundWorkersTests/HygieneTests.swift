import BackgroundWorkers
import CWorkerSupport
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension SupervisorTests {
    /// Workers that cannot outlive or be hurt by their supervisor (issue 10).
    @Suite("Hygiene: orphans, descriptors, signals (issue 10)")
    struct HygieneTests {
        /// Starts the fixture supervisor in `mode` and returns it with the lines it printed up to "all ready".
        static func startFixture(_ arguments: [String], strategy: UVSpawnStrategy) async throws -> (UVEventLoop, UVChildProcess, [String]) {
            try await startProgram(
                buildDirectory + "/FixtureSupervisor",
                arguments,
                environment: ["PATH": "/usr/bin:/bin", "FIXTURE_SPAWN_STRATEGY": "\(strategy)"],
                until: "all ready"
            )
        }

        @Test(
            "no worker of any kind, nor its children, outlives a supervisor that dies without a shutdown",
            arguments: spawnStrategies, ["kill", "exit"]
        )
        func noOrphans(strategy: UVSpawnStrategy, death: String) async throws {
            let (loop, fixture, lines) = try await Self.startFixture(["orphans", death], strategy: strategy)
            // The plain program, the shell, and the shell's own child (which knows nothing of descriptor 3).
            let pids = lines.compactMap { Int32($0) }
            try #require(pids.count == 3, "\(lines)")
            if death == "kill" {
                #expect(try await loop.submit { try fixture.signal(.kill) })
                #expect(try await fixture.waitForExit() == .signaled(.kill))
            } else {
                #expect(try await fixture.waitForExit() == .exited(0))
            }
            for pid in pids {
                #expect(cws_wait_gone(pid, 1000) == 1, "process \(pid) outlived its supervisor by more than a second")
            }
            try await loop.shutdown()
        }

        @Test("a worker gets descriptors 0, 1, 2 and the contract's, none that other code left inheritable", arguments: spawnStrategies)
        func onlyTheContractsDescriptors(strategy: UVSpawnStrategy) async throws {
            // Descriptors opened the plain way, without close-on-exec, by "other code" in this process.
            let file = open("/dev/null", O_RDONLY)
            var ends: [Int32] = [-1, -1]
            pipe(&ends)
            let socket = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { for fd in [file, ends[0], ends[1], socket] { close(fd) } }
            try #require(file >= 0 && ends[0] >= 0 && socket >= 0)
            try await withSupervisor(strategy: strategy) { supervisor in
                // Every descriptor above the contract's, found with stat (listing /proc/$$/fd would open one).
                let script = #"n=5; extra=""; while [ $n -lt 1024 ]; do [ -e /proc/$$/fd/$n ] && extra="$extra $n"; n=$((n + 1)); done; echo "ERROR=extra:$extra" >&4; exit 0"#
                var worker = shellWorker("descriptors", script)
                worker.reportsReadiness = true
                let handle = try await supervisor.register(worker)
                #expect(try await handle.waitForShutdown() == .stopped)
                let listed = await handle.lastReportedError
                #expect(listed == "extra:", "\(String(describing: listed))")
            }
        }

        @Test("what can be known at registration is refused then, naming the field and how to fix it")
        func entryPointsCheckedAtRegistration() async throws {
            let script = "/tmp/bgw-not-executable-\(getpid())"
            try #require(FileManagerLite.writeExecutable(script, "#!/bin/sh\nexit 0\n", mode: 0o644))
            defer { unlink(script) }
            var configuration = WorkerSupervisor.Configuration()
            configuration.hostExecutable = "/no/such/bgworker-host"
            try await withWorkerSupervisor(configuration: configuration) { supervisor in
                let cases: [(BackgroundWorker.EntryPoint, String, String)] = [
                    (.executable("/no/such/program"), "entryPoint.executable", "does not exist"),
                    (.executable("/tmp"), "entryPoint.executable", "is a directory, not a program"),
                    (.executable(script), "entryPoint.executable", "may not be executed by this supervisor's user (mode 644)"),
                    (.executable("no-such-program-\(getpid())"), "entryPoint.executable", "not an executable file in any directory of the worker's PATH"),
                    (.executable("/bin/true", workingDirectory: "/no/such/directory"), "entryPoint.workingDirectory", "does not exist"),
                    (.executable("/bin/true", workingDirectory: "/bin/true"), "entryPoint.workingDirectory", "is not a directory"),
                    (.library("libExampleLibraryWorker.so", function: "f"), "entryPoint.library", "swift build --product bgworker-host"),
                ]
                for (entry, field, words) in cases {
                    let error = await refusal(supervisor, BackgroundWorker(name: "checked", entryPoint: entry))
                    #expect(error?.code == .invalidRegistration, "\(entry)")
                    #expect(error?.registrationError?.field == field, "\(entry)")
                    #expect(error?.message.contains(words) == true, "\(entry): \(String(describing: error))")
                }
                #expect(await supervisor.slotsInUse == 0)
                // Found in PATH, relative to the working directory: accepted.
                _ = try await supervisor.register(BackgroundWorker(name: "in-path", entryPoint: .executable("true")))
                _ = try await supervisor.register(BackgroundWorker(name: "relative", entryPoint: .executable("./true", workingDirectory: "/bin")))
            }
        }

        @Test("a program without a #! line is refused as 'not an executable format', at registration or at spawn", arguments: spawnStrategies)
        func notAnExecutableFormat(strategy: UVSpawnStrategy) async throws {
            let path = "/tmp/bgw-no-shebang-\(getpid())-\(strategy)"
            try #require(FileManagerLite.writeExecutable(path, "echo no interpreter line\n"))
            defer { unlink(path) }
            try await withSupervisor(strategy: strategy) { supervisor in
                let refused = await refusal(supervisor, BackgroundWorker(name: "no-shebang", entryPoint: .executable(path)))
                #expect(refused?.registrationError?.field == "entryPoint.executable")
                #expect(refused?.message.contains("is not an executable format") == true, "\(String(describing: refused))")
            }
            guard strategy == .posixSpawn else { return }  // uv_spawn's execvp hands such a file to /bin/sh
            // Changed after the registration: the spawn's ENOEXEC says what it means.
            try #require(FileManagerLite.writeExecutable(path, "#!/bin/sh\nexit 0\n"))
            let supervisor = try WorkerSupervisor(configuration: .testing(strategy))
            var worker = BackgroundWorker(name: "no-shebang", entryPoint: .executable(path))
            worker.restartInterval = .never
            let handle = try await supervisor.register(worker)
            try #require(FileManagerLite.writeExecutable(path, "echo no interpreter line\n"))
            let runner = Task { try await supervisor.run() }
            #expect(try await handle.waitForShutdown() == .stopped)
            let detail = await handle.detail
            if case .unregistered(let reason, _) = detail {
                #expect(reason.spawnError?.errno == ENOEXEC)
            } else {
                Issue.record("\(detail)")
            }
            #expect(detail.description.contains("ENOEXEC (exec format error: not an executable format; a script without a #! line?)"), "\(detail)")
            await supervisor.shutdown(.fast)
            try await runner.value
        }

        @Test(
            "a worker can run as another user: the real boundary, which a shared-memory flag is not",
            arguments: [UVSpawnStrategy.automatic, .libuv]
        )
        func workerAsAnotherUser(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                // The segment, as a worker of the supervisor's own user could reach it without the flag.
                let probe = #"""
                    id=$(id -u):$(id -g); fd=""; for f in /proc/$BGW_SUPERVISOR_PID/fd/*; do case $(readlink "$f") in *bgworker-shm*) fd=$f;; esac; done
                    if [ -n "$fd" ] && [ -r "$fd" ]; then reach=readable; else reach=unreachable; fi
                    echo "ERROR=$id $reach" >&4; exit 0
                    """#
                var worker = shellWorker("unprivileged", probe)
                worker.reportsReadiness = true
                worker.user = "nobody"
                guard geteuid() == 0 else {
                    let error = await refusal(supervisor, worker)
                    #expect(error?.registrationError?.field == "user")
                    #expect(error?.message.contains("needs a supervisor running as root") == true)
                    return
                }
                let handle = try await supervisor.register(worker)
                #expect(try await handle.waitForShutdown() == .stopped)
                #expect(await handle.lastReportedError == "65534:65534 unreachable")
                // The supervisor's own user (root here) reaches it: one user is one trust domain.
                worker.user = nil
                worker.name = "privileged"
                let same = try await supervisor.register(worker)
                #expect(try await same.waitForShutdown() == .stopped)
                #expect(await same.lastReportedError == "0:0 readable")

                worker.user = "no-such-user-\(getpid())"
                #expect(await refusal(supervisor, worker)?.registrationError?.field == "user")
                worker.user = "nobody"
                worker.group = "no-such-group-\(getpid())"
                #expect(await refusal(supervisor, worker)?.registrationError?.field == "group")
            }
            // posix_spawn cannot switch users: refused at registration, naming the way out.
            try await withSupervisor(strategy: .posixSpawn) { supervisor in
                var worker = shellWorker("unprivileged", "exit 0")
                worker.user = "nobody"
                let error = await refusal(supervisor, worker)
                #expect(error?.registrationError?.field == "user")
                #expect(geteuid() != 0 || error?.message.contains("posixSpawn strategy cannot switch user") == true)
            }
        }

        @Test(
            "SIGUSR1 is a wake-up a worker can take: the runtime delivers it as a notification, the Python example handles it",
            arguments: spawnStrategies
        )
        func notificationsDoNotKillWorkers(strategy: UVSpawnStrategy) async throws {
            try await withSupervisor(strategy: strategy) { supervisor in
                // A Swift worker on the runtime: it said NOTIFY=1 at start, and sees the wake-up in its body.
                let swiftTarget = try await supervisor.register(RuntimeTests.swiftWorker("notified", "notified"))
                let swiftPid = try await swiftTarget.waitForReady()
                var pointing = shellWorker("pointing", "exit 0")
                pointing.notifyPID = swiftPid
                _ = try await supervisor.register(pointing)
                #expect(try await swiftTarget.waitForShutdown() == .stopped)
                #expect(await swiftTarget.detail == .unregistered(.completed, lastExit: .exited(0)))

                // The Python example handles SIGUSR1 and says so: it survives being notified.
                var python = BackgroundWorker(
                    name: "python",
                    entryPoint: .executable("/usr/bin/env", arguments: ["python3", "Examples/workers/example_worker.py", "--expect-main-arg", "42"])
                )
                python.mainArgument = 42
                python.reportsReadiness = true
                python.restartInterval = .never
                let pythonTarget = try await supervisor.register(python)
                let pythonPid = try await pythonTarget.waitForReady()
                pointing.notifyPID = pythonPid
                let pointingHandle = try await supervisor.register(pointing)
                #expect(try await pointingHandle.waitForShutdown() == .stopped)  // notified at start and at exit
                #expect(await pythonTarget.status == .started(pid: pythonPid))
            }
        }

        @Test("a built-in worker whose binary never hands over to BuiltinWorkers.runIfRequested is reported as such, once", arguments: spawnStrategies)
        func builtinInABinaryThatDoesNotHandOver(strategy: UVSpawnStrategy) async throws {
            let (lines, status) = try await runFixture(["builtin-unhandled"], strategy: strategy, environment: ["FIXTURE_NO_BUILTINS": "1"])
            #expect(status == .exited(0))
            // The binary's own main ran once (not restarted at interval 0), and the detail says what to fix.
            #expect(lines.filter { $0 == "this is the supervisor's own main" }.count == 1, "\(lines)")
            #expect(lines.last?.contains("call BuiltinWorkers.runIfRequested first in main") == true, "\(lines)")
        }

        @Test("the reliability suite, short form: every check meets its goal", .timeLimit(.minutes(3)))
        func reliabilitySuiteShort() async throws {
            let (lines, status) = try await runFixture(["--short"], program: "ReliabilitySuite")
            #expect(status == .exited(0), "\(lines.joined(separator: "\n"))")
            #expect(lines.last == "all checks passed", "\(lines.joined(separator: "\n"))")
        }
    }
}
