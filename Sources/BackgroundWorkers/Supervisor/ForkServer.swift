import BackgroundWorkerContract
import CWorkerSupport
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's fork server (``WorkerSupervisor/Configuration/forkServer``): a process started from this
/// very binary (`/proc/self/exe --bgworker-fork-server 3`) that stops in an ELF constructor before `main`, with
/// one thread, and forks a built-in worker on each request, so that the worker skips the loader and the
/// libraries' start-up an exec pays again. The worker is this process's child (`CLONE_PARENT`) with a pidfd
/// passed back, so it is watched and reaped like a spawned one and every rule applies unchanged. How and why
/// the fork is safe: `Sources/CWorkerSupport/ForkServer.c`.
///
/// Requests are synchronous, as a `posix_spawn` is: the loop thread waits for the pid (a fork takes a fraction
/// of a millisecond). When the server is not ready, has died, answers late or refuses, the worker is started
/// through exec instead and nothing is lost; a server that died is started again, up to
/// ``maxRestartsPerMinute`` times a minute, after which exec is used and the reason logged. Loop thread only.
final class ForkServer: @unchecked Sendable {
    // @unchecked Sendable: read and written only on the supervisor's loop thread (its actor's executor).
    /// What the server can do now.
    enum State: Equatable, CustomStringConvertible {
        /// Started; its hello has not come yet.
        case starting(pid: Int32)
        /// Forks on request.
        case ready(pid: Int32)
        /// Not used any more, for this reason (exec is used).
        case disabled(String)
        /// Stopped with the supervisor.
        case stopped

        var description: String {
            switch self {
            case .starting(let pid): "starting (pid \(pid))"
            case .ready(let pid): "ready (pid \(pid))"
            case .disabled(let reason): "disabled: \(reason)"
            case .stopped: "stopped"
            }
        }
    }

    /// How long a fork request may take before the server counts as stuck (it is then killed and restarted).
    static let requestTimeoutMilliseconds: Int32 = 2000
    /// More exits than this within a minute disable the server.
    static let maxRestartsPerMinute = 5

    let loop: UVEventLoop
    let logger: Logger
    private let environment: UVEnvironment
    private let strategy: UVSpawnStrategy
    /// The binary the server runs.
    let executable: String
    private(set) var state: State = .stopped
    private var socket: Int32 = -1
    private var process: UVChildProcess?
    private var helloWatcher: UVReadableWatcher?
    /// Gives up on a server that neither says hello nor exits within ``helloTimeout``.
    private var helloDeadline: UVTimer?
    /// How long a new server may take to say hello (it is exec'd: a few milliseconds).
    static let helloTimeout: Duration = .seconds(5)
    private var nextRequest: UInt64 = 1
    /// Whether the current server said hello (one that ends before it is no fork server at all).
    private var greeted = false
    private var starts: [ContinuousClock.Instant] = []
    /// Called on every state change.
    private let onStateChange: (State) -> Void
    /// Called with a server's pid when it was started, and again when it was reaped (the guardian holds its process
    /// group in between, and must forget it after: the number may then be any process's).
    private let onServerProcess: (_ pid: Int32, _ running: Bool) -> Void
    /// Called with children a dead server made but never reported (SIGKILLed already): reap them.
    private let onOrphans: ([(pid: Int32, pidfd: Int32)]) -> Void
    private var readyWaiters: [CheckedContinuation<State, Never>] = []
    private var changeWaiters: [CheckedContinuation<State, Never>] = []

    init(
        loop: UVEventLoop,
        logger: Logger,
        environment: UVEnvironment,
        strategy: UVSpawnStrategy,
        executable: String,
        onStateChange: @escaping (State) -> Void,
        onServerProcess: @escaping (_ pid: Int32, _ running: Bool) -> Void,
        onOrphans: @escaping ([(pid: Int32, pidfd: Int32)]) -> Void
    ) {
        self.loop = loop
        self.logger = logger
        self.environment = environment
        self.strategy = strategy
        self.executable = executable
        self.onStateChange = onStateChange
        self.onServerProcess = onServerProcess
        self.onOrphans = onOrphans
    }

    /// The server's pid while it runs.
    var pid: Int32? {
        switch self.state {
        case .starting(let pid), .ready(let pid): pid
        case .disabled, .stopped: nil
        }
    }

