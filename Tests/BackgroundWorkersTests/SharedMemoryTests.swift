import BackgroundWorkers
import Testing
import UVConcurrency

extension SupervisorTests {
    @Suite("Shared memory (PG-SEMANTICS 13; issue 4, item 3)")
    struct SharedMemoryTests {
        /// A Python worker that maps the shared-memory segment and runs `body` with it as `mm`.
        static func pythonWorker(_ name: String, shared: Bool, _ body: String) -> BackgroundWorker {
            let script = """
                import mmap, os, time
                def ready():
                    os.write(int(os.environ["BGW_READY_FD"]), b"READY=1\\n")
                def segment():
                    fd = int(os.environ["BGW_SHM_FD"])
                    return mmap.mmap(fd, int(os.environ["BGW_SHM_SIZE"]), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                \(body)
                time.sleep(1000)
                """
            var worker = BackgroundWorker(name: name, entryPoint: .executable("/usr/bin/env", arguments: ["python3", "-c", script]))
            worker.flags = shared ? [.sharedMemoryAccess] : []
            worker.restartInterval = .never
            worker.reportsReadiness = true
            return worker
        }

        @Test("two workers with the flag see each other's writes; one without it gets no segment")
        func flaggedWorkersShare() async throws {
            try await withSupervisor { supervisor in
                let writer = try await supervisor.register(Self.pythonWorker("writer", shared: true, """
                    mm = segment(); mm[0:5] = b"hello"; ready()
                    """))
                _ = try await writer.waitForReady()
                // Ready only if it reads the writer's bytes, and writes back for the writer's segment too.
                let reader = try await supervisor.register(Self.pythonWorker("reader", shared: true, """
                    mm = segment()
                    if mm[0:5] != b"hello": raise SystemExit(3)
                    ready()
                    """))
                _ = try await reader.waitForReady()
                let outsider = try await supervisor.register(Self.pythonWorker("outsider", shared: false, """
                    if "BGW_SHM_FD" in os.environ: raise SystemExit(3)
                    try:
                        os.fstat(5)
                        raise SystemExit(4)
                    except OSError:
                        pass
                    ready()
                    """))
                _ = try await outsider.waitForReady()
            }
        }

        @Test("the segment is its owner's only (mode 0600) and sealed: no worker can shrink or grow it")
        func segmentIsPrivateAndSealed() async throws {
            try await withSupervisor { supervisor in
                // Ready only if the mode is 0600 and both resizes are refused (EPERM, the seals).
                let checker = try await supervisor.register(Self.pythonWorker("sealed", shared: true, """
                    import stat
                    fd = int(os.environ["BGW_SHM_FD"]); size = int(os.environ["BGW_SHM_SIZE"])
                    if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600: raise SystemExit(3)
                    for wanted in (size // 2, size * 2):
                        try:
                            os.ftruncate(fd, wanted)
                            raise SystemExit(4)
                        except PermissionError:
                            pass
                    ready()
                    """))
                _ = try await checker.waitForReady()
            }
        }

        @Test("a crash reset replaces the segment with a zeroed one")
        func crashResetClearsSharedMemory() async throws {
            try await withSupervisor { supervisor in
                let log = await EventLog(supervisor)
                // Ready only on a clean segment; a dirty one makes it exit 0 (done) instead.
                var marker = Self.pythonWorker("marker", shared: true, """
                    mm = segment()
                    if mm[0] != 0: raise SystemExit(0)
                    mm[0] = 1; ready()
                    """)
                marker.restartInterval = .seconds(3600)  // a crash reset restarts it at once
                let handle = try await supervisor.register(marker)
                let firstPid = try await handle.waitForReady()
                var crasher = shellWorker("crasher", Script.crash)
                crasher.flags = [.sharedMemoryAccess]
                _ = try await supervisor.register(crasher)
                let outcome = await log.first { event in
                    guard event.name == "marker" else { return false }
                    if case .ready(let pid) = event.kind { return pid != firstPid }
                    if case .unregistered = event.kind { return true }
                    return false
                }
                guard case .ready = outcome.kind else {
                    Issue.record("after the reset the marker saw its old byte: \(outcome.kind)")
                    return
                }
            }
        }

        @Test("a negative segment size is refused, naming it")
        func negativeSize() {
            var configuration = WorkerSupervisor.Configuration()
            configuration.sharedMemorySize = -1
            do {
                _ = try WorkerSupervisor(configuration: configuration)
                Issue.record("accepted")
            } catch {
                #expect(error.code == .sharedMemoryFailed)
                #expect(error.message.contains("sharedMemorySize -1"))
            }
        }
    }
}
