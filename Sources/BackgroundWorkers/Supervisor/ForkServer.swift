import BackgroundWorkerContract
import CWorkerSupport
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's fork server (``WorkerSupervisor/Configuration/forkServer``): a process started from this
/// very binary (`/proc/self/exe --bgworker-fork-server 3`) that stops in an ELF constructor before `main`, with
/// one thread, and forks on request, so that a worker skips the loader and the libraries' start-up an exec pays
/// again. How and why the fork is safe: `Sources/CWorkerSupport/ForkServer.c`.
///
/// The server forks ahead of need: it keeps the supervisor one *spare*, a process that waits on a socket of its
/// own for the one request that makes it a worker. A start sends the spare its worker (arguments, environment,
/// descriptors) and is done: no fork, and no answer to wait for, is on the way from a registration to its worker.
/// The server then forks the next spare while the worker starts. The spare is this process's child
/// (`CLONE_PARENT`) with a pidfd passed along, so the worker is watched and reaped like a spawned one and every
/// rule applies unchanged; a spare that dies unused is reaped here.
///
/// When no spare is there (the first start, a burst of starts), one is asked for and waited for, as a
/// `posix_spawn` is: the loop thread waits for it (a fork takes a fraction of a millisecond). When the server is
/// not ready, has died, answers late or refuses, the worker is started through exec instead and nothing is lost;
/// a server that died is started again, up to ``maxRestartsPerMinute`` times a minute, after which exec is used
/// and the reason logged. Loop thread only.
final class ForkServer: @unchecked Sendable {
    // @unchecked Sendable: read and written only on the supervisor's loop thread (its actor's executor).
    /// What the server can do now.
    enum State: Equatable, CustomStringConvertible {
        /// Started; its hello has not come yet.
        case starting(pid: Int32)
        /// Forks on request.
        case ready(pid: Int32)
        /// Not running: it could not be started for a passing reason (no descriptor or memory free), and is
        /// started again after a pause (exec is used meanwhile).
        case retrying(String)
        /// Not used any more, for this reason (exec is used).
        case disabled(String)
        /// Stopped with the supervisor.
        case stopped

