import BackgroundWorkerRuntime

/// A Swift background worker in a dozen lines: it reports ready, then serves reload requests until SIGTERM
/// cancels it (exit 1) or the supervisor dies (exit 1 within 100 ms).
///
/// Its first argument picks a behaviour, for the tests: `serve` (the default), `return` (exits 0 at once),
/// `throw` (exits 1 at once), `exit-on-reload` (reports ready, then exits 0 at its first SIGHUP).
@main
struct SwiftWorker: BackgroundWorkerMain {
    struct Failure: Error {}

    static func run(_ worker: WorkerContext) async throws {
        let mode = CommandLine.arguments.dropFirst().first ?? "serve"
        switch mode {
        case "return":
            return
        case "throw":
            throw Failure()
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
