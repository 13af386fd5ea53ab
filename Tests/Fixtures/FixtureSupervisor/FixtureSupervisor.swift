import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

/// A supervisor process for tests that kill a supervisor: registers N workers running the executable given
/// as the first argument (in its `serve` mode), prints each one's pid once it is ready, then waits.
///
/// Usage: fixture-supervisor WORKER-EXECUTABLE N
@main
struct FixtureSupervisor {
    static func main() async throws {
        let arguments = CommandLine.arguments
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
            try await Task.sleep(for: .seconds(3600))
        }
    }
}

/// Writes a line to standard output at once (a pipe would otherwise buffer it).
func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
