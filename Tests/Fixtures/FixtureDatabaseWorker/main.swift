import BackgroundWorkerRuntime
import BackgroundWorkersPostgres
import PostgresNIO

// A database worker for the tests, one mode per case (its first argument). Each mode reports readiness once
// connected; failures end the body with an error, which the runtime reports as an ERROR= line and exit 1.
BackgroundWorkerRuntime.run { worker in
    let arguments = Array(CommandLine.arguments.dropFirst())
    func optional(_ index: Int) -> String? {
        index < arguments.count && arguments[index] != "-" ? arguments[index] : nil
    }
    switch arguments.first {
    case "by-name":
        _ = try await worker.initializeConnection(database: optional(1), user: optional(2))
        try worker.reportReady()
        try await idle(worker)
    case "by-oid":
        _ = try await worker.initializeConnection(databaseOID: optional(1).flatMap(UInt32.init), userOID: optional(2).flatMap(UInt32.init))
        try worker.reportReady()
        try await idle(worker)
    case "twice":
        _ = try await worker.initializeConnection()
        _ = try await worker.initializeConnection()
    case "sleep-query":
        // A query that runs far longer than the test: SIGTERM must end it.
        let connection = try await worker.initializeConnection()
        try worker.reportReady()
        try await connection.query("SELECT pg_sleep(600)", logger: DatabaseConnectionState.silentLogger)
    case "listen":
        // Holds the connection until the server goes away: the listen sequence then fails, and so does the body.
        let connection = try await worker.initializeConnection()
        try await connection.listen(on: "bgworker_test") { notifications in
            try worker.reportReady()
            for try await _ in notifications {}
        }
        throw FixtureError("the connection ended")
    default:
        throw FixtureError("unknown mode \(arguments)")
    }
}

/// Serves reload requests until cancelled (SIGTERM), then ends by throwing.
func idle(_ worker: WorkerContext) async throws {
    for await _ in worker.reloads {}
    try Task.checkCancellation()
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
