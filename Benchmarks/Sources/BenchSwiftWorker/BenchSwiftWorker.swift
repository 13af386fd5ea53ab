import BackgroundWorkerRuntime

/// A Swift worker on the runtime: `return` exits 0 at once; `serve` reports ready and waits for SIGTERM.
@main
struct BenchSwiftWorker: BackgroundWorkerMain {
    static func run(_ worker: WorkerContext) async throws {
        guard CommandLine.arguments.dropFirst().first == "serve" else { return }
        try worker.reportReady()
        for await _ in worker.reloads {}
        try Task.checkCancellation()
    }
}
