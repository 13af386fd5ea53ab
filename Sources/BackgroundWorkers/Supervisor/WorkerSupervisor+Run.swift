import BackgroundWorkerContract
import CWorkerSupport
import Logging
import ServiceLifecycle
import UVConcurrency

extension WorkerSupervisor: Service {
    /// Runs the supervisor until it has shut down and every worker has been reaped.
    ///
    /// Starts the static workers whose phase is reached, runs the startup step if configured, then serves
    /// registrations. A ServiceLifecycle graceful shutdown, or cancelling the task, starts a fast shutdown
    /// (SIGTERM, then SIGKILL after each worker's grace period). When `run()` returns, the event loop is stopped
    /// too; handles then report `.supervisorDied`.
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Code/alreadyRunning`` when called twice, or
    ///   ``SupervisorError/Code/startupFailed`` when the startup step threw (the workers were stopped first).
    public nonisolated func run() async throws {
        await self.startForkServersFirst()
        guard try await self.begin() else {
            // Shut down before it ran: nothing to run, but the loop still stops here.
            try? await self.loop.shutdown()
            return
        }
        try await self.serve()
    }

    /// Starts running: static workers of the first phase start. False when the supervisor was shut down
    /// before it ever ran.
    @discardableResult
    func begin() throws(SupervisorError) -> Bool {
        switch self.machine.mode {
        case .idle:
            if self.guardian == nil { self.startGuardian() }
            if self.configuration.forkServer, self.forkServer == nil { self.startForkServer() }
            var actions: [SupervisorAction] = []
            self.machine.run(self.readings(), &actions)
            self.isServing = true
            self.perform(actions)
            if self.configuration.startupStep == nil { self.reachPhase(.recoveryFinished) }
            return true
        case .stopping where self.machine.phase == nil, .stopped where self.machine.phase == nil:
            return false
        case .running, .stopping, .stopped:
            throw SupervisorError(.alreadyRunning, "run() was called on a supervisor that already ran")
        }
    }

    /// What a child of the run group reports.
    private enum ChildResult: Sendable {
        /// The startup step returned, or threw.
        case startupStep(Result<Void, any Error>)
        /// Every worker was reaped.
        case stopped
    }

    /// Serves until stopped, then stops the loop. Not isolated: once the loop has stopped, nothing here
    /// returns to the actor's executor.
    nonisolated func serve() async throws {
        let startupError = await self.serveUntilStopped()
        try? await self.loop.shutdown()
        if let startupError {
            throw SupervisorError(.startupFailed, "the startup step failed: \(startupError)", underlying: startupError)
        }
    }

