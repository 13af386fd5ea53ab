import BackgroundWorkerRuntime
import BackgroundWorkers
import CWorkerSupport
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// `bgworkerd`: a ``WorkerSupervisor`` with a configuration file, serving its control socket until a signal
/// stops it. PostgreSQL's postmaster signals: SIGTERM is a smart shutdown, SIGINT fast, SIGQUIT immediate,
/// SIGHUP re-reads the file.
public enum Daemon {
    /// Exit codes.
    public enum ExitCode {
        /// Stopped after a shutdown.
        public static let success: Int32 = 0
        /// Could not start: the socket is in use by a live daemon, its folder is unusable, the supervisor
        /// could not be created.
        public static let cannotStart: Int32 = 1
        /// The configuration file is invalid.
        public static let invalidConfiguration: Int32 = 2
    }

    /// What the command line chose.
    public struct Options: Sendable {
        /// The configuration file; nil runs the built-in default set.
        public var configFile: String?
        /// Overrides the file's socket.
        public var socket: String?
        /// Overrides the file's pid file.
        public var pidFile: String?

        /// Creates them.
        public init(configFile: String? = nil, socket: String? = nil, pidFile: String? = nil) {
            self.configFile = configFile
            self.socket = socket
            self.pidFile = pidFile
        }
    }

    /// The built-in workers of `bgworkerd`'s own binary, for `BuiltinWorkers.runIfRequested` first thing in
    /// `main`.
    public static let builtinWorkers: [String: @Sendable (WorkerContext) async throws -> Void] = [
        "heartbeat": Heartbeat.run
    ]

    /// Reads the configuration the options name, with their overrides.
    public static func configuration(_ options: Options) throws(DaemonConfigurationError) -> DaemonConfiguration {
        var configuration =
            if let file = options.configFile { try DaemonConfiguration.load(path: file) } else {
                DaemonConfiguration.builtinDefault(socket: options.socket)
            }
        if let socket = options.socket {
            if options.pidFile == nil && configuration.pidFile == DaemonConfiguration.pidFile(beside: configuration.socket) {
                configuration.pidFile = DaemonConfiguration.pidFile(beside: socket)
            }
            configuration.socket = socket
        }
        if let pidFile = options.pidFile { configuration.pidFile = pidFile }
        return configuration
    }

    /// Runs the daemon until it is shut down; returns the process's exit code. Problems go to `logger` and,
    /// for a daemon that cannot start, to stderr as one line naming the cause.
    public static func run(_ options: Options, logger: Logger) async -> Int32 {
        let configuration: DaemonConfiguration
        do {
            configuration = try Self.configuration(options)
        } catch {
            Self.fail("\(error)")
            return ExitCode.invalidConfiguration
        }
        if let problem = Self.prepareFolder(of: configuration.socket, group: configuration.allowedGroup, logger: logger) {
            Self.fail(problem)
            return ExitCode.cannotStart
        }

        var settings = WorkerSupervisor.Configuration()
        settings.maxWorkerProcesses = configuration.maxWorkerProcesses
        settings.sharedMemorySize = configuration.sharedMemorySize
        settings.database = configuration.database
        settings.logger = logger
        settings.loopName = "bgworkerd"
        let supervisor: WorkerSupervisor
        do {
            supervisor = try WorkerSupervisor(configuration: settings)
        } catch {
            Self.fail("cannot create the supervisor: \(error)")
            return ExitCode.cannotStart
        }
        let reloader = Reloader(supervisor: supervisor, configuration: configuration, logger: logger)
        if let problem = await reloader.registerStatic() {
            Self.fail(problem)
            await supervisor.shutdown(.immediate)
            try? await supervisor.run()
            return ExitCode.invalidConfiguration
        }

        // Signals are watched before anything says the daemon is up: one sent right after "ready" is not lost.
        let loop = supervisor.loop
        guard let term = try? await loop.signals(.terminate), let interrupt = try? await loop.signals(.interrupt),
            let quit = try? await loop.signals(.quit), let hangup = try? await loop.signals(.hangup)
        else {
            Self.fail("cannot watch SIGTERM, SIGINT, SIGQUIT and SIGHUP")
            await supervisor.shutdown(.immediate)
            try? await supervisor.run()
            return ExitCode.cannotStart
        }
        let running = Task { try await supervisor.run() }
        do {
            try await supervisor.serveControlSocket(
                ControlSocketConfiguration(
                    path: configuration.socket,
                    allowedGroup: configuration.allowedGroup,
                    maxConnections: configuration.maxConnections,
                    maxRegistrationsPerClient: configuration.maxRegistrationsPerClient,
                    serverName: "bgworkerd",
                    messageTimeout: configuration.messageTimeout
                )
            )
        } catch {
            Self.fail("\(error.message)")
            await supervisor.shutdown(.immediate)
            _ = await running.result
            return ExitCode.cannotStart
        }
        if let problem = Self.writePIDFile(configuration.pidFile) {
            Self.fail(problem)
            await supervisor.shutdown(.fast)
            _ = await running.result
            return ExitCode.cannotStart
        }
        logger.notice(
            "bgworkerd ready",
            metadata: [
                "pid": "\(getpid())", "socket": "\(configuration.socket)",
                "configuration": "\(configuration.source ?? "built-in default")",
                "workers": "\(configuration.workers.count)", "slots": "\(configuration.maxWorkerProcesses)",
            ]
        )

        let signals = Task {
            await Self.handleSignals(supervisor, reloader, logger, [(term, .smart), (interrupt, .fast), (quit, .immediate)], hangup)
        }
        let result = await running.result
        signals.cancel()
        Self.removePIDFile(configuration.pidFile)
        if case .failure(let error) = result {
            logger.error("the supervisor stopped with an error", metadata: ["error": "\(error)"])
            return ExitCode.cannotStart
        }
        logger.notice("bgworkerd stopped")
        return ExitCode.success
    }

