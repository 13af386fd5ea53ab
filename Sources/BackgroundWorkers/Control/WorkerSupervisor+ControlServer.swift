import BackgroundWorkerControl
import CWorkerSupport
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The control socket's state, confined to the supervisor actor (its loop thread).
final class ControlServer: @unchecked Sendable {
    // @unchecked Sendable: read and written only by the supervisor actor, on its loop thread.
    let configuration: ControlSocketConfiguration
    let listener: UVUnixListener
    var sessions: [UInt64: ControlSession] = [:]
    var nextSession: UInt64 = 0
    /// Handles of workers unregistered while the socket was served, newest last, so that any connection can
    /// ask how a worker it knows of ended (the oldest are forgotten past ``keptFinished``).
    var finished: [WorkerID: BackgroundWorkerHandle] = [:]
    var finishedOrder: [WorkerID] = []
    static let keptFinished = 4096

    func keepFinished(_ handle: BackgroundWorkerHandle) {
        self.finished[handle.id] = handle
        self.finishedOrder.append(handle.id)
        if self.finishedOrder.count > Self.keptFinished * 2 {
            for id in self.finishedOrder.prefix(self.finishedOrder.count - Self.keptFinished) { self.finished[id] = nil }
            self.finishedOrder.removeFirst(self.finishedOrder.count - Self.keptFinished)
        }
    }

    init(configuration: ControlSocketConfiguration, listener: UVUnixListener) {
        self.configuration = configuration
        self.listener = listener
    }
}

/// One client connection: who it is, what it registered, and what it waits for.
final class ControlSession: @unchecked Sendable {
    // @unchecked Sendable: read and written only by the supervisor actor, on its loop thread (its tasks run
    // on the actor too).
    let id: UInt64
    let connection: UVUnixConnection
    var greeted = false
    /// Closes the connection unless `hello` comes first.
    var helloDeadline: UVTimer?
    /// It said in `hello` that it handles SIGUSR1: its pid counts as notifiable while it is connected.
    var takesNotifications = false
    /// The live workers it registered (finished ones leave at its next registration).
    var registered: [WorkerID: BackgroundWorkerHandle] = [:]
    /// Registrations it asked to be terminated when it disconnects.
    var linked: Set<WorkerID> = []
    /// Registrations waiting for a slot.
    var pendingRegistrations = 0
    /// Requests still being answered (waits, registrations waiting for a slot, the event subscription).
    var tasks: [UInt64: Task<Void, Never>] = [:]
    var nextTask: UInt64 = 0
    /// The task answering each request still being answered, by request id.
    var requestTasks: [Int64: UInt64] = [:]
    /// Requests cancelled and already answered so: their tasks end without a reply.
    var cancelledRequests: Set<Int64> = []
    var subscribed = false

    init(id: UInt64, connection: UVUnixConnection) {
        self.id = id
        self.connection = connection
    }

    static let keptFinishedHandles = 1024
}

