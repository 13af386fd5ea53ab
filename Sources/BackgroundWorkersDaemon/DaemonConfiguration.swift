import BackgroundWorkers
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// `bgworkerd`'s configuration: the file's contents, checked, with the defaults filled in.
///
/// The file is YAML (JSON works too, being YAML). Every key is optional but `workers[].name` and one entry
/// point per worker; an unknown key is an error, so a misspelt one is never silently ignored.
///
/// ```yaml
/// socket: /run/bgworkerd/control.sock   # default: ControlSocketConfiguration.defaultPath
/// pidFile: /run/bgworkerd/bgworkerd.pid # default: bgworkerd.pid beside the socket
/// maxWorkerProcesses: 8                 # PostgreSQL's max_worker_processes
/// sharedMemorySize: 1048576             # bytes; 0: none
/// allowedGroup: bgworker                # a group name or gid whose members may use the socket
/// limits: { connections: 64, registrationsPerClient: 64, messageTimeout: 10 }  # seconds
/// defaults: { restartInterval: 60, stopGracePeriod: 10 }  # for workers that set neither
/// database: { socketDirectory: /var/run/postgresql, port: 5432, user: postgres }
/// workers:                              # static workers (PostgreSQL's preload registrations)
///   - name: heartbeat
///     builtin: heartbeat                # or executable + arguments, or library + function
///     reportsReadiness: true
///     restartInterval: 5                # seconds, or never
/// ```
public struct DaemonConfiguration: Sendable, Equatable {
    /// Where the control socket is.
    public var socket: String
    /// Where the pid file is.
    public var pidFile: String
    /// The number of worker slots.
    public var maxWorkerProcesses: Int
    /// The shared-memory segment's size in bytes.
    public var sharedMemorySize: Int
    /// The group whose members may connect, as a gid.
    public var allowedGroup: UInt32?
    /// The limit of open connections.
    public var maxConnections: Int
    /// The limit of live registrations per connection.
    public var maxRegistrationsPerClient: Int
    /// How long a message may take to arrive once begun, and a new connection to say hello.
    public var messageTimeout: Duration = .seconds(10)
    /// The database server for database workers.
    public var database: DatabaseServer?
    /// The static workers, in file order.
    public var workers: [BackgroundWorker]
    /// Where it was read from; nil for the built-in default.
    public var source: String?

    /// The built-in default: a heartbeat worker built into `bgworkerd` (ready at once, a log line every
    /// 10 s, restarted 5 s after an exit), 8 slots, the default socket. For trying the daemon at once.
    public static func builtinDefault(socket: String? = nil) -> DaemonConfiguration {
        var heartbeat = BackgroundWorker(name: "heartbeat", entryPoint: .builtin("heartbeat"))
        heartbeat.reportsReadiness = true
        heartbeat.restartInterval = .seconds(5)
        heartbeat.mainArgument = 10
        let path = socket ?? ControlSocketConfiguration.defaultPath
        return DaemonConfiguration(
            socket: path,
            pidFile: Self.pidFile(beside: path),
            maxWorkerProcesses: 8,
            sharedMemorySize: 1 << 20,
            allowedGroup: nil,
            maxConnections: 64,
            maxRegistrationsPerClient: 64,
            database: nil,
            workers: [heartbeat],
            source: nil
        )
    }

    static func pidFile(beside socket: String) -> String {
        let folder = socket.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return (folder.isEmpty ? "." : folder) + "/bgworkerd.pid"
    }

    /// Reads and checks the file at `path`.
    /// - Throws: ``DaemonConfigurationError`` naming the file, the entry and the field.
    public static func load(path: String) throws(DaemonConfigurationError) -> DaemonConfiguration {
        guard let text = readFile(path) else {
            throw DaemonConfigurationError(file: path, entry: nil, message: "cannot be read: \(String(cString: strerror(errno)))")
        }
        return try Self.parse(text, file: path)
    }

    /// Reads and checks a configuration's text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(DaemonConfigurationError) -> DaemonConfiguration {
        let model: FileModel
        do {
            model = try YAMLDecoder().decode(FileModel.self, from: text.isEmpty ? "{}" : text)
        } catch let error as DecodingError {
            throw DaemonConfigurationError(file: file, decoding: error)
        } catch {
            throw DaemonConfigurationError(file: file, entry: nil, message: "is not valid YAML: \(error)")
        }
        return try model.configuration(file: file)
    }

    /// The file's text, or nil when it cannot be read (errno says why) or is over 16 MiB.
    static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "re") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count > 0 { bytes.append(contentsOf: chunk[..<count]) }
            if count < chunk.count { break }
            if bytes.count > 16 << 20 { return nil }
        }
        return ferror(file) != 0 ? nil : String(decoding: bytes, as: UTF8.self)
    }
}

