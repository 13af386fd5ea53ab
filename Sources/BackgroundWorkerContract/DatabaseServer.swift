/// Where the PostgreSQL server of a supervisor's database workers is, and who they are by default: the
/// supervisor's `Configuration.database`, handed to every worker registered with
/// ``BackgroundWorker/Flags/databaseConnection`` through the worker process contract.
///
/// | variable | value |
/// |---|---|
/// | `BGW_DB_SOCKET_DIR` or `BGW_DB_HOST` | the Unix socket directory (the server's `unix_socket_directories`), or a host name or address for TCP |
/// | `BGW_DB_PORT` | the port (for a Unix socket it names the socket file, `.s.PGSQL.<port>`) |
/// | `BGW_DB_TLS` | `disable` or `require` (TCP only) |
/// | `BGW_DB_TLS_ROOT_CERT` | with `require`, when set: the PEM file of the certificate authorities to trust instead of the system's (libpq's `sslrootcert`) |
/// | `BGW_DB_USER` | the role used when a worker names none |
/// | `BGW_DB_NAME` | the maintenance database, used when a worker names none |
/// | `BGW_DB_PASSWORD_FD` | descriptor 6, only when a password is configured: a sealed, read-only memfd holding the password's UTF-8 bytes; read it with `pread` from offset 0 |
///
/// The password never travels in an environment variable or on a command line, both of which other users'
/// processes can read in `/proc`. Descriptor 6 reaches only database workers; a process of the same Unix user
/// can still open `/proc/<pid>/fd/6` (one user is one trust domain on Linux: give database workers a user of
/// their own with ``BackgroundWorker/user`` where that matters).
public struct DatabaseServer: Sendable, Hashable {
    /// How the server is reached.
    public enum Location: Sendable, Hashable {
        /// A Unix domain socket in this directory (PostgreSQL's `unix_socket_directories`).
        case unixSocket(directory: String)
        /// TCP to a host name or address.
        case tcp(host: String)
    }