extension WorkerSupervisor {
    /// Serves the control protocol (``BackgroundWorkerControl``) on a Unix domain socket until the supervisor
    /// stops or ``stopServingControlSocket()`` is called: other processes (`bgworkerctl`, a ``SupervisorClient``)
    /// register, await, list and terminate workers through it.
    ///
    /// A client that registers with `notify` gets SIGUSR1 on every status change of that worker, at the pid
    /// the kernel reports for its connection (never a pid it names), and only after it said in `hello` that
    /// it handles SIGUSR1. When a connection ends, its notify pids are cleared and its `linked` workers are
    /// terminated.
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Code/invalidConfiguration`` naming the field, or
    ///   when the socket cannot be made (the path exists, or its folder is missing or not writable).
    public func serveControlSocket(_ configuration: ControlSocketConfiguration) throws(SupervisorError) {
        if let problem = configuration.problem() {
            throw SupervisorError(.invalidConfiguration, "control socket: \(problem)")
        }
        guard self.controlServer == nil else {
            throw SupervisorError(
                .invalidConfiguration,
                "control socket: already serving on '\(self.controlServer!.listener.path)'; stop serving first"
            )
        }
        guard !self.machine.mode.isStopping else {
            throw SupervisorError(.shuttingDown, "the supervisor is shutting down; it serves no control socket")
        }
        let listener: UVUnixListener
        do {
            listener = try self.loop.listenUnix(path: configuration.path, mode: configuration.effectiveSocketMode) {
                [unowned self] connection in
                self.assumeIsolated { $0.acceptControlConnection(connection) }
            }
        } catch {
            let hint =
                error.errno == EADDRINUSE
                ? ": something is at that path already (a stale socket of a supervisor that died: remove it)"
                : error.errno == EACCES ? ": the folder is not writable by this user" : ""
            throw SupervisorError(
                .invalidConfiguration,
                "control socket: cannot listen on '\(configuration.path)'\(hint) (\(error))",
                underlying: error
            )
        }
        // A client that goes away with replies still being written must not take the supervisor with it.
        _ = cws_ignore_sigpipe()
        if let group = configuration.allowedGroup {
            _ = chown(configuration.path, uid_t.max, gid_t(group))  // -1: keep the owner
        }
        self.controlServer = ControlServer(configuration: configuration, listener: listener)
        self.logger.info("serving the control socket", metadata: ["socket": "\(configuration.path)"])
    }

    /// Stops serving the control socket: the socket file is removed and every connection is closed (their
    /// linked workers are terminated).
    public func stopServingControlSocket() {
        guard let server = self.controlServer else { return }
        server.listener.close()
        for id in server.sessions.keys.sorted() { self.endSession(id, reason: nil) }
        self.controlServer = nil
    }

    /// The path being served, if any.
    public var controlSocketPath: String? { self.controlServer?.listener.path }

    // MARK: - Connections

    private func acceptControlConnection(_ connection: UVUnixConnection) {
        guard let server = self.controlServer else {
            connection.close()
            return
        }
        let peer = connection.peer
        if let refusal = self.refusal(of: peer, server.configuration) {
            self.logger.warning("refused a control connection", metadata: ["peer": "\(peer)", "reason": "\(refusal)"])
            connection.write(ControlCodec.encodeError(id: nil, ControlError(.permissionDenied, refusal)))
            connection.closeAfterWriting()
            return
        }
        guard server.sessions.count < server.configuration.maxConnections else {
            self.logger.warning("refused a control connection: too many", metadata: ["peer": "\(peer)"])
            let message = "the server has \(server.sessions.count) connections open, its limit (maxConnections); close one"
            connection.write(ControlCodec.encodeError(id: nil, ControlError(.limitReached, message)))
            connection.closeAfterWriting()
            return
        }
        let id = server.nextSession
        server.nextSession += 1
        let session = ControlSession(id: id, connection: connection)
        server.sessions[id] = session
        let timeout = server.configuration.messageTimeout
        do {
            try connection.readLines(maxLineLength: ControlProtocol.maxMessageLength, incompleteLineTimeout: timeout) {
                [unowned self] line in
                self.assumeIsolated { $0.controlLine(id, line) }
            } onEnd: { [unowned self] reason in
                self.assumeIsolated { $0.endSession(id, reason: reason) }
            }
            session.helloDeadline = try self.loop.scheduleTimer(after: timeout) { [unowned self] in
                self.assumeIsolated { supervisor in
                    guard let session = supervisor.controlServer?.sessions[id] else { return }
                    supervisor.logger.warning("closed a control connection that said no hello", metadata: ["peer": "\(peer)"])
                    let error = ControlError(.timedOut, "no hello within \(timeout) of connecting; the connection is closed")
                    session.connection.write(ControlCodec.encodeError(id: nil, error))
                    supervisor.endSession(id, reason: nil, flushing: true)
                }
            }
        } catch {
            server.sessions[id] = nil
            connection.close()
        }
    }

