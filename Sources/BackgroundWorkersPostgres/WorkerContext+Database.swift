import BackgroundWorkerContract
import BackgroundWorkerRuntime
import Logging
import PostgresNIO
import Synchronization

extension WorkerContext {
    /// Connects this worker to a database of the supervisor's PostgreSQL server: PostgreSQL's
    /// `BackgroundWorkerInitializeConnection(dbname, username)`.
    ///
    /// Allowed once per worker process, and only in a worker registered with `.databaseConnection` (a failed
    /// attempt does not count: PostgreSQL's worker would have exited with it, here it may retry). The
    /// server, port, TLS mode, default role and password are the supervisor's `Configuration.database`,
    /// passed through the worker process contract (the password as descriptor 6, never in the environment).
    ///
    /// The connection is closed by the runtime: at once when the body is cancelled (SIGTERM, or the
    /// supervisor died), so that a query in flight fails instead of holding the worker, and cleanly (a
    /// `Terminate` message) when the body ends.
    /// - Parameters:
    ///   - database: The database; `nil` connects to the server's maintenance database
    ///     (`DatabaseServer.maintenanceDatabase`, `postgres` by default). PostgreSQL's own workers then see only
    ///     the shared catalogs; a client connection always has a database, and the maintenance database is the
    ///     one every cluster has.
    ///   - user: The role; `nil` is the configured default role (`DatabaseServer.defaultUser`).
    ///   - logger: Where postgres-nio logs; by default nowhere.
    /// - Returns: The open connection. Run queries on it with postgres-nio's API.
    /// - Throws: ``DatabaseWorkerError``: ``DatabaseWorkerError/Code/noDatabaseFlag``,
    ///   ``DatabaseWorkerError/Code/alreadyInitialized``, ``DatabaseWorkerError/Code/noServer``, or
    ///   ``DatabaseWorkerError/Code/connectionFailed`` with the server's reason and SQLSTATE (a database or role
    ///   that does not exist, a wrong password, a server that is down).
    public func initializeConnection(
        database: String? = nil,
        user: String? = nil,
        logger: Logger = DatabaseConnectionState.silentLogger
    ) async throws(DatabaseWorkerError) -> PostgresConnection {
        try await self.connectOnce(logger: logger) { _ throws(DatabaseWorkerError) in (database, user) }
    }

    /// Connects this worker to a database given by OID, as a role given by OID: PostgreSQL's
    /// `BackgroundWorkerInitializeConnectionByOid(dboid, useroid)`.
    ///
    /// The OIDs are resolved through the catalogs (`pg_database`, `pg_roles`) over a short connection to the
    /// maintenance database as the default role; the rules are those of
    /// ``initializeConnection(database:user:logger:)``.
    /// - Parameters:
    ///   - databaseOID: The database's OID; `nil` (PostgreSQL's `InvalidOid`) is the maintenance database.
    ///   - userOID: The role's OID; `nil` is the configured default role.
    ///   - logger: Where postgres-nio logs; by default nowhere.
    /// - Throws: ``DatabaseWorkerError``, with ``DatabaseWorkerError/Code/unknownDatabaseOID`` or
    ///   ``DatabaseWorkerError/Code/unknownRoleOID`` naming an OID that no catalog row has.
    public func initializeConnection(
        databaseOID: UInt32?,
        userOID: UInt32?,
        logger: Logger = DatabaseConnectionState.silentLogger
    ) async throws(DatabaseWorkerError) -> PostgresConnection {
        try await self.connectOnce(logger: logger) { server throws(DatabaseWorkerError) in
            guard databaseOID != nil || userOID != nil else { return (nil, nil) }
            let catalog = try await server.connect(
                user: server.defaultUser,
                database: server.maintenanceDatabase,
                applicationName: "\(self.identity.name) (catalog lookup)",
                logger: logger
            )
            defer { closeKeepingAlive(catalog) }
            let database = try await databaseOID.asyncMap { oid throws(DatabaseWorkerError) in
                try await Self.name(of: oid, in: "pg_database", column: "datname", on: catalog, logger: logger, code: .unknownDatabaseOID)
            }
            let user = try await userOID.asyncMap { oid throws(DatabaseWorkerError) in
                try await Self.name(of: oid, in: "pg_roles", column: "rolname", on: catalog, logger: logger, code: .unknownRoleOID)
            }
            return (database, user)
        }
    }