    /// SIGTERM smart, SIGINT fast, SIGQUIT immediate (a later, stronger one takes over), SIGHUP reload.
    private static func handleSignals(
        _ supervisor: WorkerSupervisor,
        _ reloader: Reloader,
        _ logger: Logger,
        _ shutdowns: [(UVSignalSequence, ShutdownMode)],
        _ hangup: UVSignalSequence
    ) async {
        await withTaskGroup(of: Void.self) { group in
            for (sequence, mode) in shutdowns {
                group.addTask {
                    for await signal in sequence {
                        logger.notice("received \(signal): \(mode) shutdown")
                        await supervisor.shutdown(mode)
                    }
                }
            }
            group.addTask {
                for await _ in hangup {
                    logger.notice("received SIGHUP: reloading the configuration")
                    await reloader.reload()
                }
            }
        }
    }

    // MARK: - Files

    /// Makes the socket's folder (0700, or 0710 for the allowed group) or checks that only this user (and the
    /// group) can enter an existing one; removes a stale socket; refuses a live daemon's. The problem, or nil.
    static func prepareFolder(of socket: String, group: UInt32?, logger: Logger) -> String? {
        let folder = String(socket[..<(socket.lastIndex(of: "/") ?? socket.startIndex)])
        guard !folder.isEmpty else { return "socket '\(socket)' must be in a folder of its own, not /" }
        var info = stat()
        if stat(folder, &info) != 0 {
            guard errno == ENOENT else { return "cannot use folder '\(folder)': \(String(cString: strerror(errno)))" }
            // Only the last component is made: a missing parent is a configuration mistake worth hearing of.
            guard mkdir(folder, group == nil ? 0o700 : 0o710) == 0 else {
                return "cannot make folder '\(folder)' for the control socket: \(String(cString: strerror(errno)))"
            }
            if let group {
                _ = chown(folder, uid_t.max, gid_t(group))
                _ = chmod(folder, 0o710)
            }
            guard stat(folder, &info) == 0 else { return "cannot use folder '\(folder)': \(String(cString: strerror(errno)))" }
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "'\(folder)' is not a folder" }
        guard info.st_uid == geteuid() else {
            return "folder '\(folder)' belongs to uid \(info.st_uid), not to this user (uid \(geteuid())); the socket's folder must be the daemon's own"
        }
        let others = info.st_mode & 0o007
        let groupBits = info.st_mode & 0o070
        if others != 0 || (group == nil && groupBits != 0) {
            let mode = String(info.st_mode & 0o777, radix: 8)
            return "folder '\(folder)' has mode 0\(mode): users other than this one may enter it; chmod \(group == nil ? "0700" : "0710") '\(folder)'"
        }
        guard access(folder, W_OK) == 0 else { return "folder '\(folder)' is not writable by this user" }

        guard lstat(socket, &info) == 0 else { return nil }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            return "'\(socket)' exists and is not a socket; remove it or choose another socket path"
        }
        let descriptor = cws_unix_connect(socket)
        if descriptor >= 0 {
            close(descriptor)
            return "another daemon is serving '\(socket)' (pid file says \(Self.readPID(beside: socket) ?? "nothing")); stop it first, or choose another socket"
        }
        guard descriptor == -ECONNREFUSED else {
            return "cannot check '\(socket)': \(String(cString: strerror(-descriptor)))"
        }
        logger.notice("removing the stale socket of a daemon that is gone", metadata: ["socket": "\(socket)"])
        unlink(socket)
        return nil
    }

    private static func readPID(beside socket: String) -> String? {
        DaemonConfiguration.readFile(DaemonConfiguration.pidFile(beside: socket))?.split(separator: "\n").first.map(String.init)
    }

    private static func writePIDFile(_ path: String) -> String? {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { return "cannot write pid file '\(path)': \(String(cString: strerror(errno)))" }
        defer { close(descriptor) }
        let text = Array("\(getpid())\n".utf8)
        guard write(descriptor, text, text.count) == text.count else {
            return "cannot write pid file '\(path)': \(String(cString: strerror(errno)))"
        }
        return nil
    }

    /// Removes the pid file if it is still this process's.
    private static func removePIDFile(_ path: String) {
        guard let text = DaemonConfiguration.readFile(path), text.split(separator: "\n").first == "\(getpid())"[...] else { return }
        unlink(path)
    }

    private static func fail(_ message: String) {
        BackgroundWorkerRuntime.printError("bgworkerd: \(message)")
    }
}

