import BackgroundWorkerRuntime
import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

/// A supervisor process for tests that kill a supervisor: registers N workers running the executable given
/// as the first argument (in its `serve` mode), prints each one's pid once it is ready, then waits.
///
/// Usage: fixture-supervisor WORKER-EXECUTABLE N
///        fixture-supervisor builtin   (runs its built-in worker "echo" and reports how it went)
@main
struct FixtureSupervisor {
    static func main() async throws {
        // A built-in worker: ready only if its registration arrived, then serves until SIGTERM.
        await BuiltinWorkers.runIfRequested([
            "echo": { worker in
                guard worker.identity.mainArgument == 9 else { throw CancellationError() }
                try worker.reportReady()
                for await _ in worker.reloads {}
                try Task.checkCancellation()
            }
        ])
        let arguments = CommandLine.arguments
        if arguments.count == 2, arguments[1] == "builtin" {
            try await Self.runBuiltin()
            return
        }
        guard arguments.count == 3, let count = Int(arguments[2]) else {
            emit("usage: fixture-supervisor WORKER-EXECUTABLE N")
            return
        }
        try await withWorkerSupervisor { supervisor in
            for index in 0..<count {
                var worker = BackgroundWorker(name: "fixture-\(index)", entryPoint: .executable(arguments[1], arguments: ["serve"]))
                worker.reportsReadiness = true
                worker.restartInterval = .never
                let handle = try await supervisor.register(worker)
                emit("\(try await handle.waitForReady())")
            }
            emit("all ready")
            // Run until the test kills this process: a stream that never yields nor finishes.
            let (forever, continuation) = AsyncStream<Void>.makeStream()
            for await _ in forever {}
            continuation.finish()  // never reached; keeps the continuation (and so the stream) alive
        }
    }
}

extension FixtureSupervisor {
    static func runBuiltin() async throws {
        try await withWorkerSupervisor { supervisor in
            var worker = BackgroundWorker(name: "echo-builtin", entryPoint: .builtin("echo"))
            worker.mainArgument = 9
            worker.reportsReadiness = true
            worker.restartInterval = .never
            let handle = try await supervisor.register(worker)
            let pid = try await handle.waitForReady()
            emit("builtin ready \(pid)")
            await handle.terminate()
            _ = try await handle.waitForShutdown()
            emit("\(await handle.detail)")
            var unknown = worker
            unknown.entryPoint = .builtin("no-such-builtin")
            let missing = try await supervisor.register(unknown)
            _ = try await missing.waitForShutdown()
            emit("\(await missing.detail)")
        }
    }
}

/// Writes a line to standard output at once (a pipe would otherwise buffer it).
func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
