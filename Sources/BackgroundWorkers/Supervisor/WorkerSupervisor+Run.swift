import Logging
import Metrics
import BackgroundWorkerContract
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
    public func run() async throws {
        guard try self.beginRunning() else {
            // Shut down before it ran: nothing to run.
            await self.waitUntilStopped()
            try? await self.loop.shutdown()
            return
        }
        let loop = self.loop
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await self.waitUntilStopped()
            } onCancel: {
                loop.execute { self.assumeIsolated { $0.shutdown(.fast) } }
            }
        } onGracefulShutdown: {
            loop.execute { self.assumeIsolated { $0.shutdown(.fast) } }
        }
        try? await loop.shutdown()
        if let error = self.startupError {
            throw SupervisorError(.startupFailed, "the startup step failed: \(error)")
        }
    }

    /// Starts running; false when the supervisor was shut down before it ever ran.
    @discardableResult
    func beginRunning() throws(SupervisorError) -> Bool {
        switch self.runState {
        case .idle:
            break
        case .stopping, .stopped:
            if self.phase == nil { return false }
            throw SupervisorError(.alreadyRunning, "run() was called on a supervisor that already ran")
        case .running:
            throw SupervisorError(.alreadyRunning, "run() was called on a supervisor that already ran")
        }
        self.runState = .running
        self.reachPhase(.supervisorStart)
        if let step = self.configuration.startupStep {
            let progress = StartupProgress(supervisor: self)
            self.startupTask = Task {
                do {
                    try await step(progress)
                    self.reachPhase(.recoveryFinished)
                } catch {
                    self.startupStepFailed(error)
                }
            }
        } else {
            self.reachPhase(.recoveryFinished)
        }
        return true
    }

    private func startupStepFailed(_ error: any Error) {
        guard case .running = self.runState else { return }  // a shutdown cancelled it
        self.logger.error("startup step failed: \(error); shutting down")
        self.startupError = error
        self.shutdown(.fast)
    }

    /// Moves the start phase forward and starts the workers it admits, in registration order (PG-7, PG-8).
    func reachPhase(_ phase: BackgroundWorker.StartTime) {
        guard case .running = self.runState else { return }
        if let current = self.phase, current >= phase { return }
        self.phase = phase
        self.logger.debug("start phase reached: \(phase)")
        for worker in self.slots.all.sorted(by: { $0.order < $1.order }) where self.canStart(worker) {
            self.start(worker)
        }
    }

    func waitUntilStopped() async {
        if case .stopped = self.runState { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.runWaiters.append(continuation)
        }
    }

    var isStopping: Bool {
        switch self.runState {
        case .stopping, .stopped: true
        case .idle, .running: false
        }
    }

    // MARK: - Shutdown

    /// Starts shutting down (PG-23). A stronger mode requested later takes over (smart → fast → immediate).
    ///
    /// No new registrations are taken from now on, and nothing is restarted; workers that are not running are
    /// unregistered at once. ``run()`` returns once every worker was reaped.
    public func shutdown(_ mode: ShutdownMode = .fast) {
        switch self.runState {
        case .idle:
            self.runState = .stopping(mode)
        case .running:
            self.runState = .stopping(mode)
        case .stopping(let current):
            guard mode.isStronger(than: current) else { return }
            self.runState = .stopping(mode)
        case .stopped:
            return
        }
        self.logger.info("shutting down (\(mode))")
        self.startupTask?.cancel()
        for worker in self.slots.all {
            guard let process = worker.process else {
                if !worker.waitingForCrashReset || self.crashReset == nil { self.unregister(worker, .shutdown) }
                continue
            }
            if mode == .fast {
                if !worker.stopping { self.stop(worker, process, signal: .terminate, grace: worker.registration.stopGracePeriod) }
            } else if mode == .immediate {
                self.stop(worker, process, signal: .quit, grace: self.configuration.quitGracePeriod)
            }
        }
        self.finishStoppingIfIdle()
    }

    /// Once shutting down and no worker process is left: stopped.
    func finishStoppingIfIdle() {
        guard case .stopping = self.runState else { return }
        let all = self.slots.all
        guard !all.contains(where: { $0.process != nil }) else { return }
        for worker in all { self.unregister(worker, .shutdown) }
        self.crashReset = nil
        self.runState = .stopped
        self.logger.info("stopped")
        self.alivePipe.close()
        self.sharedMemory?.close()
        self.sharedMemory = nil
        for continuation in self.eventSubscribers.values { continuation.finish() }
        self.eventSubscribers.removeAll()
        let waiters = self.runWaiters
        self.runWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
        if self.loopOwnedByRun == false {
            // Shut down without ever running: nobody else will stop the loop. Detached: a task that inherited
            // this actor's isolation would come back to its executor after the loop (and maybe the actor) is gone.
            let loop = self.loop
            Task.detached { try? await loop.shutdown() }
        }
    }

    var loopOwnedByRun: Bool { self.phase != nil }
}

/// Runs `body` with a running supervisor and guarantees that, on every way out (return, throw,
/// cancellation), every worker is stopped (fast shutdown) and reaped and the supervisor's loop is closed.
///
/// ```swift
/// let pid = try await withWorkerSupervisor { supervisor in
///     let handle = try await supervisor.register(BackgroundWorker(name: "w", entryPoint: .executable("/bin/sleep", arguments: ["5"])))
///     return try await handle.waitForStartup()
/// }
/// ```
public func withWorkerSupervisor<Result>(
    configuration: WorkerSupervisor.Configuration = .init(),
    isolation: isolated (any Actor)? = #isolation,
    _ body: (WorkerSupervisor) async throws -> Result
) async throws -> Result {
    let supervisor = try WorkerSupervisor(configuration: configuration)
    try await supervisor.beginRunning()
    let runner = Task {
        await supervisor.waitUntilStopped()
        try? await supervisor.loop.shutdown()
    }
    let result: Swift.Result<Result, any Error>
    do {
        result = .success(try await body(supervisor))
    } catch {
        result = .failure(error)
    }
    await supervisor.shutdown(.fast)
    await runner.value
    if let error = await supervisor.startupError {
        throw SupervisorError(.startupFailed, "the startup step failed: \(error)")
    }
    return try result.get()
}
