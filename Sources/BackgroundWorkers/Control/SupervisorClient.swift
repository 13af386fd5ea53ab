// Re-exported: the client's answers are the protocol's types (WorkerInfo, ControlEvent, WaitResult).
@_exported import BackgroundWorkerControl
import CWorkerSupport
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// A connection to a supervisor in another process, through its control socket: registers, awaits, lists
/// and terminates workers there, and hands out ``RemoteWorkerHandle``s with the same API as local
/// ``BackgroundWorkerHandle``s (both are ``WorkerHandleProtocol``).
///
/// ```swift
/// let client = try await SupervisorClient.connect(path: "/run/bgworkerd/control.sock")
/// let handle = try await client.register(BackgroundWorker(name: "report", entryPoint: .executable("/usr/bin/report")))
/// let pid = try await handle.waitForStartup()
/// _ = try await handle.waitForShutdown()
/// await client.close()
/// ```
///
/// With `notifications` (the default), the client's process keeps SIGUSR1 handled for the rest of its life, as
/// PostgreSQL's backends do, and the supervisor sends it SIGUSR1 on every status change of each worker it
/// registered with `notify`; the client re-reads their status on every wake-up (signals coalesce) and
/// publishes what changed on ``statusChanges()``. Waits do not depend on signals: each is one request that the
/// supervisor answers when the state comes.
///
/// The client runs an event loop of its own. ``close()`` ends the connection (the supervisor terminates the
/// workers registered as `linked`) and stops the loop; dropping the client does the same without waiting.
public final class SupervisorClient: Sendable {
    /// The control socket's path.
    public let path: String
    /// The supervisor's process id.
    public let serverPID: Int32
    /// The server's name, as it said in `hello`.
    public let serverName: String
    /// The supervisor's number of worker slots.
    public let maxWorkerProcesses: Int
    /// This process as the supervisor sees it: the notify pid of registrations made with `notify`.
    public let clientPID: Int32

    let loop: UVEventLoop
    private let state: ClientState

    private init(path: String, loop: UVEventLoop, state: ClientState, hello: HelloResult) {
        self.path = path
        self.loop = loop
        self.state = state
        self.serverPID = hello.pid
        self.serverName = hello.server
        self.maxWorkerProcesses = hello.maxWorkerProcesses
        self.clientPID = hello.clientPID
    }

    deinit {
        let state = self.state
        self.loop.execute { state.close(reason: "the client was dropped") }
        self.loop.requestShutdown()
    }

    /// Connects to the supervisor serving `path` and says `hello`.
    /// - Parameters:
    ///   - path: The control socket.
    ///   - notifications: Whether this process takes SIGUSR1 wake-ups (it keeps SIGUSR1 handled from now on).
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Code/controlFailed`` and a message that says why:
    ///   nothing at `path`, nobody listening (the daemon is not running), permission denied, or a refusal by
    ///   the server (its limit of connections, this user not allowed, another protocol version).
    public static func connect(path: String, notifications: Bool = true) async throws(SupervisorError) -> SupervisorClient {
        let loop: UVEventLoop
        do {
            loop = try UVEventLoop(name: "bgw-client")
        } catch {
            throw SupervisorError(.controlFailed, "creating the client's event loop: \(error)", underlying: error)
        }
        let state = ClientState(path: path)
        do {
            try await loop.submit {
                // A supervisor that goes away while a request is written must not take this process with it.
                _ = cws_ignore_sigpipe()
                if notifications {
                    try UVSignal.user1.keepHandledForProcessLifetime()
                    state.watcher = try loop.watchSignal(.user1) { state.wokenUp() }
                }
                try state.open(on: loop)
            }
            let hello = try await state.request(
                on: loop,
                .hello,
                HelloParams(notifications: notifications ? true : nil),
                as: HelloResult.self
            )
            return SupervisorClient(path: path, loop: loop, state: state, hello: hello)
        } catch {
            loop.execute { state.close(reason: "connecting failed") }
            try? await loop.shutdown()
            if let error = error as? SupervisorError { throw error }
            if let error = error as? UVError {
                throw SupervisorError(.controlFailed, Self.explain(error, path: path), underlying: error)
            }
            throw SupervisorError(.controlFailed, "connecting to '\(path)': \(error)", underlying: error)
        }
    }

