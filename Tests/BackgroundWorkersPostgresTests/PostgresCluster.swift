import BackgroundWorkerContract
import CWorkerSupport
import Foundation
import TestSupport
import Testing

/// A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary folder, Unix socket only (in that
/// folder), a random port, trust authentication except for the role `bgw_password` (SCRAM, password
/// `secret-\(port)`). Run as `postgres` through `runuser` when the tests run as root (initdb refuses root).
/// ``stop()`` and ``remove()`` end it; ``withCluster(started:_:)`` always does, also when the body throws.
final class PostgresCluster: Sendable {
    let directory: String
    let port: Int
    var dataDirectory: String { self.directory + "/data" }
    var socketDirectory: String { self.directory }
    /// The role initdb creates as superuser.
    let superuser = "postgres"
    /// The role that must give a password.
    let passwordRole = "bgw_password"
    var password: String { "secret-\(self.port)" }

    /// The server as a supervisor's configuration names it.
    var server: DatabaseServer {
        DatabaseServer(.unixSocket(directory: self.socketDirectory), port: self.port, defaultUser: self.superuser)
    }

    /// Where PostgreSQL's server programs are: `PG_BINDIR`, else the newest /usr/lib/postgresql/N/bin.
    static let binDirectory: String = {
        if let directory = ProcessInfo.processInfo.environment["PG_BINDIR"] { return directory }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        let newest = versions.compactMap(Int.init).max().map(String.init) ?? "15"
        return "/usr/lib/postgresql/\(newest)/bin"
    }()

    static let runAsPostgres = geteuid() == 0

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    /// Creates a cluster (not started).
    static func create() throws -> PostgresCluster {
        guard access(Self.binDirectory + "/initdb", X_OK) == 0 else {
            throw ClusterError(
                "PostgreSQL's server programs are not in \(Self.binDirectory); install Debian's postgresql package (scripts/test.sh does) or set PG_BINDIR"
            )
        }
        var template = Array("/tmp/bgw-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ClusterError("mkdtemp failed: errno \(errno)") }
        let directory = String(cString: made)
        let cluster = PostgresCluster(directory: directory, port: Int.random(in: 20_000..<60_000))
        if Self.runAsPostgres { try run("/bin/chown", ["postgres:postgres", directory]) }
        try cluster.server(
            "initdb", ["-D", cluster.dataDirectory, "-U", cluster.superuser, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
        )
        let settings = """
            listen_addresses = ''
            unix_socket_directories = '\(directory)'
            port = \(cluster.port)
            fsync = off
            full_page_writes = off
            shared_buffers = 16MB
            """
        try append(settings, to: cluster.dataDirectory + "/postgresql.conf")
        try ("local all \(cluster.passwordRole) scram-sha-256\nlocal all all trust\n")
            .write(toFile: cluster.dataDirectory + "/pg_hba.conf", atomically: false, encoding: .utf8)
        return cluster
    }

    /// Starts the server and waits until it accepts connections.
    func start() throws {
        try self.server("pg_ctl", ["-D", self.dataDirectory, "-l", self.directory + "/server.log", "-w", "-t", "60", "start"])
    }

    /// Stops the server (`-m fast`: backends are terminated, as in a restart under load).
    func stop(mode: String = "fast") throws {
        try self.server("pg_ctl", ["-D", self.dataDirectory, "-m", mode, "-w", "-t", "60", "stop"])
    }

    /// Makes the stopped cluster listen on 127.0.0.1 with TLS only (a self-signed certificate for `localhost`,
    /// `server.crt` in the cluster's folder) besides its Unix socket.
    func enableTLS() throws {
        let crt = self.dataDirectory + "/server.crt"
        let key = self.dataDirectory + "/server.key"
        try self.server(
            "/usr/bin/openssl",
            ["req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
             "-keyout", key, "-out", crt]
        )
        try Self.run("/bin/cp", [crt, self.directory + "/root.crt"])
        try Self.append("listen_addresses = '127.0.0.1'\nssl = on\n", to: self.dataDirectory + "/postgresql.conf")
        try ("hostssl all all 127.0.0.1/32 trust\nlocal all all trust\n")
            .write(toFile: self.dataDirectory + "/pg_hba.conf", atomically: false, encoding: .utf8)
    }

    /// Turns the stopped cluster into a standby (recovery with no primary: it accepts read-only connections).
    func makeStandby() throws {
        try self.server("/usr/bin/touch", [self.dataDirectory + "/standby.signal"])
    }

    /// Ends recovery of a standby.
    func promote() throws {
        try self.server("pg_ctl", ["-D", self.dataDirectory, "-w", "promote"])
    }

    /// Stops the server if it runs and removes the folder.
    func remove() {
        _ = try? self.stop(mode: "immediate")
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    /// Runs SQL through psql as the superuser and returns its unaligned, tuples-only output.
    @discardableResult
    func sql(_ statement: String, database: String = "postgres") throws -> String {
        try Self.run(
            "/usr/bin/psql",
            ["-X", "-v", "ON_ERROR_STOP=1", "-h", self.socketDirectory, "-p", String(self.port), "-U", self.superuser, "-d", database, "-At", "-c", statement]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Creates a cluster, starts it unless told not to, runs `body`, and always removes it.
    static func withCluster<T>(started: Bool = true, _ body: (PostgresCluster) async throws -> T) async throws -> T {
        let cluster = try create()
        defer { cluster.remove() }
        if started { try cluster.start() }
        return try await body(cluster)
    }

    /// Runs one of the server's programs, as `postgres` when the tests run as root.
    private func server(_ program: String, _ arguments: [String]) throws {
        let path = program.hasPrefix("/") ? program : Self.binDirectory + "/" + program
        if Self.runAsPostgres {
            try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", path] + arguments)
        } else {
            try Self.run(path, arguments)
        }
    }

    /// Runs a program to its end (TestSupport's `runProgram`: posix_spawn + waitpid, its output to a file, nothing
    /// else inherited, so a server started by pg_ctl holds no descriptor of the test process) and returns what it
    /// printed. Not Foundation's `Process`, whose `waitUntilExit` was seen to hang here once a server had started.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let (status, text) = try runProgram(executable, arguments)
        guard status == 0 else {
            throw ClusterError("\(executable) \(arguments.joined(separator: " ")) ended with status \(status): \(text)")
        }
        return text
    }

    static func append(_ text: String, to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(("\n" + text + "\n").utf8))
    }
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One started cluster for a whole suite, stopped and removed when the suite ends, passed or failed.
struct SharedCluster: SuiteTrait, TestTrait, TestScoping {
    @TaskLocal static var current: PostgresCluster?

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        if Self.current != nil { return try await function() }
        try await PostgresCluster.withCluster { cluster in
            try cluster.sql("CREATE ROLE \(cluster.passwordRole) LOGIN PASSWORD '\(cluster.password)'")
            try cluster.sql("CREATE ROLE bgw_reader LOGIN")
            try cluster.sql("CREATE DATABASE bgw_test OWNER bgw_reader")
            try await Self.$current.withValue(cluster) { try await function() }
        }
    }
}

extension Trait where Self == SharedCluster {
    /// A started cluster shared by the suite's tests (``SharedCluster/current``).
    static var sharedCluster: SharedCluster { SharedCluster() }
}

/// The suite's cluster.
var cluster: PostgresCluster {
    get throws {
        guard let cluster = SharedCluster.current else { throw ClusterError("no cluster: the suite needs .sharedCluster") }
        return cluster
    }
}
