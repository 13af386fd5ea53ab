import BackgroundWorkerRuntime

/// A Swift worker on the runtime: `return` exits 0 at once; `serve` reports ready and waits for SIGTERM. As a
/// built-in (a supervisor's `builtinExecutable`), the built-in's name is the mode.
@main
struct BenchSwiftWorker: BackgroundWorkerMain {
    static func run(_ worker: WorkerContext) async throws {
        guard (BuiltinWorkers.requestedName ?? CommandLine.arguments.dropFirst().first) == "serve" else { return }
        try worker.reportReady()
        for await _ in worker.reloads {}
        try Task.checkCancellation()
    }
}