    private static func explain(_ error: UVError, path: String) -> String {
        switch error.errno {
        case ENOENT: "no supervisor control socket at '\(path)': is the daemon running? (\(error))"
        case ECONNREFUSED: "nothing listens on '\(path)': the daemon is not running, or died and left its socket (\(error))"
        case EACCES, EPERM: "this user may not connect to '\(path)' (\(error))"
        default: "connecting to '\(path)': \(error)"
        }
    }

    /// Ends the connection and stops the client's loop. The supervisor terminates the workers this
    /// connection registered as `linked` and clears its notify pids; handles then throw
    /// ``SupervisorError/Code/controlFailed``.
    public func close() async {
        let state = self.state
        self.loop.execute { state.close(reason: "the client closed the connection") }
        try? await self.loop.shutdown()
    }

    // MARK: - Requests

    /// Sends one request and decodes its result.
    func call<Result: Decodable & Sendable>(
        _ method: ControlMethod,
        _ params: some Encodable & Sendable,
        as type: Result.Type
    ) async throws -> Result {
        try await self.state.request(on: self.loop, method, params, as: type)
    }

    /// Registers a worker in the supervisor.
    /// - Parameters:
    ///   - worker: The registration; its `notifyPID` must be nil (the notify pid is this process).
    ///   - notify: Whether this process gets SIGUSR1 on the worker's status changes; nil: when the client
    ///     was connected with `notifications`. `true` on a client without them is refused (`notifyPIDRefused`).
    ///   - linked: Whether the supervisor terminates the worker when this connection ends (a crashed client
    ///     leaves nothing behind).
    ///   - timeout: How long to wait for a free slot; zero fails at once when every slot is taken. Cancelling
    ///     the calling task cancels the wait on the server: nothing is registered (or what was, just before,
    ///     is terminated) and `CancellationError` is thrown.
    /// - Throws: ``SupervisorError`` with the supervisor's code (`invalidRegistration`, `noFreeSlot`, ...), or
    ///   ``SupervisorError/Code/controlFailed`` (a limit of the server: the underlying `ControlError` says which).
    public func register(
        _ worker: BackgroundWorker,
        notify: Bool? = nil,
        linked: Bool = false,
        waitingForSlotUpTo timeout: Duration = .zero
    ) async throws -> RemoteWorkerHandle {
        let params = RegisterParams(
            worker: worker,
            notify: notify ?? self.state.takesNotifications,
            linked: linked,
            waitForSlot: timeout > .zero ? timeout.seconds : nil
        )
        let info = try await self.call(.register, params, as: WorkerInfo.self)
        let handle = RemoteWorkerHandle(slot: info.slot, generation: info.generation, client: self)
        if Task.isCancelled {
            // Registered before the cancellation reached the server: undone, as if it never happened.
            try? await handle.terminate()
            throw CancellationError()
        }
        if params.notify { self.loop.execute { [state] in state.watch(info) } }
        return handle
    }

    /// The handle of a registration by slot and generation (as `list` shows them).
    public func handle(slot: Int, generation: UInt64) -> RemoteWorkerHandle {
        RemoteWorkerHandle(slot: slot, generation: generation, client: self)
    }

    /// The handle of the registered worker called `name` (the first in slot order).
    public func handle(named name: String) async throws -> RemoteWorkerHandle {
        let info = try await self.info(WorkerReference(name: name))
        return RemoteWorkerHandle(slot: info.slot, generation: info.generation, client: self)
    }

    /// Every registered worker, in slot order.
    public func list() async throws -> [WorkerInfo] {
        try await self.call(.list, NoParams(), as: [WorkerInfo].self)
    }

    /// A worker's state.
    public func info(_ worker: WorkerReference) async throws -> WorkerInfo {
        try await self.call(.status, WorkerParams(worker: worker), as: WorkerInfo.self)
    }

    /// Waits up to `timeout` for a worker to start, be ready or stop.
    /// - Throws: ``SupervisorError``: `workerStopped`, `supervisorStopped`, `notReportingReadiness`, or
    ///   `controlFailed` whose underlying `ControlError` is `timedOut` when the time ran out.
    public func wait(for worker: WorkerReference, until: WaitParams.Until, timeout: Duration) async throws -> WaitResult {
        try await self.call(.wait, WaitParams(worker: worker, until: until, timeout: timeout.seconds), as: WaitResult.self)
    }

    /// Terminates a worker (`TerminateBackgroundWorker`); returns its state after the request.
    @discardableResult
    public func terminate(_ worker: WorkerReference) async throws -> WorkerInfo {
        try await self.call(.terminate, WorkerParams(worker: worker), as: WorkerInfo.self)
    }