    /// Why a peer may not connect, or nil: its user is the supervisor's, root, or in the allowed group.
    private func refusal(of peer: UVPeerCredentials, _ configuration: ControlSocketConfiguration) -> String? {
        let own = geteuid()
        if peer.uid == own || peer.uid == 0 { return nil }
        if let group = configuration.allowedGroup {
            if peer.gid == group || cws_process_in_group(peer.pid, gid_t(group)) == 1 { return nil }
            return "uid \(peer.uid) is neither the supervisor's user (uid \(own)), root, nor in group \(group)"
        }
        return "uid \(peer.uid) is neither the supervisor's user (uid \(own)) nor root, and no group is allowed"
    }

    /// A connection ended (reason nil: the server closes it), after what was written to it when `flushing`
    /// (an error reply before the close): its waits end, its notify pids are cleared, its linked workers are
    /// terminated.
    private func endSession(_ id: UInt64, reason: UVLineReader.EndReason?, flushing: Bool = false) {
        guard let server = self.controlServer, let session = server.sessions.removeValue(forKey: id) else { return }
        session.helloDeadline?.cancel()
        var flushing = flushing
        switch reason {
        case .lineTooLong(let limit)?:
            let error = ControlError(.messageTooLong, "a message is longer than the limit of \(limit) bytes; the connection is closed")
            session.connection.write(ControlCodec.encodeError(id: nil, error))
            flushing = true
        case .lineIncomplete(let bytes, let after)?:
            self.logger.warning("closed a control connection whose message stayed incomplete", metadata: ["peer": "\(session.connection.peer)"])
            let error = ControlError(
                .timedOut,
                "a message stayed incomplete for \(after) (\(bytes) bytes without a newline); the connection is closed"
            )
            session.connection.write(ControlCodec.encodeError(id: nil, error))
            flushing = true
        default:
            break
        }
        if flushing {
            session.connection.closeAfterWriting()
        } else {
            session.connection.close()
        }
        for task in session.tasks.values { task.cancel() }
        session.tasks.removeAll()
        var actions: [SupervisorAction] = []
        if session.takesNotifications {
            self.machine.peerDisconnected(pid: session.connection.peer.pid, self.readings(), &actions)
        }
        self.perform(actions)
        for id in session.linked.sorted(by: { $0.slot < $1.slot }) {
            guard let handle = session.registered[id], self.machine.worker(id) != nil else { continue }
            self.logger.info(
                "terminating a linked worker: its client disconnected",
                metadata: ["worker.slot": "\(id.slot)", "peer": "\(session.connection.peer)"]
            )
            self.terminate(handle)
        }
    }

    // MARK: - Requests

    private func controlLine(_ sessionID: UInt64, _ line: String) {
        guard let session = self.controlServer?.sessions[sessionID] else { return }
        let request: ControlRequest
        switch ControlCodec.decodeRequest(line.utf8) {
        case .success(let decoded):
            request = decoded
        case .failure(let failure):
            // Not a request of this protocol: answer if possible, then close.
            session.connection.write(ControlCodec.encodeError(id: failure.id, failure.error))
            self.endSession(sessionID, reason: nil, flushing: true)
            return
        }
        guard session.greeted || request.method == .hello else {
            let error = ControlError(.invalidRequest, "the first request must be hello, not \(request.method)")
            session.connection.write(ControlCodec.encodeError(id: request.id, error))
            self.endSession(sessionID, reason: nil, flushing: true)
            return
        }
        do {
            try self.handle(request, session)
        } catch {
            session.connection.write(ControlCodec.encodeError(id: request.id, error))
            if request.method == .hello { self.endSession(sessionID, reason: nil, flushing: true) }
        }
    }