    /// One task group in the style of ServiceLifecycle's `ServiceGroup`: the startup step and the wait for the
    /// end are its children; a failed step, a graceful shutdown or cancellation start a fast shutdown; the
    /// group ends once every worker was reaped. Returns the startup step's error, if it failed.
    private func serveUntilStopped() async -> (any Error)? {
        let loop = self.loop
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withTaskGroup(of: ChildResult.self) { group in
                    if let step = self.configuration.startupStep {
                        let progress = StartupProgress(supervisor: self)
                        group.addTask {
                            do {
                                try await step(progress)
                                await self.reachPhase(.recoveryFinished)
                                return .startupStep(.success(()))
                            } catch {
                                return .startupStep(.failure(error))
                            }
                        }
                    }
                    group.addTask {
                        await self.waitUntilStopped()
                        return .stopped
                    }
                    while let result = await group.next() {
                        switch result {
                        case .startupStep(.success):
                            continue
                        case .startupStep(.failure(let error)):
                            // A step cancelled by a shutdown is no failure of its own.
                            guard self.machine.mode == .running else { continue }
                            self.logger.error("startup step failed: \(error); shutting down")
                            self.startupError = error
                            self.shutdown(.fast)
                        case .stopped:
                            group.cancelAll()  // a startup step still running has nothing left to start
                        }
                    }
                }
            } onCancel: {
                loop.execute { self.assumeIsolated { $0.shutdown(.fast) } }
            }
        } onGracefulShutdown: {
            loop.execute { self.assumeIsolated { $0.shutdown(.fast) } }
        }
        return self.startupError
    }

    /// Moves the start phase forward and starts the workers it admits, in registration order (PG-7, PG-8).
    func reachPhase(_ phase: BackgroundWorker.StartTime) {
        var actions: [SupervisorAction] = []
        self.machine.reachPhase(phase, self.readings(), &actions)
        if self.machine.phase == phase { self.logger.debug("start phase reached: \(phase)") }
        self.perform(actions)
    }

    /// Returns once the supervisor has stopped (every worker reaped).
    func waitUntilStopped() async {
        _ = try? await self.loop.wait { token, continuation in
            self.assumeIsolated { supervisor in
                if supervisor.machine.stoppedBy != nil {
                    continuation.resume()
                } else {
                    supervisor.stopWaiters.add(token, continuation)
                }
            }
        } cancel: { _ in
            // Not cancellable: stopping is what ends the wait, and cancelling `run()` starts it.
        }
    }

    // MARK: - Shutdown

    /// Starts shutting down (PG-23). A stronger mode requested later takes over (smart → fast → immediate).
    ///
    /// No new registrations are taken from now on, and nothing is restarted; workers that are not running are
    /// unregistered at once. ``run()`` returns once every worker was reaped.
    public func shutdown(_ mode: ShutdownMode = .fast) {
        guard !self.machine.mode.isStopping || self.machine.stoppedBy == nil else { return }
        if case .stopping(let current) = self.machine.mode, !mode.isStronger(than: current) { return }
        self.logger.info("shutting down (\(mode))")
        var actions: [SupervisorAction] = []
        self.machine.shutdown(mode, self.readings(), &actions)
        self.perform(actions)
        self.wakeAllSlotWaiters()
    }

    /// Before the first workers start (``Configuration/forkServer``): starts the guardian and the fork servers, and
    /// waits for their hello (a few milliseconds; at most their hello timeout), so that workers registered before
    /// `run()` are forked too, and so is the first one registered after. A shutdown meanwhile ends the wait.
    func startForkServersFirst() async {
        guard self.configuration.forkServer, self.machine.mode == .idle, self.forkServer == nil else { return }
        if self.guardian == nil { self.startGuardian() }
        self.startForkServer()
        _ = await self.waitForForkServer()
    }

    /// Starts the guardian that kills every worker's group if this process dies without a shutdown. A supervisor
    /// that cannot start one still runs, and says so.
    func startGuardian() {
        do {
            // Every worker's group, and the fork servers' two.
            let capacity = self.configuration.maxWorkerProcesses + (self.configuration.forkServer ? 2 : 0)
            let guardian = try WorkerGuardian(loop: self.loop, capacity: capacity) { status in
                self.assumeIsolated { $0.guardianExited(status) }
            }
            for resources in self.resources.compactMap({ $0 }) {
                if let process = resources.process { guardian.hold(process.pid) }
            }
            for server in [self.forkServer, self.libraryForkServer] {
                if let pid = server?.runningPID { guardian.hold(pid) }
            }
            self.guardian = guardian
        } catch {
            self.guardian = nil
            self.logger.error("cannot start the worker guardian: \(error); workers that do not watch descriptor 3 may outlive this process if it dies without a shutdown")
        }
    }

    /// The guardian ended while the supervisor runs (someone killed it): start another one.
    private func guardianExited(_ status: UVExitStatus) {
        guard self.machine.stoppedBy == nil, !self.closed else { return }
        self.logger.error("the worker guardian ended (\(status)); starting a new one")
        self.startGuardian()
    }

    /// Every worker is reaped and unregistered: close what workers inherited, end the event sequences, wake
    /// `run()`.
    func finishStopping(_ mode: ShutdownMode) {
        self.logger.info("stopped after a \(mode) shutdown")
        self.closed = true
        self.guardian?.close()
        self.guardian = nil
        self.forkServer?.stop()
        self.libraryForkServer?.stop()
        self.resumeForkServerWaiters()
        self.alivePipe.close()
        self.sharedMemory?.close()
        self.sharedMemory = nil
        _ = cws_close(self.databasePassword)
        self.clockDeadlines.sleeper?.cancel()
        for continuation in self.eventSubscribers.values { continuation.finish() }
        self.eventSubscribers.removeAll()
        self.stopWaiters.resumeAll(with: .success(()))
        if !self.isServing {
            // Shut down without ever running: nobody else will stop the loop. Detached: a task that inherited
            // this actor's isolation would come back to its executor after the loop (and maybe the actor) is gone.
            let loop = self.loop
            Task.detached { try? await loop.shutdown() }
        }
    }
}

/// Runs `body` with a running supervisor and guarantees that, on every way out (return, throw,
/// cancellation), every worker is stopped (fast shutdown) and reaped and the supervisor's loop is closed.
///
/// The supervisor's ``WorkerSupervisor/run()`` runs beside `body` in a task group; `body`'s registrations are
/// dynamic.
///
/// ```swift
/// let pid = try await withWorkerSupervisor { supervisor in
///     let handle = try await supervisor.register(BackgroundWorker(name: "w", entryPoint: .executable("/bin/sleep", arguments: ["5"])))
///     return try await handle.waitForStartup()
/// }
/// ```
/// - Throws: What `body` throws, or ``SupervisorError`` with ``SupervisorError/Code/startupFailed`` when the
///   configuration's startup step failed.
public func withWorkerSupervisor<Result>(
    configuration: WorkerSupervisor.Configuration = .init(),
    isolation: isolated (any Actor)? = #isolation,
    _ body: (WorkerSupervisor) async throws -> Result
) async throws -> Result {
    let supervisor = try WorkerSupervisor(configuration: configuration)
    await supervisor.startForkServersFirst()
    try await supervisor.begin()
    return try await withThrowingTaskGroup(of: Void.self, returning: Result.self, isolation: isolation) { group in
        group.addTask { try await supervisor.serve() }
        let result: Swift.Result<Result, any Error>
        do {
            result = .success(try await body(supervisor))
        } catch {
            result = .failure(error)
        }
        await supervisor.shutdown(.fast)
        try await group.waitForAll()
        return try result.get()
    }
}