    /// Clears a worker's spent restart budget; returns its state after the request.
    @discardableResult
    public func resetRestartBudget(_ worker: WorkerReference) async throws -> WorkerInfo {
        try await self.call(.resetBudget, WorkerParams(worker: worker), as: WorkerInfo.self)
    }

    /// Shuts the supervisor down in `mode`.
    public func shutdown(_ mode: ShutdownMode) async throws {
        _ = try await self.call(.shutdown, ShutdownParams(mode: mode.description), as: Bool.self)
    }

    /// The supervisor's events from now on (one subscription per client), until the connection ends.
    public func events() async throws -> StreamSequence<ControlEvent> {
        let (stream, continuation) = AsyncStream<ControlEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        let state = self.state
        try await self.loop.submit { try state.addEventStream(continuation) }
        _ = try await self.call(.subscribe, NoParams(), as: Bool.self)
        return StreamSequence(stream)
    }

    /// The new state of each worker registered with `notify`, read again after every SIGUSR1 from the
    /// supervisor whenever it changed (PostgreSQL's latch wake-ups: signals coalesce, so a state may be
    /// skipped, never the latest). Ends when the connection ends.
    public func statusChanges() -> StreamSequence<WorkerInfo> {
        let (stream, continuation) = AsyncStream<WorkerInfo>.makeStream(bufferingPolicy: .bufferingNewest(1024))
        let state = self.state
        self.loop.execute { state.addStatusStream(continuation) }
        return StreamSequence(stream)
    }

    /// How many SIGUSR1 wake-ups this client has seen.
    public var wakeUps: Int {
        get async { (try? await self.loop.submit { [state] in state.wakeUpCount }) ?? 0 }
    }
}

/// Parameters of a method that takes none.
struct NoParams: Codable, Sendable {}

/// The client's connection: pending requests, event and status streams. Confined to the client's loop thread.
final class ClientState: @unchecked Sendable {
    // @unchecked Sendable: every `var` is read and written on the client's loop thread only; `takesNotifications`
    // is set before the client is handed out.

    private enum Pending {
        case continuation(UVWaitToken, CheckedContinuation<[UInt8], any Error>)
        case callback(([UInt8]?) -> Void)
    }

    let path: String
    var connection: UVUnixConnection?
    var watcher: UVSignalWatcher?
    private(set) var takesNotifications = false
    private var pending: [Int64: Pending] = [:]
    private var nextID: Int64 = 1
    private var closedReason: String?
    private var eventStreams: [AsyncStream<ControlEvent>.Continuation] = []
    private var statusStreams: [AsyncStream<WorkerInfo>.Continuation] = []
    /// Workers registered with `notify`, with the state last published.
    private var watched: [WorkerReference: WorkerInfo] = [:]
    private(set) var wakeUpCount = 0

    init(path: String) {
        self.path = path
    }

    func open(on loop: UVEventLoop) throws {
        self.takesNotifications = self.watcher != nil
        let connection = try loop.connectUnix(path: self.path)
        self.connection = connection
        // Replies can be as long as the server's longest message, or a list of every worker.
        try connection.readLines(maxLineLength: 64 << 20) { [unowned self] line in
            self.received(Array(line.utf8))
        } onEnd: { [unowned self] reason in
            self.close(reason: "the supervisor closed the connection (\(reason))")
        }
    }

    /// Sends a request and waits for its reply's line, then decodes it off the loop thread.
    func request<Result: Decodable & Sendable>(
        on loop: UVEventLoop,
        _ method: ControlMethod,
        _ params: some Encodable & Sendable,
        as type: Result.Type
    ) async throws -> Result {
        let line = try await loop.wait { token, continuation in
            self.send(method, params, .continuation(token, continuation))
        } cancel: { token in
            // The server is asked to cancel; the reply still comes (requestCancelled, or the result when the
            // request was answered first), so that nothing is done behind the caller's back.
            for (id, entry) in self.pending {
                if case .continuation(let waiting, _) = entry, waiting === token {
                    self.send(.cancel, CancelParams(id: id), .callback { _ in })
                }
            }
        }
        do {
            return try Self.decode(line, method: method, as: type)
        } catch let error where (error.underlying as? ControlError)?.code == .requestCancelled {
            throw CancellationError()
        }
    }

