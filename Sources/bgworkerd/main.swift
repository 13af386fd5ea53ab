import ArgumentParser
import BackgroundWorkerRuntime
import BackgroundWorkersDaemon
import Logging

/// `bgworkerd`'s command line.
struct BGWorkerD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bgworkerd",
        abstract: "Run background workers by PostgreSQL's bgworker rules, driven over a control socket.",
        discussion: """
            With no --config, runs a small built-in set (a heartbeat worker) so that it can be tried at once:
              bgworkerd &
              bgworkerctl list

            Signals, as PostgreSQL's postmaster: SIGTERM smart shutdown (wait for workers to exit), SIGINT fast
            (SIGTERM to workers, SIGKILL after their grace period), SIGQUIT immediate, SIGHUP re-reads the
            configuration file (added workers start, removed ones are terminated, changed ones restart).

            Exit codes: 0 stopped after a shutdown; 1 could not start (the socket is served by a live daemon, its
            folder is unusable); 2 invalid configuration (the message names the entry and the field).
            """
    )

    @Option(name: .shortAndLong, help: "The configuration file (YAML). Without it, the built-in default set runs.")
    var config: String?

    @Option(help: "The control socket's path (overrides the file's). Default: $BGWORKERD_SOCKET, /run/bgworkerd/control.sock for root, else $XDG_RUNTIME_DIR/bgworkerd/control.sock or /tmp/bgworkerd-UID/control.sock.")
    var socket: String?

    @Option(help: "The pid file (overrides the file's). Default: bgworkerd.pid beside the socket.")
    var pidFile: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Flag(help: "Check the configuration and exit (0: valid, 2: invalid).")
    var check = false

    func run() async throws {
        let options = Daemon.Options(configFile: self.config, socket: self.socket, pidFile: self.pidFile)
        if self.check {
            do {
                let configuration = try Daemon.configuration(options)
                print("configuration \(configuration.source ?? "(built-in default)") is valid: \(configuration.workers.count) workers, \(configuration.maxWorkerProcesses) slots, socket \(configuration.socket)")
                return
            } catch {
                print("bgworkerd: \(error)")
                throw ExitCode(Daemon.ExitCode.invalidConfiguration)
            }
        }
        let level = self.logLevel
        var logger = Logger(label: "bgworkerd") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        let code = await Daemon.run(options, logger: logger)
        if code != 0 { throw ExitCode(code) }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

// The supervisor re-executes this binary for its built-in workers: run the worker, never the daemon, then.
await BuiltinWorkers.runIfRequested(Daemon.builtinWorkers)
do {
    // parse() answers --help and usage errors by throwing, which exit(withError:) prints.
    let command = try BGWorkerD.parse()
    try await command.run()
} catch {
    BGWorkerD.exit(withError: error)
}