    private func reply(_ session: ControlSession, _ id: Int64, _ result: some Encodable) {
        do {
            session.connection.write(try ControlCodec.encodeResult(id: id, result))
        } catch {
            session.connection.write(ControlCodec.encodeError(id: id, ControlError(.internalError, "encoding the result: \(error)")))
        }
    }

    private func handle(_ request: ControlRequest, _ session: ControlSession) throws(ControlError) {
        let server = self.controlServer!
        switch request.method {
        case .hello:
            guard !session.greeted else { throw ControlError(.invalidRequest, "hello was already said on this connection") }
            let params = try request.params(as: HelloParams.self)
            guard params.protocol == ControlProtocol.version else {
                throw ControlError(
                    .unsupportedVersion,
                    "protocol version \(params.protocol) is not spoken here; this server speaks \(ControlProtocol.version)"
                )
            }
            session.greeted = true
            session.helloDeadline?.cancel()
            session.helloDeadline = nil
            if params.notifications == true {
                session.takesNotifications = true
                self.machine.peerConnected(pid: session.connection.peer.pid)
            }
            let result = HelloResult(
                server: server.configuration.serverName,
                pid: getpid(),
                maxWorkerProcesses: self.configuration.maxWorkerProcesses,
                clientPID: session.connection.peer.pid
            )
            self.reply(session, request.id, result)

        case .register:
            try self.controlRegister(request, session)

        case .status:
            let handle = try self.resolve(try request.params(as: WorkerParams.self).worker, session)
            self.reply(session, request.id, self.workerInfo(handle))

        case .wait:
            try self.controlWait(request, session)

        case .terminate:
            let handle = try self.resolve(try request.params(as: WorkerParams.self).worker, session)
            self.terminate(handle)
            self.reply(session, request.id, self.workerInfo(handle))

        case .resetBudget:
            let handle = try self.resolve(try request.params(as: WorkerParams.self).worker, session)
            self.resetRestartBudget(handle)
            self.reply(session, request.id, self.workerInfo(handle))

        case .list:
            self.reply(session, request.id, self.list())

        case .subscribe:
            guard !session.subscribed else { throw ControlError(.invalidRequest, "this connection is already subscribed") }
            session.subscribed = true
            let events = self.events()
            self.reply(session, request.id, true)
            self.startTask(session) { supervisor in
                for await event in events {
                    supervisor.sendEvent(event, to: session.id)
                }
            }

        case .cancel:
            let id = try request.params(as: CancelParams.self).id
            guard let key = session.requestTasks[id], let task = session.tasks[key], !session.cancelledRequests.contains(id) else {
                self.reply(session, request.id, false)
                return
            }
            session.cancelledRequests.insert(id)
            task.cancel()
            let error = ControlError(.requestCancelled, "request \(id) was cancelled by request \(request.id); it changed nothing")
            session.connection.write(ControlCodec.encodeError(id: id, error))
            self.reply(session, request.id, true)

        case .shutdown:
            let params = try request.params(as: ShutdownParams.self)
            guard let mode = ShutdownMode(name: params.mode) else {
                throw ControlError(.invalidParams, "shutdown: mode '\(params.mode.prefix(40))' is not smart, fast or immediate")
            }
            self.logger.notice("shutdown asked over the control socket", metadata: ["mode": "\(mode)", "peer": "\(session.connection.peer)"])
            self.reply(session, request.id, true)
            self.shutdown(mode)
        }
    }