    /// Whether a TCP connection uses TLS.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        /// No TLS (`sslmode=disable`).
        case disable
        /// TLS, verifying the server's certificate against the system's trust roots (`sslmode=verify-full`).
        case require
    }

    /// How the server is reached.
    public var location: Location
    /// The server's port; for a Unix socket it names the socket file. Default 5432.
    public var port: Int
    /// TLS for TCP connections; must be ``TLSMode/disable`` for a Unix socket. Default disable.
    public var tls: TLSMode
    /// With ``TLSMode/require``: the absolute path of a PEM file of the certificate authorities to trust
    /// instead of the system's (libpq's `sslrootcert`), for a server whose certificate a private authority
    /// signed. `nil` (the default) trusts the system's roots.
    public var tlsRootCertificates: String?
    /// The role a worker connects as when it names none (PostgreSQL's bootstrap superuser in the seed; here
    /// the role the supervisor's operator chose).
    public var defaultUser: String
    /// The database a worker connects to when it names none: the maintenance database. PostgreSQL's own
    /// workers then see only the shared catalogs; a connection to a client always has a database, and
    /// `postgres` is the one every cluster has. Default `postgres`.
    public var maintenanceDatabase: String
    /// The password, when the server asks for one; handed to workers as descriptor 6, never in the
    /// environment. Not part of the description.
    public var password: String?

    /// Creates a server description.
    /// - Parameters:
    ///   - location: A Unix socket directory or a TCP host.
    ///   - port: The port. Default 5432.
    ///   - tls: TLS for TCP. Default ``TLSMode/disable``.
    ///   - defaultUser: The role used when a worker names none.
    ///   - maintenanceDatabase: The database used when a worker names none. Default `postgres`.
    ///   - password: The password, if the server asks for one.
    public init(
        _ location: Location,
        port: Int = 5432,
        tls: TLSMode = .disable,
        defaultUser: String,
        maintenanceDatabase: String = "postgres",
        password: String? = nil
    ) {
        self.location = location
        self.port = port
        self.tls = tls
        self.defaultUser = defaultUser
        self.maintenanceDatabase = maintenanceDatabase
        self.password = password
        self.tlsRootCertificates = nil
    }

    /// The longest host, directory, role or database name accepted (PostgreSQL's identifiers are shorter;
    /// a Unix socket path must fit `sun_path`).
    public static let maxFieldLength = 1024

    /// Checks the description, naming the field that is wrong and how to fix it.
    /// - Throws: ``RegistrationError`` with worker name `Configuration.database`.
    public func validate() throws(RegistrationError) {
        func refuse(_ field: String, _ value: String, _ rule: String) -> RegistrationError {
            RegistrationError(workerName: "Configuration.database", field: field, value: value, rule: rule)
        }
        func text(_ field: String, _ value: String) throws(RegistrationError) {
            guard !value.isEmpty else { throw refuse(field, "''", "which is empty") }
            guard value.utf8.count <= Self.maxFieldLength else {
                throw refuse(field, "of \(value.utf8.count) bytes", "which is longer than \(Self.maxFieldLength) bytes")
            }
            guard !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else {
                throw refuse(field, "'\(value.debugDescription.dropFirst().dropLast())'", "which contains a control character")
            }
        }
        switch self.location {
        case .unixSocket(let directory):
            try text("location", directory)
            guard directory.hasPrefix("/") else {
                throw refuse("location", "'\(directory)'", "which is not an absolute path; a Unix socket directory starts with /")
            }
            guard self.tls == .disable else {
                throw refuse("tls", "require", "but TLS is for TCP; a Unix socket needs none, use .disable")
            }
        case .tcp(let host):
            try text("location", host)
        }
        if let roots = self.tlsRootCertificates {
            try text("tlsRootCertificates", roots)
            guard self.tls == .require else {
                throw refuse("tlsRootCertificates", "'\(roots)'", "but TLS is off; set tls to .require, or leave tlsRootCertificates nil")
            }
            guard roots.hasPrefix("/") else {
                throw refuse("tlsRootCertificates", "'\(roots)'", "which is not an absolute path")
            }
        }
        guard (1...65535).contains(self.port) else {
            throw refuse("port", "\(self.port)", "which is outside 1...65535")
        }
        try text("defaultUser", self.defaultUser)
        try text("maintenanceDatabase", self.maintenanceDatabase)
        if let password = self.password {
            guard password.utf8.count <= Self.maxFieldLength else {
                throw refuse("password", "of \(password.utf8.count) bytes", "which is longer than \(Self.maxFieldLength) bytes")
            }
            guard !password.utf8.contains(0) else { throw refuse("password", "(not shown)", "which contains a NUL byte") }
        }
    }

    /// The contract's variables for this server (the password excepted: it goes as descriptor 6).
    public var environment: [String: String] {
        typealias Variable = WorkerProcessContract.Variable
        var result = [
            Variable.databasePort: String(self.port),
            Variable.databaseTLS: self.tls.rawValue,
            Variable.databaseUser: self.defaultUser,
            Variable.databaseName: self.maintenanceDatabase,
        ]
        switch self.location {
        case .unixSocket(let directory): result[Variable.databaseSocketDirectory] = directory
        case .tcp(let host): result[Variable.databaseHost] = host
        }
        if let roots = self.tlsRootCertificates { result[Variable.databaseTLSRootCertificates] = roots }
        if self.password != nil {
            result[Variable.databasePasswordDescriptor] = String(WorkerProcessContract.databasePasswordDescriptor)
        }
        return result
    }

    /// Reads a server description back through `variable` (a worker passes `getenv`), with the password read
    /// by `password` from the descriptor the contract names.
    /// - Throws: ``RegistrationError`` naming the variable that is missing or malformed.
    public init(variable lookup: (String) -> String?, password: (Int32) throws(RegistrationError) -> String) throws(RegistrationError) {
        typealias Variable = WorkerProcessContract.Variable
        let name = lookup(Variable.name) ?? "?"
        func value(_ variable: String) throws(RegistrationError) -> String {
            guard let value = lookup(variable) else {
                throw RegistrationError(
                    workerName: name,
                    field: variable,
                    value: "missing",
                    rule: "but a supervisor with a database server sets it for every worker with .databaseConnection"
                )
            }
            return value
        }
        if let directory = lookup(Variable.databaseSocketDirectory) {
            self.location = .unixSocket(directory: directory)
        } else if let host = lookup(Variable.databaseHost) {
            self.location = .tcp(host: host)
        } else {
            throw RegistrationError(
                workerName: name,
                field: Variable.databaseSocketDirectory,
                value: "missing",
                rule: "and so is \(Variable.databaseHost); is Configuration.database set in the supervisor?"
            )
        }
        let portText = try value(Variable.databasePort)
        guard let port = WorkerProcessContract.Identity.decimal(portText, as: Int.self), (1...65535).contains(port) else {
            throw RegistrationError(workerName: name, field: Variable.databasePort, value: "'\(portText)'", rule: "which is not a port")
        }
        self.port = port
        let tlsText = try value(Variable.databaseTLS)
        guard let tls = TLSMode(rawValue: tlsText) else {
            throw RegistrationError(workerName: name, field: Variable.databaseTLS, value: "'\(tlsText)'", rule: "which is neither disable nor require")
        }
        self.tls = tls
        self.tlsRootCertificates = lookup(Variable.databaseTLSRootCertificates)
        self.defaultUser = try value(Variable.databaseUser)
        self.maintenanceDatabase = try value(Variable.databaseName)
        if let descriptorText = lookup(Variable.databasePasswordDescriptor) {
            guard let descriptor = WorkerProcessContract.Identity.decimal(descriptorText, as: Int32.self), descriptor > 2 else {
                throw RegistrationError(
                    workerName: name,
                    field: Variable.databasePasswordDescriptor,
                    value: "'\(descriptorText)'",
                    rule: "which is not a descriptor above standard error"
                )
            }
            self.password = try password(descriptor)
        } else {
            self.password = nil
        }
    }
}

extension DatabaseServer: CustomStringConvertible {
    /// The server as a connection string would name it, without the password.
    public var description: String {
        let place =
            switch self.location {
            case .unixSocket(let directory): "socket \(directory)/.s.PGSQL.\(self.port)"
            case .tcp(let host): "\(host):\(self.port) (TLS \(self.tls.rawValue))"
            }
        return "\(place), user \(self.defaultUser), database \(self.maintenanceDatabase)\(self.password == nil ? "" : ", with a password")"
    }
}
