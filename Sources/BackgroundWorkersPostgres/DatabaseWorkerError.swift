import PostgresNIO

/// The one error type of `BackgroundWorkersPostgres`: what went wrong, in a sentence that names the value
/// involved and what to do.
public struct DatabaseWorkerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong. A struct over a private enum, so that codes can be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case noDatabaseFlag
            case alreadyInitialized
            case noServer
            case unknownDatabaseOID
            case unknownRoleOID
            case connectionFailed
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The worker was registered without `.databaseConnection` (PostgreSQL: "database connection
        /// requirement not indicated during registration").
        public static let noDatabaseFlag = Code(.noDatabaseFlag)
        /// `initializeConnection` was already called in this worker process (PostgreSQL allows it once).
        public static let alreadyInitialized = Code(.alreadyInitialized)
        /// The process lacks the contract's database variables, or they are malformed, or the password
        /// descriptor cannot be read.
        public static let noServer = Code(.noServer)
        /// No row of `pg_database` has the OID.
        public static let unknownDatabaseOID = Code(.unknownDatabaseOID)
        /// No row of `pg_roles` has the OID.
        public static let unknownRoleOID = Code(.unknownRoleOID)
        /// The server refused the connection or could not be reached; the message carries its reason and
        /// SQLSTATE.
        public static let connectionFailed = Code(.connectionFailed)

        /// The code's name.
        public var description: String {
            switch self.base {
            case .noDatabaseFlag: "noDatabaseFlag"
            case .alreadyInitialized: "alreadyInitialized"
            case .noServer: "noServer"
            case .unknownDatabaseOID: "unknownDatabaseOID"
            case .unknownRoleOID: "unknownRoleOID"
            case .connectionFailed: "connectionFailed"
            }
        }
    }

    /// What went wrong.
    public let code: Code
    /// A sentence naming the values involved.
    public let message: String
    /// The server's SQLSTATE, when the server said why (`3D000` for a database that does not exist, `28000`
    /// for a role that does not exist, `28P01` for a wrong password, `57P03` while it starts).
    public let sqlState: String?

    init(_ code: Code, _ message: String, sqlState: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
    }

    /// `code: message`.
    public var description: String { "\(self.code): \(self.message)" }

    /// What any error of a database call says, for a person and for an `ERROR=` line: for a postgres-nio
    /// error the server's message and SQLSTATE (its own description hides them, to keep query text out of
    /// logs), otherwise the error's description.
    public static func describe(_ error: any Error) -> String {
        explain(error).text
    }
}

/// What a postgres-nio error says, for a person: the server's message and SQLSTATE when it sent one (a
/// `PSQLError`'s own description hides them on purpose), the underlying error otherwise.
func explain(_ error: any Error) -> (text: String, sqlState: String?) {
    guard let error = error as? PSQLError else { return ("\(error)", nil) }
    if let info = error.serverInfo, let message = info[.message] {
        let state = info[.sqlState]
        return ("\(message)\(state.map { " (SQLSTATE \($0))" } ?? "")", state)
    }
    if let underlying = error.underlying { return ("\(error.code): \(underlying)", nil) }
    return ("\(error.code)", nil)
}