    static func decode<Value: Decodable>(_ line: [UInt8], method: ControlMethod, as type: Value.Type) throws(SupervisorError) -> Value {
        let outcome: Swift.Result<Value, ControlError>
        do {
            outcome = try ControlCodec.decodeResponse(line, as: type).outcome
        } catch {
            throw SupervisorError(.controlFailed, "\(method): the supervisor's reply is not understood: \(error)", underlying: error)
        }
        switch outcome {
        case .success(let value):
            return value
        case .failure(let error):
            if let code = SupervisorError.Code(control: error.code) {
                throw SupervisorError(code, error.message, detail: error.worker?.state.detail, underlying: error)
            }
            throw SupervisorError(.controlFailed, "\(method): \(error)", underlying: error)
        }
    }

    private func send(_ method: ControlMethod, _ params: some Encodable, _ waiter: Pending) {
        guard let connection = self.connection, connection.isOpen else {
            let reason = self.closedReason ?? "the connection is closed"
            self.fail(waiter, SupervisorError(.controlFailed, "\(method) to '\(self.path)': \(reason)"))
            return
        }
        let id = self.nextID
        self.nextID += 1
        do {
            let line = try ControlCodec.encodeRequest(id: id, method: method, params: params)
            self.pending[id] = waiter
            connection.write(line)
        } catch {
            self.fail(waiter, SupervisorError(.controlFailed, "\(method): encoding the request: \(error)", underlying: error))
        }
    }

    private func fail(_ waiter: Pending, _ error: SupervisorError) {
        switch waiter {
        case .continuation(_, let continuation): continuation.resume(throwing: error)
        case .callback(let callback): callback(nil)
        }
    }

    private func received(_ line: [UInt8]) {
        // Replies are what comes most; an event is neither a result nor an error.
        guard let (id, error) = try? ControlCodec.decodeReply(line) else {
            if let event = ControlCodec.decodeEvent(line) {
                for stream in self.eventStreams { stream.yield(event) }
            }
            return
        }
        guard let id else {
            // An error without an id: the server refused the connection (permission, limit) or the line.
            self.close(reason: "the supervisor refused: \(error.map { "\($0)" } ?? "an unreadable reply")")
            return
        }
        guard let waiter = self.pending.removeValue(forKey: id) else { return }
        switch waiter {
        case .continuation(_, let continuation): continuation.resume(returning: line)
        case .callback(let callback): callback(line)
        }
    }

    /// Ends the connection: every pending request fails with `reason`, streams finish.
    func close(reason: String) {
        if self.closedReason == nil { self.closedReason = reason }
        self.connection?.close()
        self.connection = nil
        self.watcher?.cancel()
        self.watcher = nil
        let pending = self.pending
        self.pending.removeAll()
        for id in pending.keys.sorted() {
            self.fail(pending[id]!, SupervisorError(.controlFailed, "the connection to '\(self.path)' ended: \(self.closedReason!)"))
        }
        for stream in self.eventStreams { stream.finish() }
        for stream in self.statusStreams { stream.finish() }
        self.eventStreams.removeAll()
        self.statusStreams.removeAll()
    }

    func addEventStream(_ continuation: AsyncStream<ControlEvent>.Continuation) throws(SupervisorError) {
        guard self.connection != nil else {
            continuation.finish()
            throw SupervisorError(.controlFailed, "subscribing: \(self.closedReason ?? "the connection is closed")")
        }
        self.eventStreams.append(continuation)
    }

    func addStatusStream(_ continuation: AsyncStream<WorkerInfo>.Continuation) {
        guard self.connection != nil else {
            continuation.finish()
            return
        }
        self.statusStreams.append(continuation)
    }

    /// A worker registered with `notify`: its state at registration and its changes are published from now on.
    func watch(_ info: WorkerInfo) {
        self.watched[info.reference] = info
        for stream in self.statusStreams { stream.yield(info) }
    }

    /// SIGUSR1: re-read every watched worker, publish what changed, forget the ones that are gone.
    func wokenUp() {
        self.wakeUpCount += 1
        for reference in self.watched.keys {
            self.send(.status, WorkerParams(worker: reference), .callback { [unowned self] line in
                guard let line, let info = try? Self.decode(line, method: .status, as: WorkerInfo.self) else {
                    self.watched[reference] = nil
                    return
                }
                guard let previous = self.watched[reference] else { return }
                self.watched[reference] = info.state.kind == .unregistered ? nil : info
                let changed = previous.status != info.status || previous.state != info.state || previous.restarts != info.restarts
                guard changed else { return }
                for stream in self.statusStreams { stream.yield(info) }
            })
        }
    }
}
