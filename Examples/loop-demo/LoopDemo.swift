import UVConcurrency

/// A small tour of `UVConcurrency`: an actor on a libuv loop that starts child processes, restarts one that
/// fails, and stops cleanly on Ctrl-C or after a few rounds.
///
/// Run it with `swift run loop-demo` (or the README's first quick-start command).
actor Conductor {
    let loop: UVEventLoop
    private var restarts = 0
    private let maxRestarts = 3

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.loop.asUnownedSerialExecutor() }

    init(loop: UVEventLoop) {
        self.loop = loop
    }

    /// Spawns a worker that fails twice and then succeeds; each exit comes back through a libuv callback that
    /// enters this actor synchronously with `assumeIsolated`.
    func start(attempt: Int, done: CheckedContinuation<Void, Never>) {
        let script = attempt < 3 ? "echo \"  worker pid $$: attempt \(attempt), failing\"; exit 1" : "echo \"  worker pid $$: attempt \(attempt), done\""
        do {
            let process = try self.loop.spawn(UVSpawnOptions(executable: "/bin/sh", arguments: ["-c", script])) {
                [self] status in
                self.assumeIsolated { conductor in
                    conductor.exited(status, attempt: attempt, done: done)
                }
            }
            print("started pid \(process.pid) (attempt \(attempt))")
        } catch {
            print("spawn failed: \(error)")
            done.resume()
        }
    }

    private func exited(_ status: UVExitStatus, attempt: Int, done: CheckedContinuation<Void, Never>) {
        print("pid exited: \(status)")
        guard status == .exited(1), self.restarts < self.maxRestarts else {
            done.resume()
            return
        }
        self.restarts += 1
        let delay = Duration.milliseconds(100 * (1 << (self.restarts - 1)))
        print("restarting in \(delay) (backoff)")
        do {
            try self.loop.scheduleTimer(after: delay) { [self] in
                self.assumeIsolated { $0.start(attempt: attempt + 1, done: done) }
            }
        } catch {
            print("cannot schedule the restart: \(error)")
            done.resume()
        }
    }
}

@main
struct LoopDemo {
    static func main() async throws {
        let loop = try UVEventLoop(name: "loop-demo")
        print("UVEventLoop '\(loop.name)' running; Ctrl-C stops it.")
        let conductor = Conductor(loop: loop)
        let interrupts = try await loop.signals(.interrupt)

        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { done in
                    Task { await conductor.start(attempt: 1, done: done) }
                }
                print("all rounds finished")
            }
            group.addTask {
                for await _ in interrupts {
                    print("\nSIGINT: stopping")
                    return
                }
            }
            await group.next()
            group.cancelAll()
        }
        try await loop.shutdown()
        print("loop stopped cleanly")
    }
}
