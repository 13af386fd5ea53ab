import BackgroundWorkerContract
import Logging
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

extension DatabaseServer {
    /// The server as this process's worker contract names it: `BGW_DB_*` and descriptor 6.
    /// - Throws: ``DatabaseWorkerError`` with ``DatabaseWorkerError/Code/noServer``.
    static func fromContract() throws(DatabaseWorkerError) -> DatabaseServer {
        do {
            return try DatabaseServer(
                variable: { name in getenv(name).map { String(cString: $0) } },
                password: { descriptor throws(RegistrationError) in
                    guard let password = readSecret(descriptor) else {
                        throw RegistrationError(
                            workerName: getenv(WorkerProcessContract.Variable.name).map { String(cString: $0) } ?? "?",
                            field: WorkerProcessContract.Variable.databasePasswordDescriptor,
                            value: "\(descriptor)",
                            rule: "which cannot be read (errno \(errno)); was descriptor 6 closed?"
                        )
                    }
                    return password
                }
            )
        } catch {
            throw DatabaseWorkerError(.noServer, "this worker has no database server: \(error)")
        }
    }

    /// postgres-nio's configuration for `user` on `database`.
    func configuration(user: String, database: String, applicationName: String) throws(DatabaseWorkerError) -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        switch self.location {
        case .unixSocket(let directory):
            configuration = .init(
                unixSocketPath: "\(directory)/.s.PGSQL.\(self.port)",
                username: user,
                password: self.password,
                database: database
            )
        case .tcp(let host):
            let tls: PostgresConnection.Configuration.TLS
            switch self.tls {
            case .disable:
                tls = .disable
            case .require:
                var configuration = TLSConfiguration.makeClientConfiguration()
                if let roots = self.tlsRootCertificates { configuration.trustRoots = .file(roots) }
                do {
                    tls = .require(try NIOSSLContext(configuration: configuration))
                } catch {
                    throw DatabaseWorkerError(
                        .connectionFailed,
                        "setting up TLS for \(host):\(self.port)\(self.tlsRootCertificates.map { " with root certificates \($0)" } ?? "") failed: \(error)"
                    )
                }
            }
            configuration = .init(host: host, port: self.port, username: user, password: self.password, database: database, tls: tls)
        }
        configuration.options.additionalStartupParameters = [
            // Shown in pg_stat_activity, as PostgreSQL shows a bgworker's type.
            ("application_name", String(applicationName.prefix(63))),
            // A backend whose worker went away (SIGKILL, a closed socket mid-query) notices within a second
            // instead of running its query to the end.
            ("client_connection_check_interval", "1000"),
        ]
        return configuration
    }

    /// Connects, turning postgres-nio's error into one that names the server, the role and the database.
    func connect(user: String, database: String, applicationName: String, logger: Logger) async throws(DatabaseWorkerError) -> PostgresConnection {
        let configuration = try self.configuration(user: user, database: database, applicationName: applicationName)
        do {
            return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        } catch {
            let (text, state) = explain(error)
            throw DatabaseWorkerError(
                .connectionFailed,
                "connecting to database '\(database)' as role '\(user)' at \(self.placeDescription) failed: \(text)",
                sqlState: state
            )
        }
    }

    /// Where the server is, for messages.
    var placeDescription: String {
        switch self.location {
        case .unixSocket(let directory): "\(directory)/.s.PGSQL.\(self.port)"
        case .tcp(let host): "\(host):\(self.port)"
        }
    }
}

/// Reads a sealed secret descriptor from offset 0 (so that every reader gets all of it); nil on failure.
func readSecret(_ descriptor: Int32) -> String? {
    var bytes = [UInt8](repeating: 0, count: DatabaseServer.maxFieldLength + 1)
    var total = 0
    while total < bytes.count {
        let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + total, $0.count - total, off_t(total)) }
        if count < 0 && errno == EINTR { continue }
        if count < 0 { return nil }
        if count == 0 { break }
        total += count
    }
    return String(decoding: bytes.prefix(total), as: UTF8.self)
}

/// Starts closing `connection` without waiting, and holds it until it is closed: postgres-nio's connection must
/// not be released while its channel is still open.
func closeKeepingAlive(_ connection: PostgresConnection) {
    connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
}