        var description: String {
            switch self {
            case .starting(let pid): "starting (pid \(pid))"
            case .ready(let pid): "ready (pid \(pid))"
            case .retrying(let reason): "not running, started again soon: \(reason)"
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
    /// Whether its workers are library workers (`bgworker-host`): each needs a spare made after its library was
    /// loaded, so none is made ahead of the first.
    let servesLibraries: Bool
    private(set) var state: State = .stopped
    private var socket: Int32 = -1
    private var process: UVChildProcess?
    /// Watches the server's socket: for its hello, then for spares it made.
    private var socketWatcher: UVReadableWatcher?
    /// Gives up on a server that neither says hello nor exits within ``helloTimeout``.
    private var helloDeadline: UVTimer?
    /// How long a new server may take to say hello (it is exec'd: a few milliseconds).
    static let helloTimeout: Duration = .seconds(5)
    private var nextRequest: UInt64 = 1
    /// Whether the current server said hello (one that ends before it is no fork server at all).
    private var greeted = false
    private var starts: [ContinuousClock.Instant] = []
    /// Starts the server again after a start failed for a passing reason (``State/retrying(_:)``).
    private var retryTimer: UVTimer?
    /// The pause before the next such start: 1 s, doubling to 30 s, back to 1 s after a hello.
    private var retryPause: Duration = .seconds(1)
    /// Called with a server's pid when it was started, and again when it was reaped (the guardian holds its process
    /// group in between, and must forget it after: the number may then be any process's).
    private let onServerProcess: (_ pid: Int32, _ running: Bool) -> Void
    private var readyWaiters: [CheckedContinuation<State, Never>] = []
    private var changeWaiters: [CheckedContinuation<State, Never>] = []

    /// A process forked ahead of need, waiting on its socket for the worker it becomes.
    private struct Spare {
        let pid: Int32
        let pidfd: Int32
        /// This process's end of the spare's socket.
        let socket: Int32
        /// The request that made it: every library a request up to this one asked for is loaded in it.
        let request: UInt64
        /// Watches its pidfd while it waits: a spare that dies unused is reaped.
        let watcher: UVReadableWatcher?
    }

    /// The spares made and not yet used (usually one).
    private var spares: [Spare] = []
    /// The spare requests the server has not answered yet.
    private var pendingSpares: Set<UInt64> = []
    /// For each library a spare request asked the running server to load, the first such request.
    private var preloads: [String: UInt64] = [:]

    init(
        loop: UVEventLoop,
        logger: Logger,
        environment: UVEnvironment,
        strategy: UVSpawnStrategy,
        executable: String,
        servesLibraries: Bool,
        onServerProcess: @escaping (_ pid: Int32, _ running: Bool) -> Void
    ) {
        self.loop = loop
        self.logger = logger
        self.environment = environment
        self.strategy = strategy
        self.executable = executable
        self.servesLibraries = servesLibraries
        self.onServerProcess = onServerProcess
    }

    /// The server's pid while it runs.
    var pid: Int32? {
        switch self.state {
        case .starting(let pid), .ready(let pid): pid
        case .retrying, .disabled, .stopped: nil
        }
    }

    /// Whether the state is one a start waits no longer for: ready, disabled or stopped.
    private var isSettled: Bool {
        switch self.state {
        case .starting, .retrying: false
        case .ready, .disabled, .stopped: true
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
            let reason = "cannot make its socket: \(String(cString: strerror(status)))"
            return Self.isPassing(status) ? self.retryLater(reason) : self.disable(reason)
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
            return Self.isPassing(error.errno) ? self.retryLater("cannot start it: \(error)") : self.disable("cannot start it: \(error)")
        }
        _ = cws_close(pair[1])
        self.greeted = false
        self.socket = pair[0]
        self.process = process
        self.watchSocket()
        self.helloDeadline = try? self.loop.scheduleTimer(after: Self.helloTimeout) { [weak self] in
            guard let self, case .starting = self.state else { return }
            self.disable("'\(self.executable)' did not say hello within \(Self.helloTimeout): it is not a fork server (it does not link BackgroundWorkerRuntime)")
        }
        self.set(.starting(pid: process.pid))
    }

    /// Whether a start that failed with `error` may succeed later: a full descriptor table (this process's or
    /// the system's), no memory, no process free.
    static func isPassing(_ error: Int32) -> Bool {
        error == EMFILE || error == ENFILE || error == ENOMEM || error == EAGAIN
    }

    /// A start failed for a passing reason: not counted as an exit of the server (the budget of
    /// ``maxRestartsPerMinute`` is for servers that die), tried again after a pause that doubles up to 30 s.
    private func retryLater(_ reason: String) {
        self.starts.removeLast()
        let pause = self.retryPause
        self.retryPause = min(pause * 2, .seconds(30))
        self.logger.warning("cannot start the fork server now (\(reason)); trying again in \(pause); built-in workers are exec'd meanwhile")
        self.retryTimer = try? self.loop.scheduleTimer(after: pause) { [weak self] in
            guard let self, case .retrying = self.state else { return }
            self.retryTimer = nil
            self.start()
        }
        self.set(.retrying(reason))
    }

    /// Waits until the server is ready, disabled or stopped, and returns that state. Runs on the caller's actor,
    /// which must be the supervisor (the loop thread): read anywhere else, the state could turn ready between the
    /// check and the wait, and the wake-up would be lost.
    func waitUntilSettled(isolation: isolated WorkerSupervisor) async -> State {
        if !self.isSettled {
            return await withCheckedContinuation(isolation: isolation) { self.readyWaiters.append($0) }
        }
        return self.state
    }

    /// Waits for the next state change. On the supervisor's actor, as ``waitUntilSettled(isolation:)``.
    func waitForChange(isolation: isolated WorkerSupervisor) async -> State {
        await withCheckedContinuation(isolation: isolation) { self.changeWaiters.append($0) }
    }

    /// Starts a worker with `options`' arguments, environment and descriptors (its executable is this binary) in a
    /// spare. Returns the worker, watched on the loop, or why exec must be used instead.
    func fork(
        _ options: UVSpawnOptions,
        preloading library: String? = nil,
        onExit: @escaping (UVExitStatus) -> Void
    ) -> Result<UVChildProcess, ForkServerRefusal> {
        let children = options.descriptors.keys.sorted()
        let parents = children.map { options.descriptors[$0]! }
        // A spare that died unused (its socket is closed) gets one more try with the next one.
        for _ in 0..<2 {
            let spare: Spare
            switch self.takeSpare(preloading: library) {
            case .success(let taken): spare = taken
            case .failure(let refusal): return .failure(refusal)
            }
            let id = self.nextRequest
            self.nextRequest += 1
            let status = options.withArgumentsAndEnvironment { argv, envp in
                cws_fork_server_send_worker(
                    spare.socket, id, argv, envp ?? environ, options.detached ? 1 : 0, children, parents, Int32(children.count)
                )
            }
            // Sent or not, the spare's socket is done with: a spare that got its request has read what it needs.
            _ = cws_close(spare.socket)
            self.requestSpareIfNone()
            guard status == 0 else {
                self.discard(spare)
                if status == EPIPE { continue }
                return .failure(ForkServerRefusal("the fork server's spare could not take the worker: \(String(cString: strerror(status)))"))
            }
            do {
                let name = options.argumentZero ?? "worker"
                return .success(try self.loop.adoptChild(pid: spare.pid, pidfd: spare.pidfd, name: name, detached: options.detached, onExit: onExit))
            } catch {
                self.end(spare.pid, pidfd: spare.pidfd)
                return .failure(ForkServerRefusal("the forked worker cannot be watched: \(error)"))
            }
        }
        return .failure(ForkServerRefusal("the fork server's spares ended before they were used"))
    }

    /// A spare that has `library` loaded (when not nil), taken from the spares.
    private func takeSpare(preloading library: String?) -> Result<Spare, ForkServerRefusal> {
        self.readySpare(preloading: library).map { index in
            let spare = self.spares.remove(at: index)
            spare.watcher?.cancel()
            return spare
        }
    }

    /// The index of a spare that has `library` loaded (when not nil): one made, or one asked for and waited for.
    private func readySpare(preloading library: String?) -> Result<Int, ForkServerRefusal> {
        guard case .ready = self.state else { return .failure(ForkServerRefusal("the fork server is \(self.state)")) }
        if let library, self.preloads[library] == nil {
            // Not loaded yet: spares made before the request that loads it lack it.
            if let failure = self.requestSpare(preloading: library) { return .failure(failure) }
        }
        let required = library.flatMap { self.preloads[$0] } ?? 0
        // Spares made before its library was loaded will not do for this one: ended rather than left idle.
        for stale in self.spares where stale.request < required { self.discard(stale) }
        self.spares.removeAll { $0.request < required }
        let deadline = ContinuousClock.now + .milliseconds(Int(Self.requestTimeoutMilliseconds))
        while true {
            if let index = self.spares.firstIndex(where: { $0.request >= required }) { return .success(index) }
            if !self.pendingSpares.contains(where: { $0 >= required }) {
                if let failure = self.requestSpare(preloading: nil) { return .failure(failure) }
            }
            let left = ContinuousClock.now.duration(to: deadline)
            let milliseconds = max(1, Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            if let failure = self.readSpare(timeoutMilliseconds: milliseconds, waiting: true) { return .failure(failure) }
        }
    }

    /// The pid of a spare ready for a built-in worker, asked for and waited for when none is there; nil when the
    /// server cannot make one (for tests).
    func readySparePID() -> Int32? {
        guard case .success(let index) = self.readySpare(preloading: nil) else { return nil }
        return self.spares[index].pid
    }

    /// Asks for a spare when none is there or coming (after a start, and when the server is ready).
    private func requestSpareIfNone() {
        guard case .ready = self.state, self.spares.isEmpty, self.pendingSpares.isEmpty else { return }
        _ = self.requestSpare(preloading: nil)
    }

    /// Sends a spare request; returns why exec must be used, or nil.
    private func requestSpare(preloading library: String?) -> ForkServerRefusal? {
        let id = self.nextRequest
        self.nextRequest += 1
        let status = cws_fork_server_request_spare(self.socket, id, library)
        guard status == 0 else {
            let reason = String(cString: strerror(status))
            self.logger.warning("the fork server did not take a request (\(reason)); restarting it", metadata: ["forkServer.pid": "\(self.pid ?? 0)"])
            self.kill()
            return ForkServerRefusal("the fork server could not be asked: \(reason)")
        }
        self.pendingSpares.insert(id)
        if let library, self.preloads[library] == nil { self.preloads[library] = id }
        return nil
    }

    /// Reads one answer to a spare request, waiting up to `timeoutMilliseconds`: keeps the spare; returns why exec
    /// must be used (for a start `waiting` for it), or nil.
    @discardableResult
    private func readSpare(timeoutMilliseconds: Int32, waiting: Bool) -> ForkServerRefusal? {
        var id: UInt64 = 0
        var pid: pid_t = -1
        var pidfd: Int32 = -1
        var socket: Int32 = -1
        var threads: Int32 = 0
        let status = cws_fork_server_read_spare(self.socket, timeoutMilliseconds, &id, &pid, &pidfd, &socket, &threads)
        if id != 0 { self.pendingSpares.remove(id) }
        guard status == 0 else {
            // A spare made but not usable (its descriptors lost) was sent SIGKILL: reaped here.
            if pid > 0 { self.end(pid, pidfd: -1) }
            let reason = String(cString: strerror(status))
            switch status {
            case EDEADLK:
                let cause = self.preloads.first { $0.value == id }.map { "loading '\($0.key)' started one" } ?? "at start"
                self.disable("it has \(threads) threads (\(cause)); forking is safe only with one")
            case ETIMEDOUT where !waiting:
                return nil  // nothing there (read first by a start that waited for it)
            case EPIPE where !waiting:
                // The server ended: its exit, reported by its pidfd, starts the next one.
                self.stopWatchingSocket()
                return nil
            case ETIMEDOUT, EPIPE, EPROTO:
                self.logger.warning("the fork server failed a request (\(reason)); restarting it", metadata: ["forkServer.pid": "\(self.pid ?? 0)"])
                self.kill()
            default:
                // Transient (EAGAIN, ENOMEM, EMFILE: the server's, or this process's table full when the spare's
                // descriptors came): this worker is exec'd, and the server serves on.
                if pid > 0 {
                    self.logger.warning("a spare of the fork server was ended: its descriptors did not fit (\(reason))", metadata: ["spare.pid": "\(pid)"])
                }
            }
            return ForkServerRefusal("the fork server could not fork: \(reason)")
        }
        let watcher = try? self.loop.watchReadable(pidfd) { [weak self] in self?.spareEnded(pid) }
        self.spares.append(Spare(pid: pid, pidfd: pidfd, socket: socket, request: id, watcher: watcher))
        return nil
    }

    /// A spare's pidfd turned readable: it ended before it was used (killed by someone). Reaped, forgotten.
    private func spareEnded(_ pid: Int32) {
        guard let index = self.spares.firstIndex(where: { $0.pid == pid }) else { return }
        let spare = self.spares.remove(at: index)
        self.logger.debug("a spare of the fork server ended before it was used", metadata: ["spare.pid": "\(pid)"])
        self.discard(spare)
    }

    /// Ends a spare that will not be used, and reaps it.
    private func discard(_ spare: Spare) {
        spare.watcher?.cancel()
        _ = cws_close(spare.socket)
        self.end(spare.pid, pidfd: spare.pidfd)
    }

    /// Ends a process the server made for this one that will not be used (a spare, or one reported too late),
    /// and reaps it now. It is this process's unreaped child, so its pid is still its own; it waits in `recvmsg`
    /// or has only begun a worker's start, so it ends at once on SIGKILL.
    private func end(_ pid: Int32, pidfd: Int32) {
        Glibc.kill(pid, SIGKILL)
        while waitpid(pid, nil, 0) < 0 && errno == EINTR {}
        if pidfd >= 0 { _ = cws_close(pidfd) }
    }

    /// Lets go of everything for good (the supervisor stops, or the server is given up): the retry, the socket
    /// (a running server exits when it closes), every spare.
    private func release() {
        self.retryTimer?.cancel()
        self.retryTimer = nil
        self.closeSocket()
        let spares = self.spares
        self.spares.removeAll()
        for spare in spares { self.discard(spare) }
    }

    /// Stops the server with the supervisor: it exits when its socket closes.
    func stop() {
        self.release()
        self.set(.stopped)
    }

    // MARK: - Internals

    private func set(_ state: State) {
        self.state = state
        let changed = self.changeWaiters
        self.changeWaiters.removeAll()
        for waiter in changed { waiter.resume(returning: state) }
        guard self.isSettled else { return }
        let waiters = self.readyWaiters
        self.readyWaiters.removeAll()
        for waiter in waiters { waiter.resume(returning: state) }
    }

    private func disable(_ reason: String) {
        self.logger.warning("not using the fork server: \(reason); built-in workers are exec'd")
        self.release()
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

    /// Spares the server made after the supervisor stopped listening (a late reply): killed and reaped.
    private func collectOrphans() {
        guard self.socket >= 0 else { return }
        var pids = [pid_t](repeating: 0, count: 64)
        var pidfds = [Int32](repeating: -1, count: 64)
        let count = Int(cws_fork_server_drain(self.socket, 100, &pids, &pidfds, 64))
        for index in 0..<count { self.end(pids[index], pidfd: pidfds[index]) }
    }

    private func exited(_ status: UVExitStatus) {
        if let process = self.process { self.onServerProcess(process.pid, false) }
        self.process = nil
        self.collectOrphans()
        self.closeSocket()
        switch self.state {
        case .stopped, .disabled, .retrying:
            return
        case .starting where !self.greeted:
            // It never said hello: a binary that is no fork server would exit again on every restart.
            self.disable("'\(self.executable)' ended (\(status)) before it said hello: it is not a fork server (it does not link BackgroundWorkerRuntime)")
        case .starting, .ready:
            self.logger.warning("the fork server exited (\(status)); starting it again")
            self.start()
        }
    }

    private func watchSocket() {
        self.socketWatcher = try? self.loop.watchReadable(self.socket) { [weak self] in self?.socketReadable() }
    }

    private func stopWatchingSocket() {
        self.socketWatcher?.cancel()
        self.socketWatcher = nil
    }

    /// The server's hello, or a spare it made (asked for after a start), or its end.
    private func socketReadable() {
        guard self.greeted else { return self.helloReadable() }
        guard case .ready = self.state else { return }
        self.readSpare(timeoutMilliseconds: 0, waiting: false)
    }

    private func helloReadable() {
        var pid: pid_t = 0
        var threads: Int32 = 0
        var error: Int32 = 0
        let status = cws_fork_server_hello(self.socket, 0, &pid, &threads, &error)
        switch status {
        case 0:
            break
        case ETIMEDOUT:
            return  // nothing there yet; the deadline still runs
        case EPIPE:
            // It died before saying hello: its exit starts the next one (or gives it up).
            self.stopWatchingSocket()
            self.logger.warning("the fork server ended before it said hello")
            return
        case EPROTONOSUPPORT:
            self.disable("'\(self.executable)' speaks another version of the fork server's protocol: rebuild it with this version of swift-background-workers")
            return
        default:
            self.disable("'\(self.executable)' did not answer as a fork server (\(String(cString: strerror(status))))")
            return
        }
        self.helloDeadline?.cancel()
        self.helloDeadline = nil
        self.greeted = true
        switch error {
        case 0:
            self.retryPause = .seconds(1)
            self.logger.debug("fork server ready", metadata: ["forkServer.pid": "\(pid)", "forkServer.executable": "\(self.executable)"])
            self.set(.ready(pid: pid))
            if !self.servesLibraries { self.requestSpareIfNone() }
        case EDEADLK:
            self.disable("it has \(threads) threads at start; forking is safe only with one")
        default:
            self.disable("this system cannot fork with CLONE_PARENT safely (\(String(cString: strerror(error))))")
        }
    }

    /// Closes the server's socket; what was asked of the server through it is forgotten with it (spares already
    /// made stay usable: they wait on sockets of their own).
    private func closeSocket() {
        self.stopWatchingSocket()
        self.helloDeadline?.cancel()
        self.helloDeadline = nil
        if self.socket >= 0 { _ = cws_close(self.socket) }
        self.socket = -1
        self.pendingSpares.removeAll()
        self.preloads.removeAll()
    }
}

/// Why a worker was not forked (it is exec'd instead).
struct ForkServerRefusal: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