/// Why a configuration file was refused: the file, the entry (`workers[2] 'indexer'`, `limits`), the field
/// and the rule, in one sentence.
public struct DaemonConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file.
    public let file: String
    /// The entry, if the problem is inside one (`workers[1] 'ticker'`).
    public let entry: String?
    /// The field and what is wrong with it.
    public let message: String

    init(file: String, entry: String?, message: String) {
        self.file = file
        self.entry = entry
        self.message = message
    }

    init(file: String, decoding error: DecodingError) {
        func path(_ keys: [any CodingKey]) -> String {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text.isEmpty ? "the file" : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            self.init(file: file, entry: nil, message: "\(path(context.codingPath + [key])) is missing")
        case .typeMismatch(let type, let context):
            self.init(file: file, entry: nil, message: "\(path(context.codingPath)) is not \(Self.describe(type))")
        case .valueNotFound(let type, let context):
            self.init(file: file, entry: nil, message: "\(path(context.codingPath)) is empty, not \(Self.describe(type))")
        case .dataCorrupted(let context) where context.codingPath.isEmpty && context.underlyingError != nil:
            self.init(file: file, entry: nil, message: "is not valid YAML: \(context.underlyingError!)")
        case .dataCorrupted(let context):
            self.init(file: file, entry: nil, message: "\(path(context.codingPath)): \(context.debugDescription)")
        @unknown default:
            self.init(file: file, entry: nil, message: "\(error)")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is UInt64.Type, is UInt32.Type: "a whole number"
        case is Double.Type: "a number"
        case is [String].Type: "a list of strings"
        default: "of the expected shape (\(type))"
        }
    }

    /// `bgworkerd: invalid configuration /etc/bgworkerd.yaml: workers[1] 'ticker': restartInterval is ...`.
    public var description: String {
        "invalid configuration \(self.file): \(self.entry.map { "\($0): " } ?? "")\(self.message)"
    }
}

// MARK: - The file's model

/// A key of any name: to find keys the model does not know.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

/// Refuses keys other than `known`, naming the first unknown one and listing the known ones.
private func refuseUnknownKeys(_ decoder: any Decoder, _ known: [String]) throws {
    let container = try decoder.container(keyedBy: AnyKey.self)
    for key in container.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) where !known.contains(key.stringValue) {
        throw DecodingError.dataCorrupted(
            .init(
                codingPath: container.codingPath,
                debugDescription: "\(key.stringValue) is not a known key; the keys here are \(known.joined(separator: ", "))"
            )
        )
    }
}

/// Seconds, or `never`.
private enum IntervalValue: Decodable {
    case seconds(Double)
    case never

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            self = .seconds(seconds)
        } else if let text = try? container.decode(String.self), text == "never" {
            self = .never
        } else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "must be a number of seconds or never"))
        }
    }
}