    /// The server process's pid while it runs, whatever its state (a disabled one may still be ending).
    var runningPID: Int32? { self.process?.pid }

    /// Starts the server (again). Its hello is read when it comes; until then workers are exec'd.
    func start() {
        let now = ContinuousClock.now
        self.starts = self.starts.filter { now - $0 < .seconds(60) } + [now]
        guard self.starts.count <= Self.maxRestartsPerMinute + 1 else {
            self.disable("it ended \(Self.maxRestartsPerMinute + 1) times within a minute")
            return
        }
        var pair: [Int32] = [-1, -1]
        let status = cws_fork_server_socketpair(&pair)
        guard status == 0 else {
            self.disable("cannot make its socket: \(String(cString: strerror(status)))")
            return
        }
        var options = UVSpawnOptions(
            executable: self.executable,
            arguments: [CWS_FORK_SERVER_MARKER, "3"],
            detached: true,
            descriptors: [1: 1, 2: 2, 3: pair[1]]
        )
        options.argumentZero = "bgworker-fork-server"
        options.baseEnvironment = self.environment
        // The loader binds every symbol of every library when the server starts, once, instead of in each worker
        // at its first call of each function (a lazy binding is written into the worker's copy of the tables and
        // is lost with it): 150 µs of every forked worker's start. Workers get their own environment, without it.
        options.environment = ["LD_BIND_NOW": "1"]
        options.strategy = self.strategy
        let process: UVChildProcess
        do {
            process = try self.loop.spawn(options) { [weak self] status in self?.exited(status) }
            self.onServerProcess(process.pid, true)
        } catch {
            _ = cws_close(pair[0])
            _ = cws_close(pair[1])
            self.disable("cannot start it: \(error)")
            return
        }
        _ = cws_close(pair[1])
        self.greeted = false
        self.socket = pair[0]
        self.process = process
        self.watchHello()
        self.helloDeadline = try? self.loop.scheduleTimer(after: Self.helloTimeout) { [weak self] in
            guard let self, case .starting = self.state else { return }
            self.disable("'\(self.executable)' did not say hello within \(Self.helloTimeout): it is not a fork server (it does not link BackgroundWorkerRuntime)")
        }
        self.set(.starting(pid: process.pid))
    }

    /// Waits until the server is ready, disabled or stopped, and returns that state. Runs on the caller's actor,
    /// which must be the supervisor (the loop thread): read anywhere else, the state could turn ready between the
    /// check and the wait, and the wake-up would be lost.
    func waitUntilSettled(isolation: isolated WorkerSupervisor) async -> State {
        if case .starting = self.state {
            return await withCheckedContinuation(isolation: isolation) { self.readyWaiters.append($0) }
        }
        return self.state
    }

    /// Waits for the next state change. On the supervisor's actor, as ``waitUntilSettled(isolation:)``.
    func waitForChange(isolation: isolated WorkerSupervisor) async -> State {
        await withCheckedContinuation(isolation: isolation) { self.changeWaiters.append($0) }
    }

    /// Forks a worker with `options`' arguments, environment and descriptors (its executable is this binary).
    /// Returns the child, watched on the loop, or nil with the reason when exec must be used instead.
    func fork(
        _ options: UVSpawnOptions,
        preloading library: String? = nil,
        onExit: @escaping (UVExitStatus) -> Void
    ) -> Result<UVChildProcess, ForkServerRefusal> {
        guard case .ready = self.state else { return .failure(ForkServerRefusal("the fork server is \(self.state)")) }
        let id = self.nextRequest
        self.nextRequest += 1
        let children = options.descriptors.keys.sorted()
        let parents = children.map { options.descriptors[$0]! }
        var pid: pid_t = -1
        var pidfd: Int32 = -1
        var threads: Int32 = 0
        let status = options.withArgumentsAndEnvironment { argv, envp in
            cws_fork_server_fork(
                self.socket, id, argv, envp ?? environ, library, options.detached ? 1 : 0, children, parents,
                Int32(children.count), Self.requestTimeoutMilliseconds, &pid, &pidfd, &threads
            )
        }
        guard status == 0 else {
            let reason = String(cString: strerror(status))
            switch status {
            case EDEADLK:
                self.disable("it has \(threads) threads (\(library.map { "loading '\($0)' started one" } ?? "at start")); forking is safe only with one")
            case ETIMEDOUT, EPIPE, EPROTO:
                if pid > 0 { self.onOrphans([(pid, -1)]) }
                self.logger.warning("the fork server failed a request (\(reason)); restarting it", metadata: ["forkServer.pid": "\(self.pid ?? 0)"])
                self.kill()
            default:
                break  // transient (EAGAIN, ENOMEM): this worker is exec'd
            }
            return .failure(ForkServerRefusal("the fork server could not fork: \(reason)"))
        }
        do {
            return .success(try self.loop.adoptChild(pid: pid, pidfd: pidfd, name: options.argumentZero ?? "worker", detached: options.detached, onExit: onExit))
        } catch {
            self.onOrphans([(pid, pidfd)])
            return .failure(ForkServerRefusal("the forked worker cannot be watched: \(error)"))
        }
    }