    private func controlRegister(_ request: ControlRequest, _ session: ControlSession) throws(ControlError) {
        let server = self.controlServer!
        let params = try request.params(as: RegisterParams.self)
        let peer = session.connection.peer
        var worker = params.worker
        if let named = worker.notifyPID {
            throw ControlError(
                .notifyPIDRefused,
                "worker '\(worker.name)' names notifyPID \(named); over the control socket the notify pid is always the client's own (pid \(peer.pid)): set notify instead"
            )
        }
        if params.notify && !session.takesNotifications {
            throw ControlError(
                .notifyPIDRefused,
                "notify for worker '\(worker.name)': this client (pid \(peer.pid)) did not say in hello that it handles SIGUSR1 (notifications: true), and SIGUSR1's default action would end it"
            )
        }
        let slotWait = params.waitForSlot ?? 0
        guard slotWait.isFinite, slotWait >= 0, slotWait <= 86_400 else {
            throw ControlError(.invalidParams, "register: waitForSlot \(slotWait) is outside 0...86400 seconds")
        }
        for id in session.registered.keys where self.machine.worker(id) == nil {
            session.registered[id] = nil
            session.linked.remove(id)
        }
        let live = session.registered.count
        guard live + session.pendingRegistrations < server.configuration.maxRegistrationsPerClient else {
            throw ControlError(
                .limitReached,
                "this client has \(live + session.pendingRegistrations) registrations, its limit (maxRegistrationsPerClient \(server.configuration.maxRegistrationsPerClient)); terminate one first"
            )
        }
        worker.notifyPID = params.notify ? peer.pid : nil
        let registration = worker
        let linked = params.linked
        guard slotWait > 0 else {
            do {
                self.registered(try self.register(registration), linked: linked, session, request.id)
            } catch {
                throw ControlError(.init(supervisor: error.code), error.message)
            }
            return
        }
        session.pendingRegistrations += 1
        self.startTask(session, answering: request.id) { supervisor in
            defer { session.pendingRegistrations -= 1 }
            do {
                let handle = try await supervisor.register(registration, waitingForSlotUpTo: .seconds(slotWait))
                guard !session.cancelledRequests.contains(request.id) else {
                    // Cancelled while a freed slot was being handed over: the registration is undone.
                    supervisor.terminate(handle)
                    return
                }
                supervisor.registered(handle, linked: linked, session, request.id)
            } catch let error as SupervisorError {
                let failure = ControlError(.init(supervisor: error.code), error.message)
                session.connection.write(ControlCodec.encodeError(id: request.id, failure))
            } catch {
                // Cancelled: the connection ended, nobody to answer.
            }
        }
    }

    private func registered(_ handle: BackgroundWorkerHandle, linked: Bool, _ session: ControlSession, _ requestID: Int64) {
        self.keep(handle, linked: linked, in: session)
        self.logger.info(
            "registered over the control socket",
            metadata: [
                "worker.name": "\(self.ownState(of: handle).registration.name)", "worker.slot": "\(handle.slot)",
                "peer": "\(session.connection.peer)",
            ]
        )
        self.reply(session, requestID, self.workerInfo(handle))
    }

