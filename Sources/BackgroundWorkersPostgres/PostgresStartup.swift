import BackgroundWorkerContract
import Logging
import PostgresNIO

/// The supervisor's start phases on a real PostgreSQL server: PostgreSQL's `BgWorkerStart_ConsistentState`
/// and `BgWorkerStart_RecoveryFinished` for a supervisor that runs beside a server instead of inside it.
///
/// Use it as the supervisor's startup step:
///
/// ```swift
/// configuration.database = server
/// configuration.startupStep = { progress in
///     try await PostgresStartup.waitForServer(server, logger: logger, consistent: progress.reportConsistent)
/// }
/// ```
///
/// (This module depends on the worker runtime, never on the supervisor, so the step takes the report as a
/// closure.)
public enum PostgresStartup {
    /// The waits between attempts: from 100 ms, doubling, at most 2 s.
    public static let initialDelay: Duration = .milliseconds(100)
    /// The longest wait between attempts.
    public static let maximumDelay: Duration = .seconds(2)

    /// Waits until `server` accepts connections, reports the consistent state (a standby in recovery that
    /// accepts read-only connections counts, as hot standby does in PostgreSQL), then waits until
    /// `pg_is_in_recovery()` is false and returns: recovery is finished.
    ///
    /// While the server is down, still starting up, or in recovery, it tries again after a bounded backoff
    /// (``initialDelay`` doubling up to ``maximumDelay``) and logs why at `info` (the first time for each
    /// reason) and `debug` level. It never gives up on its own: cancel it (a supervisor shutdown does) to stop.
    /// - Parameters:
    ///   - server: The server, as in the supervisor's `Configuration.database`.
    ///   - logger: Where the waiting is logged.
    ///   - consistent: Called once, when the server first accepts a connection.
    /// - Throws: `CancellationError` when cancelled.
    public static func waitForServer(
        _ server: DatabaseServer,
        logger: Logger,
        consistent: @Sendable () async -> Void
    ) async throws {
        var delay = Self.initialDelay
        var reportedConsistent = false
        var lastReason: String?
        var connection: PostgresConnection?
        defer { if let connection { closeKeepingAlive(connection) } }
        while true {
            try Task.checkCancellation()
            do {
                if connection == nil || connection?.isClosed == true {
                    connection = try await server.connect(
                        user: server.defaultUser,
                        database: server.maintenanceDatabase,
                        applicationName: "bgworker supervisor (startup)",
                        logger: DatabaseConnectionState.silentLogger
                    )
                }
                if !reportedConsistent {
                    reportedConsistent = true
                    logger.info("database server \(server.placeDescription) accepts connections: consistent state")
                    await consistent()
                }
                let rows = try await connection!.query("SELECT pg_is_in_recovery()", logger: DatabaseConnectionState.silentLogger)
                var inRecovery = true
                for try await value in rows.decode(Bool.self) { inRecovery = value }
                if !inRecovery {
                    logger.info("database server \(server.placeDescription) finished recovery")
                    return
                }
                let reason = "the server is in recovery (a standby, or still replaying)"
                if reason != lastReason { logger.info("waiting for the database server: \(reason)") }
                lastReason = reason
            } catch {
                let reason = (error as? DatabaseWorkerError)?.message ?? explain(error).text
                if reason != lastReason {
                    logger.info("waiting for the database server \(server.placeDescription): \(reason)")
                } else {
                    logger.debug("still waiting for the database server: \(reason)")
                }
                lastReason = reason
                if let old = connection { closeKeepingAlive(old) }
                connection = nil
            }
            try await Task.sleep(for: delay)
            delay = min(delay * 2, Self.maximumDelay)
        }
    }
}