private struct FileModel: Decodable {
    var socket: String?
    var pidFile: String?
    var maxWorkerProcesses: Int?
    var sharedMemorySize: Int?
    var allowedGroup: String?
    var limits: Limits?
    var defaults: Defaults?
    var database: Database?
    var workers: [WorkerModel]?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case socket, pidFile, maxWorkerProcesses, sharedMemorySize, allowedGroup, limits, defaults, database, workers
    }

    init(from decoder: any Decoder) throws {
        try refuseUnknownKeys(decoder, CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.socket = try container.decodeIfPresent(String.self, forKey: .socket)
        self.pidFile = try container.decodeIfPresent(String.self, forKey: .pidFile)
        self.maxWorkerProcesses = try container.decodeIfPresent(Int.self, forKey: .maxWorkerProcesses)
        self.sharedMemorySize = try container.decodeIfPresent(Int.self, forKey: .sharedMemorySize)
        self.allowedGroup = try container.decodeIfPresent(String.self, forKey: .allowedGroup)
        self.limits = try container.decodeIfPresent(Limits.self, forKey: .limits)
        self.defaults = try container.decodeIfPresent(Defaults.self, forKey: .defaults)
        self.database = try container.decodeIfPresent(Database.self, forKey: .database)
        self.workers = try container.decodeIfPresent([WorkerModel].self, forKey: .workers)
    }

    struct Limits: Decodable {
        var connections: Int?
        var registrationsPerClient: Int?
        var messageTimeout: Double?
        enum CodingKeys: String, CodingKey, CaseIterable { case connections, registrationsPerClient, messageTimeout }
        init(from decoder: any Decoder) throws {
            try refuseUnknownKeys(decoder, CodingKeys.allCases.map(\.rawValue))
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.connections = try container.decodeIfPresent(Int.self, forKey: .connections)
            self.registrationsPerClient = try container.decodeIfPresent(Int.self, forKey: .registrationsPerClient)
            self.messageTimeout = try container.decodeIfPresent(Double.self, forKey: .messageTimeout)
        }
    }

    struct Defaults: Decodable {
        var restartInterval: IntervalValue?
        var stopGracePeriod: Double?
        enum CodingKeys: String, CodingKey, CaseIterable { case restartInterval, stopGracePeriod }
        init(from decoder: any Decoder) throws {
            try refuseUnknownKeys(decoder, CodingKeys.allCases.map(\.rawValue))
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.restartInterval = try container.decodeIfPresent(IntervalValue.self, forKey: .restartInterval)
            self.stopGracePeriod = try container.decodeIfPresent(Double.self, forKey: .stopGracePeriod)
        }
    }

    struct Database: Decodable {
        var socketDirectory: String?
        var host: String?
        var port: Int?
        var tls: String?
        var tlsRootCertificates: String?
        var user: String
        var database: String?
        var passwordFile: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case socketDirectory, host, port, tls, tlsRootCertificates, user, database, passwordFile
        }
        init(from decoder: any Decoder) throws {
            try refuseUnknownKeys(decoder, CodingKeys.allCases.map(\.rawValue))
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.socketDirectory = try container.decodeIfPresent(String.self, forKey: .socketDirectory)
            self.host = try container.decodeIfPresent(String.self, forKey: .host)
            self.port = try container.decodeIfPresent(Int.self, forKey: .port)
            self.tls = try container.decodeIfPresent(String.self, forKey: .tls)
            self.tlsRootCertificates = try container.decodeIfPresent(String.self, forKey: .tlsRootCertificates)
            self.user = try container.decode(String.self, forKey: .user)
            self.database = try container.decodeIfPresent(String.self, forKey: .database)
            self.passwordFile = try container.decodeIfPresent(String.self, forKey: .passwordFile)
        }
    }

    func configuration(file: String) throws(DaemonConfigurationError) -> DaemonConfiguration {
        func fail(_ entry: String?, _ message: String) -> DaemonConfigurationError {
            DaemonConfigurationError(file: file, entry: entry, message: message)
        }
        let socket = self.socket ?? ControlSocketConfiguration.defaultPath
        guard socket.hasPrefix("/"), socket.utf8.count < 108 else {
            throw fail(nil, "socket '\(socket)' must be an absolute path shorter than 108 bytes")
        }
        let pidFile = self.pidFile ?? DaemonConfiguration.pidFile(beside: socket)
        guard pidFile.hasPrefix("/") else { throw fail(nil, "pidFile '\(pidFile)' must be an absolute path") }
        let slots = self.maxWorkerProcesses ?? 8
        guard (1...262_143).contains(slots) else { throw fail(nil, "maxWorkerProcesses \(slots) is outside 1...262143") }
        let sharedMemory = self.sharedMemorySize ?? (1 << 20)
        guard sharedMemory >= 0 else { throw fail(nil, "sharedMemorySize \(sharedMemory) is negative; use 0 for none") }
        var group: UInt32?
        if let name = self.allowedGroup {
            if let gid = UInt32(name) {
                group = gid
            } else if let entry = getgrnam(name) {
                group = entry.pointee.gr_gid
            } else {
                throw fail(nil, "allowedGroup '\(name)' is no group of this system (getent group \(name) finds nothing)")
            }
        }
        let connections = self.limits?.connections ?? 64
        let perClient = self.limits?.registrationsPerClient ?? 64
        guard connections >= 1 else { throw fail("limits", "connections \(connections) must be at least 1") }
        guard perClient >= 1 else { throw fail("limits", "registrationsPerClient \(perClient) must be at least 1") }
        let messageTimeout = self.limits?.messageTimeout ?? 10
        guard messageTimeout.isFinite, messageTimeout >= 0.001, messageTimeout <= 86_400 else {
            throw fail("limits", "messageTimeout \(messageTimeout) is outside 0.001...86400 seconds")
        }
        if let grace = self.defaults?.stopGracePeriod, !(grace.isFinite && grace > 0 && grace <= 3600) {
            throw fail("defaults", "stopGracePeriod \(grace) is outside (0, 3600] seconds")
        }
        let database = try self.database.map { model throws(DaemonConfigurationError) in try Self.server(model, fail) }

        var workers: [BackgroundWorker] = []
        var names: Set<String> = []
        for (index, model) in (self.workers ?? []).enumerated() {
            let entry = "workers[\(index)] '\(model.name)'"
            let worker = try model.worker(defaults: self.defaults) { message in fail(entry, message) }
            do {
                try worker.validate(isStatic: true)
            } catch {
                throw fail(entry, "\(error.field) is \(error.value), \(error.rule)")
            }
            if worker.flags.contains(.databaseConnection) && database == nil {
                throw fail(entry, "flags has databaseConnection but the file has no database section")
            }
            guard names.insert(worker.name).inserted else {
                throw fail(entry, "name '\(worker.name)' is used by an earlier worker; names must be unique (reloads match workers by name)")
            }
            workers.append(worker)
        }
        guard workers.count <= slots else {
            throw fail(nil, "\(workers.count) workers do not fit in maxWorkerProcesses \(slots)")
        }
        return DaemonConfiguration(
            socket: socket,
            pidFile: pidFile,
            maxWorkerProcesses: slots,
            sharedMemorySize: sharedMemory,
            allowedGroup: group,
            maxConnections: connections,
            maxRegistrationsPerClient: perClient,
            messageTimeout: .milliseconds(Int64((messageTimeout * 1000).rounded())),
            database: database,
            workers: workers,
            source: file
        )
    }

    private static func server(
        _ model: Database,
        _ fail: (String?, String) -> DaemonConfigurationError
    ) throws(DaemonConfigurationError) -> DatabaseServer {
        let location: DatabaseServer.Location
        switch (model.socketDirectory, model.host) {
        case (let directory?, nil): location = .unixSocket(directory: directory)
        case (nil, let host?): location = .tcp(host: host)
        default: throw fail("database", "give exactly one of socketDirectory and host")
        }
        let tls = model.tls.map { DatabaseServer.TLSMode(rawValue: $0) } ?? .disable
        guard let tls else { throw fail("database", "tls '\(model.tls ?? "")' is not disable or require") }
        var server = DatabaseServer(location, port: model.port ?? 5432, tls: tls, defaultUser: model.user, maintenanceDatabase: model.database ?? "postgres")
        server.tlsRootCertificates = model.tlsRootCertificates
        if let file = model.passwordFile {
            guard let text = DaemonConfiguration.readFile(file) else {
                throw fail("database", "passwordFile '\(file)' cannot be read: \(String(cString: strerror(errno)))")
            }
            server.password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
        }
        do {
            try server.validate()
        } catch {
            throw fail("database", "\(error.field) is \(error.value), \(error.rule)")
        }
        return server
    }
}