/// The static workers of the file and how a reload changes them: added ones are registered, removed ones
/// terminated, changed ones terminated and registered again with the new definition, matched by name.
actor Reloader {
    let supervisor: WorkerSupervisor
    let logger: Logger
    private var configuration: DaemonConfiguration
    private var handles: [String: (worker: BackgroundWorker, handle: BackgroundWorkerHandle)] = [:]

    init(supervisor: WorkerSupervisor, configuration: DaemonConfiguration, logger: Logger) {
        self.supervisor = supervisor
        self.configuration = configuration
        self.logger = logger
    }

    /// Registers the file's workers before the supervisor runs; the problem, naming the entry, or nil.
    func registerStatic() async -> String? {
        for (index, worker) in self.configuration.workers.enumerated() {
            do {
                self.handles[worker.name] = (worker, try await self.supervisor.register(worker))
            } catch {
                let file = self.configuration.source ?? "(built-in default)"
                return "invalid configuration \(file): workers[\(index)] '\(worker.name)': \(error.message)"
            }
        }
        return nil
    }

    /// Re-reads the file and applies the difference. An invalid file changes nothing (it is logged).
    func reload() async {
        guard let file = self.configuration.source else {
            self.logger.notice("no configuration file to reload: running the built-in default")
            return
        }
        let next: DaemonConfiguration
        do {
            next = try DaemonConfiguration.load(path: file)
        } catch {
            self.logger.error("reload refused; the running configuration stays", metadata: ["error": "\(error)"])
            return
        }
        var otherSettings = next
        otherSettings.workers = self.configuration.workers
        if otherSettings != self.configuration {
            self.logger.warning("reload: settings other than workers changed; they take effect at the next start")
        }
        let wanted = Dictionary(next.workers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (name, entry) in self.handles.sorted(by: { $0.key < $1.key }) where wanted[name] == nil {
            self.logger.notice("reload: terminating removed worker", metadata: ["worker.name": "\(name)"])
            await entry.handle.terminate()
            self.handles[name] = nil
        }
        for worker in next.workers {
            if let entry = self.handles[worker.name] {
                guard entry.worker != worker else { continue }
                self.logger.notice("reload: restarting changed worker with its new definition", metadata: ["worker.name": "\(worker.name)"])
                await entry.handle.terminate()
                _ = try? await entry.handle.waitForShutdown()
            } else {
                self.logger.notice("reload: starting added worker", metadata: ["worker.name": "\(worker.name)"])
            }
            do {
                self.handles[worker.name] = (worker, try await self.supervisor.register(worker))
            } catch {
                self.handles[worker.name] = nil
                self.logger.error("reload: cannot register worker", metadata: ["worker.name": "\(worker.name)", "error": "\(error)"])
            }
        }
        self.configuration.workers = next.workers
        self.logger.notice("reload done", metadata: ["workers": "\(self.handles.count)"])
    }
}

/// The default set's worker: ready at once, a log line every `mainArgument` seconds (10 when 0), until
/// SIGTERM.
enum Heartbeat {
    @Sendable static func run(_ context: WorkerContext) async throws {
        try context.reportReady()
        let seconds = context.identity.mainArgument == 0 ? 10 : Int(min(context.identity.mainArgument, 86_400))
        var beats = 0
        while true {
            try await Task.sleep(for: .seconds(seconds))
            beats += 1
            BackgroundWorkerRuntime.printError("heartbeat \(beats) from pid \(getpid())")
        }
    }
}