    private func controlWait(_ request: ControlRequest, _ session: ControlSession) throws(ControlError) {
        let params = try request.params(as: WaitParams.self)
        guard params.timeout.isFinite, params.timeout > 0, params.timeout <= 86_400 else {
            throw ControlError(.invalidParams, "wait: timeout \(params.timeout) is outside (0, 86400] seconds")
        }
        let handle = try self.resolve(params.worker, session)
        // Answered now when the rules already have the answer (the common case of a worker that started
        // during its registration): no task, no timer.
        let worker = self.ownState(of: handle)
        let stoppedBy = self.machine.stoppedBy
        var immediate: Result<WaitResult, SupervisorError>?
        switch params.until {
        case .started:
            immediate = worker.startupAnswer(stoppedBy: stoppedBy).map { $0.map { WaitResult(pid: $0, status: nil, worker: self.workerInfo(handle)) } }
        case .ready:
            immediate = worker.readyAnswer(stoppedBy: stoppedBy).map { $0.map { WaitResult(pid: $0, status: nil, worker: self.workerInfo(handle)) } }
        case .stopped:
            immediate = worker.shutdownAnswer(stoppedBy: stoppedBy).map { .success(WaitResult(pid: nil, status: $0.wireName, worker: self.workerInfo(handle))) }
        }
        switch immediate {
        case .success(let result)?:
            self.reply(session, request.id, result)
            return
        case .failure(let error)?:
            throw ControlError(.init(supervisor: error.code), error.message, worker: self.workerInfo(handle))
        case nil:
            break
        }
        let timedOut = TimeoutFlag()
        let key = self.startTask(session, answering: request.id) { supervisor in
            guard !session.cancelledRequests.contains(request.id) else { return }
            do {
                var pid: Int32?
                var status: WorkerStatus?
                switch params.until {
                case .started: pid = try await handle.waitForStartup()
                case .ready: pid = try await handle.waitForReady()
                case .stopped: status = try await handle.waitForShutdown()
                }
                timedOut.timer?.cancel()
                let result = WaitResult(pid: pid, status: status?.wireName, worker: supervisor.workerInfo(handle))
                supervisor.reply(session, request.id, result)
            } catch let error as SupervisorError {
                timedOut.timer?.cancel()
                guard !session.cancelledRequests.contains(request.id) else { return }
                let failure = ControlError(.init(supervisor: error.code), error.message, worker: supervisor.workerInfo(handle))
                session.connection.write(ControlCodec.encodeError(id: request.id, failure))
            } catch {
                guard timedOut.fired else { return }  // cancelled (and answered), or the connection ended
                let message = "worker \(handle.slot)/\(handle.generation) was not \(params.until) within \(params.timeout) s; it is \(supervisor.detail(of: handle))"
                session.connection.write(ControlCodec.encodeError(id: request.id, ControlError(.timedOut, message)))
            }
        }
        timedOut.timer = try? self.loop.scheduleTimer(after: .seconds(params.timeout)) { [unowned self] in
            self.assumeIsolated { supervisor in
                timedOut.fired = true
                supervisor.controlServer?.sessions[session.id]?.tasks[key]?.cancel()
            }
        }
    }

    /// Runs `body` on the actor for a session (it starts after this returns); the task is cancelled when the
    /// session ends. Returns its key.
    @discardableResult
    private func startTask(
        _ session: ControlSession,
        answering requestID: Int64? = nil,
        _ body: @escaping @Sendable (isolated WorkerSupervisor) async -> Void
    ) -> UInt64 {
        let key = session.nextTask
        session.nextTask += 1
        if let requestID { session.requestTasks[requestID] = key }
        session.tasks[key] = Task {
            await body(self)
            session.tasks[key] = nil
            if let requestID {
                session.requestTasks[requestID] = nil
                session.cancelledRequests.remove(requestID)
            }
        }
        return key
    }

    private func keep(_ handle: BackgroundWorkerHandle, linked: Bool, in session: ControlSession) {
        session.registered[handle.id] = handle
        if linked { session.linked.insert(handle.id) }
    }

    /// The handle a reference names: a live registration, or one that ended while the socket was served.
    private func resolve(_ reference: WorkerReference, _ session: ControlSession) throws(ControlError) -> BackgroundWorkerHandle {
        if let slot = reference.slot {
            guard let generation = reference.generation else {
                throw ControlError(.invalidParams, "worker: slot \(slot) needs its generation too")
            }
            let id = WorkerID(slot: slot, generation: generation)
            if slot >= 0, slot < self.resources.count, let resources = self.resources(id) { return resources.handle }
            if let handle = self.controlServer?.finished[id] { return handle }
            throw ControlError(
                .unknownWorker,
                "no worker in slot \(slot) with generation \(generation): it was unregistered, or never was (list shows what is registered)"
            )
        }
        guard let name = reference.name else {
            throw ControlError(.invalidParams, "worker: give slot and generation, or name")
        }
        if let worker = self.machine.workers.first(where: { $0.registration.name == name }), let resources = self.resources(worker.id) {
            return resources.handle
        }
        // Gone: the latest registration of that name that ended while the socket was served.
        if let server = self.controlServer,
            let id = server.finishedOrder.last(where: { server.finished[$0].map { self.ownState(of: $0).registration.name == name } ?? false }),
            let handle = server.finished[id]
        {
            return handle
        }
        throw ControlError(.unknownWorker, "no worker is named '\(name.prefix(100))' (list shows what is registered)")
    }