private struct WorkerModel: Decodable {
    var name: String
    var executable: String?
    var arguments: [String]?
    var environment: [String: String]?
    var workingDirectory: String?
    var builtin: String?
    var library: String?
    var function: String?
    var restartInterval: IntervalValue?
    var startTime: String?
    var flags: [String]?
    var mainArgument: UInt64?
    var extra: String?
    var reportsReadiness: Bool?
    var stopGracePeriod: Double?
    var user: String?
    var group: String?
    var type: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, executable, arguments, environment, workingDirectory, builtin, library, function, restartInterval
        case startTime, flags, mainArgument, extra, reportsReadiness, stopGracePeriod, user, group, type
    }

    init(from decoder: any Decoder) throws {
        try refuseUnknownKeys(decoder, CodingKeys.allCases.map(\.rawValue))
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.name = try container.decode(String.self, forKey: .name)
        self.executable = try container.decodeIfPresent(String.self, forKey: .executable)
        self.arguments = try container.decodeIfPresent([String].self, forKey: .arguments)
        self.environment = try container.decodeIfPresent([String: String].self, forKey: .environment)
        self.workingDirectory = try container.decodeIfPresent(String.self, forKey: .workingDirectory)
        self.builtin = try container.decodeIfPresent(String.self, forKey: .builtin)
        self.library = try container.decodeIfPresent(String.self, forKey: .library)
        self.function = try container.decodeIfPresent(String.self, forKey: .function)
        self.restartInterval = try container.decodeIfPresent(IntervalValue.self, forKey: .restartInterval)
        self.startTime = try container.decodeIfPresent(String.self, forKey: .startTime)
        self.flags = try container.decodeIfPresent([String].self, forKey: .flags)
        self.mainArgument = try container.decodeIfPresent(UInt64.self, forKey: .mainArgument)
        self.extra = try container.decodeIfPresent(String.self, forKey: .extra)
        self.reportsReadiness = try container.decodeIfPresent(Bool.self, forKey: .reportsReadiness)
        self.stopGracePeriod = try container.decodeIfPresent(Double.self, forKey: .stopGracePeriod)
        self.user = try container.decodeIfPresent(String.self, forKey: .user)
        self.group = try container.decodeIfPresent(String.self, forKey: .group)
        self.type = try container.decodeIfPresent(String.self, forKey: .type)
    }

    func worker(
        defaults: FileModel.Defaults?,
        _ fail: (String) -> DaemonConfigurationError
    ) throws(DaemonConfigurationError) -> BackgroundWorker {
        let entryPoint: BackgroundWorker.EntryPoint
        switch (self.executable, self.builtin, self.library) {
        case (let path?, nil, nil):
            entryPoint = .executable(
                path,
                arguments: self.arguments ?? [],
                environment: self.environment ?? [:],
                workingDirectory: self.workingDirectory
            )
        case (nil, let name?, nil):
            entryPoint = .builtin(name)
        case (nil, nil, let path?):
            guard let function = self.function else { throw fail("library needs function, the C function to call") }
            entryPoint = .library(path, function: function)
        default:
            throw fail("give exactly one entry point: executable (with arguments), builtin, or library (with function)")
        }
        if self.executable == nil && (self.arguments != nil || self.environment != nil || self.workingDirectory != nil) {
            throw fail("arguments, environment and workingDirectory go with executable only")
        }
        if self.library == nil && self.function != nil { throw fail("function goes with library only") }
        var worker = BackgroundWorker(name: self.name, entryPoint: entryPoint)
        switch self.restartInterval ?? defaults?.restartInterval {
        case .never?:
            worker.restartInterval = .never
        case .seconds(let seconds)?:
            guard seconds.isFinite, seconds >= 0, seconds == seconds.rounded() else {
                throw fail("restartInterval \(seconds) must be a whole number of seconds, or never")
            }
            guard seconds <= 86_400 else { throw fail("restartInterval \(Int(seconds)) s is more than one day; use never") }
            worker.restartInterval = .seconds(Int(seconds))
        case nil:
            break
        }
        if let phase = self.startTime {
            switch phase {
            case "supervisorStart": worker.startTime = .supervisorStart
            case "consistentState": worker.startTime = .consistentState
            case "recoveryFinished": worker.startTime = .recoveryFinished
            default: throw fail("startTime '\(phase)' is not supervisorStart, consistentState or recoveryFinished")
            }
        }
        var flags: BackgroundWorker.Flags = []
        for flag in self.flags ?? [] {
            switch flag {
            case "sharedMemoryAccess": flags.insert(.sharedMemoryAccess)
            case "databaseConnection": flags.insert(.databaseConnection)
            default: throw fail("flags has '\(flag)', which is not sharedMemoryAccess or databaseConnection")
            }
        }
        worker.flags = flags
        if let argument = self.mainArgument { worker.mainArgument = argument }
        if let extra = self.extra { worker.extra = Array(extra.utf8) }
        if let ready = self.reportsReadiness { worker.reportsReadiness = ready }
        if let grace = self.stopGracePeriod ?? defaults?.stopGracePeriod {
            guard grace.isFinite, grace > 0, grace <= 3600 else { throw fail("stopGracePeriod \(grace) is outside (0, 3600] seconds") }
            worker.stopGracePeriod = .milliseconds(Int64(grace * 1000))
        }
        worker.user = self.user
        worker.group = self.group
        worker.type = self.type
        return worker
    }
}
