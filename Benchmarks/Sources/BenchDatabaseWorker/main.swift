import BackgroundWorkerRuntime
import BackgroundWorkersPostgres

// Connects to the supervisor's database, reports ready with the connection open, and returns (the runtime
// closes the connection cleanly before the process exits).
BackgroundWorkerRuntime.run { worker in
    _ = try await worker.initializeConnection()
    try worker.reportReady()
}