    /// Stops the server with the supervisor: it exits when its socket closes.
    func stop() {
        self.closeSocket()
        self.set(.stopped)
    }

    // MARK: - Internals

    private func set(_ state: State) {
        self.state = state
        self.onStateChange(state)
        let changed = self.changeWaiters
        self.changeWaiters.removeAll()
        for waiter in changed { waiter.resume(returning: state) }
        if case .starting = state { return }
        let waiters = self.readyWaiters
        self.readyWaiters.removeAll()
        for waiter in waiters { waiter.resume(returning: state) }
    }

    private func disable(_ reason: String) {
        self.logger.warning("not using the fork server: \(reason); built-in workers are exec'd")
        self.closeSocket()
        if let process = self.process, process.isRunning { _ = try? process.signal(.kill) }
        self.set(.disabled(reason))
    }

    /// Kills a server that failed; its exit starts the next one.
    private func kill() {
        guard let process = self.process else { return }
        _ = try? process.signal(.kill)
        self.collectOrphans()
        self.closeSocket()
        if case .ready(let pid) = self.state { self.set(.starting(pid: pid)) }
    }

    /// Workers the server made after the supervisor stopped listening (a late reply): killed and reaped.
    private func collectOrphans() {
        guard self.socket >= 0 else { return }
        var pids = [pid_t](repeating: 0, count: 64)
        var pidfds = [Int32](repeating: -1, count: 64)
        let count = Int(cws_fork_server_drain(self.socket, 100, &pids, &pidfds, 64))
        if count > 0 { self.onOrphans((0..<count).map { (pids[$0], pidfds[$0]) }) }
    }

    private func exited(_ status: UVExitStatus) {
        if let process = self.process { self.onServerProcess(process.pid, false) }
        self.process = nil
        self.collectOrphans()
        self.closeSocket()
        switch self.state {
        case .stopped, .disabled:
            return
        case .starting where !self.greeted:
            // It never said hello: a binary that is no fork server would exit again on every restart.
            self.disable("'\(self.executable)' ended (\(status)) before it said hello: it is not a fork server (it does not link BackgroundWorkerRuntime)")
        case .starting, .ready:
            self.logger.warning("the fork server exited (\(status)); starting it again")
            self.start()
        }
    }

    private func watchHello() {
        self.helloWatcher = try? self.loop.watchReadable(self.socket) { [weak self] in self?.helloReadable() }
    }

    private func stopWatchingHello() {
        self.helloWatcher?.cancel()
        self.helloWatcher = nil
    }

    private func helloReadable() {
        self.stopWatchingHello()
        self.helloDeadline?.cancel()
        self.helloDeadline = nil
        var pid: pid_t = 0
        var threads: Int32 = 0
        var error: Int32 = 0
        let status = cws_fork_server_hello(self.socket, 0, &pid, &threads, &error)
        guard status == 0 else {
            // It died before saying hello: its exit starts the next one.
            self.logger.warning("the fork server did not say hello (\(String(cString: strerror(status))))")
            return
        }
        self.greeted = true
        switch error {
        case 0:
            self.set(.ready(pid: pid))
        case EDEADLK:
            self.disable("it has \(threads) threads at start; forking is safe only with one")
        default:
            self.disable("this system cannot fork with CLONE_PARENT safely (\(String(cString: strerror(error))))")
        }
    }

    private func closeSocket() {
        self.stopWatchingHello()
        self.helloDeadline?.cancel()
        self.helloDeadline = nil
        if self.socket >= 0 { _ = cws_close(self.socket) }
        self.socket = -1
    }
}

/// Why a worker was not forked (it is exec'd instead).
struct ForkServerRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
