import BackgroundWorkerContract
import Logging
import Metrics
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension WorkerSupervisor {
    // MARK: - Starting

    /// Whether a worker may start now: the supervisor runs, its phase is reached, no reset holds it.
    func canStart(_ worker: ManagedWorker) -> Bool {
        guard case .running = self.runState, let phase = self.phase else { return false }
        guard worker.registration.startTime <= phase else { return false }
        if self.crashReset != nil && worker.usesSharedMemory { return false }
        return worker.process == nil && !worker.gaveUp && !worker.terminateRequested
    }

    /// Spawns the worker's process, in a session and process group of its own.
    func start(_ worker: ManagedWorker) {
        worker.pendingRestart = nil
        worker.waitingForCrashReset = false
        let entry = worker.registration.entryPoint
        let executable: (path: String, arguments: [String], environment: [String: String], workingDirectory: String?)
        if let library = entry.library {
            // bgworker-host loads the library and calls the function inside the worker runtime.
            let directory = self.configuration.libraryDirectory ?? Self.executableDirectory
            let path = library.path.contains("/") ? library.path : directory + "/" + library.path
            let host = self.configuration.hostExecutable ?? Self.executableDirectory + "/bgworker-host"
            executable = (host, [path, library.function], [:], nil)
        } else if let name = entry.builtinName {
            // Re-execute this very binary; its main hands over to the built-in (BuiltinWorkers.runIfRequested).
            executable = ("/proc/self/exe", [WorkerProcessContract.builtinMarker, name], [:], nil)
        } else if let direct = entry.executable {
            executable = direct
        } else {
            return
        }
        let identity = WorkerProcessContract.Identity(
            worker: worker.registration,
            slot: worker.slot,
            generation: worker.generation,
            supervisorPID: self.supervisorPID,
            reportsReadiness: worker.registration.reportsReadiness,
            // Library and built-in entry points run in the worker runtime, which reports why it fails.
            reportsStatus: entry.library != nil || entry.builtinName != nil,
            sharedMemorySize: worker.usesSharedMemory ? self.sharedMemory?.size : nil
        )
        var environment = self.baseEnvironment
        environment.merge(executable.environment) { _, new in new }
        environment.merge(identity.environment) { _, new in new }
        var options = UVSpawnOptions(
            executable: executable.path,
            arguments: executable.arguments,
            environment: environment,
            workingDirectory: executable.workingDirectory,
            detached: true
        )
        options.argumentZero = worker.registration.name
        options.descriptors[WorkerProcessContract.aliveDescriptor] = self.alivePipe.readEnd
        if worker.usesSharedMemory, let segment = self.sharedMemory {
            options.descriptors[WorkerProcessContract.sharedMemoryDescriptor] = segment.descriptor
        }

        var readiness: UVPipePair?
        if identity.statusDescriptor != nil {
            do {
                let pipe = try UVPipePair()
                readiness = pipe
                options.descriptors[WorkerProcessContract.readinessDescriptor] = pipe.writeEnd
            } catch {
                self.spawnFailed(worker, error)
                return
            }
        }

        let process: UVChildProcess
        do {
            let handle = self.handle(worker)
            process = try self.loop.spawn(options) { status in
                // libuv's exit callback runs on the loop thread: enter the actor synchronously.
                self.assumeIsolated { supervisor in
                    if let worker = supervisor.worker(handle) { supervisor.exited(worker, status) }
                }
            }
        } catch {
            readiness?.close()
            self.spawnFailed(worker, error)
            return
        }
        worker.process = process
        worker.hasEverStarted = true
        worker.ready = false
        worker.stopping = false
        worker.startedAt = self.clock.now()
        if let readiness {
            readiness.closeWriteEnd()
            self.watchReadiness(worker, descriptor: readiness.readEnd)
        }
        self.metrics.starts.increment()
        self.runningCount += 1
        self.metrics.running.record(self.runningCount)
        self.logger.info("started", metadata: worker.metadata)
        self.notify(worker.notifyPID)
        self.emit(worker, .started(pid: process.pid))
        worker.startupWaiters.resumeAll(with: .success(process.pid))
    }

    private func watchReadiness(_ worker: ManagedWorker, descriptor: Int32) {
        do {
            worker.readinessReader = try self.loop.readLines(
                from: descriptor,
                maxLineLength: WorkerProcessContract.maxReadinessLineLength,
                onLine: { [handle = self.handle(worker)] line in
                    self.assumeIsolated { supervisor in
                        guard let worker = supervisor.worker(handle) else { return }
                        if line == WorkerProcessContract.readyLine {
                            // Only a worker registered with reportsReadiness is ever "ready".
                            if worker.registration.reportsReadiness { supervisor.becameReady(worker) }
                        } else if line.hasPrefix(WorkerProcessContract.errorLinePrefix) {
                            let text = String(line.dropFirst(WorkerProcessContract.errorLinePrefix.count).prefix(1000))
                            worker.lastReportedError = text
                            supervisor.logger.error("worker reports: \(text)", metadata: worker.metadata)
                            supervisor.emit(worker, .reportedError(text))
                        }
                    }
                },
                onEnd: { _ in }
            )
        } catch {
            _ = close(descriptor)
            self.logger.warning("cannot read readiness: \(error)", metadata: worker.metadata)
        }
    }

    private func becameReady(_ worker: ManagedWorker) {
        guard let process = worker.process, !worker.ready else { return }
        worker.ready = true
        self.logger.debug("ready", metadata: worker.metadata)
        self.emit(worker, .ready(pid: process.pid))
        worker.readyWaiters.resumeAll(with: .success(process.pid))
    }

    /// A spawn failed: transient errors retry after the interval (PostgreSQL's failed fork), permanent ones stop
    /// the worker with the error in its status.
    private func spawnFailed(_ worker: ManagedWorker, _ error: UVError) {
        self.logger.error("spawn failed: \(error)", metadata: worker.metadata)
        self.emit(worker, .spawnFailed(error))
        let transient = [EAGAIN, ENOMEM, EMFILE, ENFILE].contains(error.errno)
        guard transient, let interval = worker.registration.restartInterval.duration else {
            self.unregister(worker, .spawnFailed(error))
            return
        }
        self.scheduleRestart(worker, after: interval, lastExit: nil, spawnError: error)
    }

    /// The directory of this process's executable (`/proc/self/exe`), read once.
    static let executableDirectory: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return "." }
        let path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }()

    // MARK: - Exits

    /// libuv reaped the worker's process.
    func exited(_ worker: ManagedWorker, _ status: UVExitStatus) {
        guard let process = worker.process else { return }
        worker.process = nil
        worker.lastExit = status
        worker.ready = false
        worker.killTask?.cancel()
        worker.killTask = nil
        // What the worker wrote before exiting (an ERROR= line, say) is read now, not lost to the race with the
        // exit notification.
        worker.readinessReader?.drainAndClose()
        worker.readinessReader = nil
        self.runningCount -= 1
        self.metrics.running.record(self.runningCount)
        self.metrics.exit(cause: RestartRules.isCrash(status) ? "crash" : status == .exited(0) ? "done" : "restart")
        var metadata = worker.metadata
        metadata["worker.pid"] = "\(process.pid)"
        self.logger.info("exited: \(status)", metadata: metadata)
        self.emit(worker, .exited(pid: process.pid, status: status))
        // A process that goes away is no longer notifiable: clear notify pids pointing at it (PG-19).
        for other in self.slots.all where other.notifyPID == process.pid {
            other.notifyPID = nil
        }

        let now = self.clock.now()
        let uptime = now - worker.startedAt
        let decision: ExitDecision
        if worker.waitingForCrashReset || self.crashReset?.remaining.contains(ObjectIdentifier(worker)) == true {
            decision = .crashReset
        } else {
            if let budget = worker.registration.restartBudget {
                worker.restartTimes.removeAll { now - $0 > budget.window }
            }
            if let backoff = worker.registration.restartBackoff, uptime >= backoff.resetAfter {
                worker.consecutiveRestarts = 0
            }
            let context = ExitContext(
                worker: worker.registration,
                terminateRequested: worker.terminateRequested,
                shuttingDown: self.isStopping,
                recentRestarts: worker.restartTimes.count,
                consecutiveRestarts: worker.consecutiveRestarts,
                uptime: uptime
            )
            decision = RestartRules.decide(status, context, random: self.configuration.random)
        }

        switch decision {
        case .unregister(let reason):
            self.unregister(worker, reason)
        case .restart(let after):
            self.scheduleRestart(worker, after: after, lastExit: status, spawnError: nil)
            self.notifyExit(worker)
        case .giveUp:
            worker.gaveUp = true
            self.logger.error("gave up: restart budget spent", metadata: worker.metadata)
            self.emit(worker, .gaveUp)
            self.notifyExit(worker)
        case .crashReset:
            self.crashed(worker)
        }
        self.finishStoppingIfIdle()
    }

    /// Wakes the waiters and the notify pid after an exit that keeps the worker registered. Readiness waiters
    /// keep waiting for the restarted process, unless the worker gave up.
    private func notifyExit(_ worker: ManagedWorker) {
        self.notify(worker.notifyPID)
        worker.shutdownWaiters.resumeAll(with: .success(.stopped))
        if worker.gaveUp {
            worker.readyWaiters.resumeAll(with: .failure(self.stoppedError(worker)))
        }
    }

    func stoppedError(_ worker: ManagedWorker) -> SupervisorError {
        SupervisorError(
            .workerStopped,
            "worker '\(worker.registration.name)' \(worker.detail)",
            detail: worker.detail
        )
    }

    /// Frees the slot first, then tells everyone (PG-15: a waiter that registers again at once finds it free).
    func unregister(_ worker: ManagedWorker, _ reason: UnregisterReason) {
        worker.restartTask?.cancel()
        worker.restartTask = nil
        worker.killTask?.cancel()
        worker.killTask = nil
        worker.pendingRestart = nil
        let detail = WorkerStatusDetail.unregistered(reason, lastExit: worker.lastExit)
        self.slots.remove(slot: worker.slot, outcome: detail)
        self.reportedErrors[worker.slot] = worker.lastReportedError.map { (worker.generation, $0) }
        self.metrics.slotsInUse.record(self.slots.used)
        self.logger.info("unregistered: \(reason)", metadata: worker.metadata)
        self.emit(worker, .unregistered(reason))
        self.notify(worker.notifyPID)
        let error = SupervisorError(.workerStopped, "worker '\(worker.registration.name)' \(detail)", detail: detail)
        worker.startupWaiters.resumeAll(with: .failure(error))
        worker.shutdownWaiters.resumeAll(with: .success(.stopped))
        worker.readyWaiters.resumeAll(with: .failure(error))
    }

    // MARK: - Restarts

    func scheduleRestart(_ worker: ManagedWorker, after delay: Duration, lastExit: UVExitStatus?, spawnError: UVError?) {
        worker.pendingRestart = (delay, lastExit, spawnError)
        self.emit(worker, .restartScheduled(after: delay))
        if delay <= .zero {
            self.restartDue(worker)
            return
        }
        let clock = self.clock
        let handle = self.handle(worker)
        // Isolated to this actor: after the sleep it resumes on the loop.
        worker.restartTask = Task {
            do {
                try await clock.sleep(delay)
            } catch {
                return  // cancelled: unregistered, terminated or shut down meanwhile
            }
            if let worker = self.worker(handle) { self.restartDue(worker) }
        }
    }

    private func restartDue(_ worker: ManagedWorker) {
        worker.restartTask = nil
        guard self.worker(self.handle(worker)) === worker, worker.pendingRestart != nil else { return }
        guard self.canStart(worker) else { return }
        worker.restartTimes.append(self.clock.now())
        worker.consecutiveRestarts += 1
        self.metrics.restarts.increment()
        self.start(worker)
    }

    // MARK: - Crash reset (PG-13, PG-14)

    /// A shared-memory worker crashed: SIGQUIT every other shared-memory worker, wait until all have exited,
    /// then forget the never-restart ones and restart the others at once.
    private func crashed(_ crashed: ManagedWorker) {
        crashed.waitingForCrashReset = true
        if self.crashReset == nil {
            self.metrics.crashResets.increment()
            self.logger.error("crash of a shared-memory worker: resetting every shared-memory worker", metadata: crashed.metadata)
            self.emit(crashed, .crashReset)
            var remaining = Set<ObjectIdentifier>()
            for worker in self.slots.all where worker.usesSharedMemory {
                worker.waitingForCrashReset = true
                worker.restartTask?.cancel()
                worker.restartTask = nil
                worker.pendingRestart = nil
                if let process = worker.process {
                    remaining.insert(ObjectIdentifier(worker))
                    self.stop(worker, process, signal: .quit, grace: self.configuration.quitGracePeriod)
                }
            }
            self.crashReset = CrashReset(remaining: remaining)
        }
        self.crashReset?.remaining.remove(ObjectIdentifier(crashed))
        self.notify(crashed.notifyPID)
        crashed.shutdownWaiters.resumeAll(with: .success(.stopped))
        self.finishCrashResetIfDone()
    }

    private func finishCrashResetIfDone() {
        guard let reset = self.crashReset, reset.remaining.isEmpty else { return }
        self.crashReset = nil
        self.rebuildSharedMemory()
        for worker in self.slots.all where worker.waitingForCrashReset {
            worker.waitingForCrashReset = false
            let keep = worker.isStatic && self.configuration.keepStaticWorkersAcrossCrashReset
            if worker.terminateRequested {
                self.unregister(worker, .terminated)
            } else if worker.registration.restartInterval == .never && !keep {
                self.unregister(worker, .crashReset)
            } else if self.isStopping {
                self.unregister(worker, .shutdown)
            } else if self.budgetSpent(worker) {
                // A restart budget also holds for crash resets: a worker that keeps crashing stops the storm.
                worker.gaveUp = true
                self.logger.error("gave up: restart budget spent", metadata: worker.metadata)
                self.emit(worker, .gaveUp)
                worker.readyWaiters.resumeAll(with: .failure(self.stoppedError(worker)))
            } else if self.canStart(worker) {
                // Restartable workers come back at once, ignoring their interval.
                worker.restartTimes.append(self.clock.now())
                self.metrics.restarts.increment()
                self.start(worker)
            }
        }
    }

    /// Every shared-memory worker is gone: replace the segment with a new, zeroed one (PG-13).
    private func rebuildSharedMemory() {
        guard let old = self.sharedMemory else { return }
        self.sharedMemoryGeneration += 1
        do {
            self.sharedMemory = try SharedMemorySegment(size: old.size, generation: self.sharedMemoryGeneration)
            old.close()
        } catch {
            // Keep the old segment rather than none; say so loudly.
            self.logger.error("cannot rebuild shared memory after a crash reset: \(error); keeping the old segment")
        }
    }

    /// Whether the worker's restart budget allows no further restart now.
    private func budgetSpent(_ worker: ManagedWorker) -> Bool {
        guard let budget = worker.registration.restartBudget else { return false }
        let now = self.clock.now()
        worker.restartTimes.removeAll { now - $0 > budget.window }
        return worker.restartTimes.count >= budget.maxRestarts
    }

    // MARK: - Stopping workers

    /// Sends `signal` to the worker's process group and SIGKILL after `grace` unless it exited by then.
    func stop(_ worker: ManagedWorker, _ process: UVChildProcess, signal: UVSignal, grace: Duration) {
        worker.stopping = true
        _ = try? process.signalGroup(signal)
        worker.killTask?.cancel()
        let clock = self.clock
        worker.killTask = Task {
            do {
                try await clock.sleep(grace)
            } catch {
                return  // the worker exited
            }
            // Still not reaped after its grace period: kill the whole group.
            self.killIfRunning(process)
        }
    }

    private func killIfRunning(_ process: UVChildProcess) {
        if process.isRunning {
            self.logger.warning("grace period over: SIGKILL to process group \(process.pid)")
            _ = try? process.signalGroup(.kill)
        }
    }

    /// Terminates a worker through its handle (PG-22).
    func terminate(_ handle: BackgroundWorkerHandle) {
        guard let worker = self.worker(handle) else { return }  // stale handle: nothing
        worker.terminateRequested = true
        if let process = worker.process {
            self.logger.info("terminating", metadata: worker.metadata)
            if !worker.stopping {
                self.stop(worker, process, signal: .terminate, grace: worker.registration.stopGracePeriod)
            }
        } else if !worker.waitingForCrashReset {
            // Not running: unregister at once; the notify pid hears of it (PG-17).
            self.unregister(worker, .terminated)
            self.finishStoppingIfIdle()
        }
    }

    func resetRestartBudget(_ handle: BackgroundWorkerHandle) {
        guard let worker = self.worker(handle), worker.gaveUp else { return }
        worker.gaveUp = false
        worker.restartTimes.removeAll()
        worker.consecutiveRestarts = 0
        if self.canStart(worker) { self.start(worker) }
    }
}