    /// The one path of both forms: checks the flag, claims the once-per-process call, reads the server from the
    /// contract, lets `resolve` name the database and role (`nil` for the defaults), connects, and hands the
    /// connection to the runtime to close. Any failure gives the claim back: PostgreSQL's worker would have
    /// exited with it, so a retry is not a second call.
    private func connectOnce(
        logger: Logger,
        resolve: (DatabaseServer) async throws(DatabaseWorkerError) -> (database: String?, user: String?)
    ) async throws(DatabaseWorkerError) -> PostgresConnection {
        guard self.identity.flags.contains(.databaseConnection) else {
            throw DatabaseWorkerError(
                .noDatabaseFlag,
                "worker '\(self.identity.name)' was registered without .databaseConnection; register it with flags [.sharedMemoryAccess, .databaseConnection] and a start time of .consistentState or .recoveryFinished"
            )
        }
        try DatabaseConnectionState.shared.claim(worker: self.identity.name)
        let connection: PostgresConnection
        do {
            let server = try DatabaseServer.fromContract()
            let (database, user) = try await resolve(server)
            connection = try await server.connect(
                user: user ?? server.defaultUser,
                database: database ?? server.maintenanceDatabase,
                applicationName: self.identity.name,
                logger: logger
            )
        } catch {
            DatabaseConnectionState.shared.release()
            throw error
        }
        DatabaseConnectionState.shared.connected()
        // Cancelled (SIGTERM, supervisor gone): close now, so that a query in flight fails at once.
        self.onCancel { closeKeepingAlive(connection) }
        // Ended: close cleanly before the process exits.
        self.addCleanup { try? await connection.close() }
        return connection
    }

    /// The name in `column` of the row of `catalog` whose OID is `oid`.
    private static func name(
        of oid: UInt32,
        in catalog: String,
        column: String,
        on connection: PostgresConnection,
        logger: Logger,
        code: DatabaseWorkerError.Code
    ) async throws(DatabaseWorkerError) -> String {
        do {
            let rows = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT \(column)::text FROM \(catalog) WHERE oid = $1::oid", binds: Self.binds(Int64(oid))),
                logger: logger
            )
            for try await (name) in rows.decode(String.self) { return name }
        } catch {
            throw DatabaseWorkerError(.connectionFailed, "looking up OID \(oid) in \(catalog) failed: \(explain(error).text)")
        }
        let what = catalog == "pg_database" ? "database" : "role"
        throw DatabaseWorkerError(code, "no \(what) has OID \(oid) (\(catalog) has no such row)")
    }

    private static func binds(_ value: Int64) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(value)
        return binds
    }
}

/// The once-per-process state of ``WorkerContext/initializeConnection(database:user:logger:)``.
public final class DatabaseConnectionState: Sendable {
    /// A logger that drops everything: the default of `initializeConnection`.
    public static let silentLogger = Logger(label: "BackgroundWorkersPostgres", factory: { _ in SwiftLogNoOpLogHandler() })

    static let shared = DatabaseConnectionState()

    private enum State { case none, connecting, connected }
    private let state = Mutex(State.none)

    func claim(worker: String) throws(DatabaseWorkerError) {
        let previous = self.state.withLock { state -> State in
            defer { if state == .none { state = .connecting } }
            return state
        }
        guard previous == .none else {
            throw DatabaseWorkerError(
                .alreadyInitialized,
                "worker '\(worker)' already called initializeConnection\(previous == .connecting ? " (still connecting)" : ""); a worker process connects once, as BackgroundWorkerInitializeConnection allows: keep the connection it returned"
            )
        }
    }

    func release() { self.state.withLock { $0 = .none } }
    func connected() { self.state.withLock { $0 = .connected } }
}

extension Optional {
    /// `map` for an asynchronous transform that throws ``DatabaseWorkerError``.
    fileprivate func asyncMap<T>(_ transform: (Wrapped) async throws(DatabaseWorkerError) -> T) async throws(DatabaseWorkerError) -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}