    /// Every registered worker, in slot order, as the control socket's `list` answers (the same values a
    /// ``SupervisorClient/list()`` of another process gets).
    public func list() -> [WorkerInfo] {
        self.machine.workers.compactMap { worker in self.resources(worker.id).map { self.workerInfo($0.handle) } }
    }

    /// What the server says of a worker.
    func workerInfo(_ handle: BackgroundWorkerHandle) -> WorkerInfo {
        // Plain statements: an `if case` expression over the state here crashed the 6.3.1 optimiser
        // (CopyPropagation, "Found outside of lifetime use") in release builds.
        let worker = self.ownState(of: handle)
        let status = worker.status(supervisorStopped: self.machine.stoppedBy != nil)
        let detail = worker.detail
        var pid: Int32?
        if case .started(let started) = status { pid = started }
        var uptime: Double?
        if let startedAt = worker.startedAt { uptime = (self.clock.now() - startedAt).seconds }
        var lastExit: ExitInfo?
        if let exit = worker.lastExit { lastExit = ExitInfo(exit) }
        return WorkerInfo(
            slot: handle.slot,
            generation: handle.generation,
            name: worker.registration.name,
            pid: pid,
            status: status.wireName,
            state: WorkerStateInfo(detail),
            detail: detail.description,
            restarts: max(0, worker.starts - 1),
            uptime: uptime,
            lastExit: lastExit,
            lastReportedError: worker.lastReportedError,
            notifyPID: worker.notifyPID
        )
    }

    private func sendEvent(_ event: WorkerEvent, to sessionID: UInt64) {
        guard let server = self.controlServer, let session = server.sessions[sessionID] else { return }
        let control = ControlEvent(
            worker: WorkerReference(slot: event.handle.slot, generation: event.handle.generation),
            name: event.name,
            kind: event.kind.wireName,
            detail: event.kind.wireDetail
        )
        guard let line = try? ControlCodec.encodeEvent(control) else { return }
        session.connection.write(line)
        if session.connection.pendingWriteBytes > server.configuration.maxPendingEventBytes {
            self.logger.warning(
                "closing a control connection that does not read its events",
                metadata: ["peer": "\(session.connection.peer)", "pending": "\(session.connection.pendingWriteBytes)"]
            )
            self.endSession(sessionID, reason: nil)
        }
    }
}

/// A wait's timeout: its timer, and whether it fired. Confined to the supervisor's loop thread.
private final class TimeoutFlag: @unchecked Sendable {
    // @unchecked Sendable: read and written only on the supervisor's loop thread.
    var timer: UVTimer?
    var fired = false
}

extension WorkerEvent.Kind {
    /// The event's name on the wire.
    var wireName: String {
        switch self {
        case .registered: "registered"
        case .started: "started"
        case .ready: "ready"
        case .exited: "exited"
        case .spawnFailed: "spawnFailed"
        case .restartScheduled: "restartScheduled"
        case .gaveUp: "gaveUp"
        case .unregistered: "unregistered"
        case .crashReset: "crashReset"
        case .reportedError: "reportedError"
        }
    }

    /// Its details, for people.
    var wireDetail: String? {
        switch self {
        case .registered, .gaveUp, .crashReset: nil
        case .started(let pid), .ready(let pid): "pid \(pid)"
        case .exited(let pid, let status): "pid \(pid) \(status)"
        case .spawnFailed(let error): "\(error)"
        case .restartScheduled(let after): "after \(after)"
        case .unregistered(let reason): "\(reason)"
        case .reportedError(let message): message
        }
    }
}

