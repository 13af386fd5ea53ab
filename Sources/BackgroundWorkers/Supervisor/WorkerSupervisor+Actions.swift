import Logging
import Metrics
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension WorkerSupervisor {
    /// The readings an input comes with.
    func readings() -> SupervisorStateMachine.Readings {
        SupervisorStateMachine.Readings(now: self.clock.now(), random: self.configuration.random)
    }

    /// Feeds one worker input to the rules and carries out their actions.
    func apply(_ id: WorkerID, _ input: WorkerStateMachine.Input) {
        var actions: [SupervisorAction] = []
        self.machine.handle(id, input, self.readings(), &actions)
        self.perform(actions)
    }

    /// Carries out the rules' actions in order. A spawn's result goes back to the rules at once and its actions
    /// join the end of the list; nothing else feeds the rules from here, and nothing here waits or recurses:
    /// delays are deadlines on the loop.
    func perform(_ list: [SupervisorAction]) {
        var actions = list
        var index = 0
        while index < actions.count {
            let action = actions[index]
            index += 1
            switch action {
            case .spawn(let id):
                let result = self.spawn(id)
                self.machine.handle(id, result, self.readings(), &actions)
            case .signal(let id, let pid, let signal):
                self.signal(id, pid: pid, signal)
            case .arm(let id, let kind, let delay):
                self.arm(id, kind, after: delay)
            case .disarm(let id, let kind):
                self.disarm(id, kind)
            case .resumeStartup(let id, let result):
                self.resources(id)?.startupWaiters.resumeAll(with: result.mapError { $0 })
            case .resumeShutdown(let id, let status):
                self.resources(id)?.shutdownWaiters.resumeAll(with: .success(status))
            case .resumeReady(let id, let result):
                self.resources(id)?.readyWaiters.resumeAll(with: result.mapError { $0 })
            case .notify(let pid):
                // The wake-up carries nothing: the receiver re-reads the status (PG-17).
                _ = kill(pid, SIGUSR1)
            case .emit(let id, let kind):
                self.publish(id, kind)
            case .count(let counted):
                switch counted {
                case .restart: self.metrics.restarts.increment()
                case .exit(let cause): self.metrics.exits[cause]?.increment()
                }
            case .released(let final):
                self.release(final)
            case .rebuildSharedMemory:
                self.rebuildSharedMemory()
            case .stopped(let mode):
                self.finishStopping(mode)
            }
        }
    }

    // MARK: - Processes

    /// Sends `signal` to the worker's process group while its process is not reaped (after the reap, the pid
    /// may belong to someone else).
    private func signal(_ id: WorkerID, pid: Int32, _ signal: UVSignal) {
        guard let process = self.resources(id)?.process, process.pid == pid, process.isRunning else { return }
        if signal == .kill {
            self.logger.warning("grace period over: SIGKILL to process group \(pid)", metadata: self.resources(id)?.metadata)
        }
        do {
            try process.signalGroup(signal)
        } catch {
            self.logger.error("cannot send \(signal) to process group \(pid): \(error)", metadata: self.resources(id)?.metadata)
        }
    }

    /// libuv reaped a worker's process.
    func processExited(_ id: WorkerID, _ status: UVExitStatus) {
        guard let resources = self.resources(id) else { return }
        if let process = resources.process { self.guardian?.release(process.pid) }
        resources.process = nil
        // What the worker wrote before exiting (an ERROR= line, say) is read now, not lost to the race with the
        // exit notification.
        resources.readiness?.drainAndClose()
        resources.readiness = nil
        self.apply(id, .exited(status))
    }

    /// The slot is free: drop what was held for the registration, and leave its final state to its handles.
    private func release(_ final: WorkerStateMachine) {
        guard let resources = self.resources(final.id) else { return }
        resources.handle.record.final = final
        self.controlServer?.keepFinished(resources.handle)
        resources.restartTimer?.cancel()
        resources.killTimer?.cancel()
        resources.readiness?.cancel()
        self.clockDeadlines.removeAll(of: final.id)
        self.resources[final.id.slot] = nil
        self.metrics.slotsInUse.record(self.machine.slotsInUse)
        self.slotFreed()
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

    // MARK: - Events

    /// Tells subscribers, the log and the metrics.
    private func publish(_ id: WorkerID, _ kind: WorkerEvent.Kind) {
        guard let resources = self.resources(id) else { return }
        switch kind {
        case .registered:
            self.logger.debug("registered", metadata: resources.metadata)
        case .started(let pid):
            self.metrics.starts.increment()
            self.metrics.running.record(self.machine.runningCount)
            self.logger.info("started", metadata: self.metadata(resources, pid: pid))
        case .ready(let pid):
            self.logger.debug("ready", metadata: self.metadata(resources, pid: pid))
        case .exited(let pid, let status):
            self.metrics.running.record(self.machine.runningCount)
            self.logger.info("exited: \(status)", metadata: self.metadata(resources, pid: pid))
        case .spawnFailed(let error):
            self.logger.error("spawn failed: \(error)", metadata: resources.metadata)
        case .restartScheduled(let after):
            self.logger.debug("restart in \(after)", metadata: resources.metadata)
        case .gaveUp:
            self.logger.error("gave up: restart budget spent", metadata: resources.metadata)
        case .unregistered(let reason):
            self.logger.info("unregistered: \(reason)", metadata: resources.metadata)
        case .crashReset:
            self.metrics.crashResets.increment()
            self.logger.error("crash of a shared-memory worker: resetting every shared-memory worker", metadata: resources.metadata)
        case .reportedError(let text):
            self.logger.error("worker reports: \(text)", metadata: resources.metadata)
        }
        guard !self.eventSubscribers.isEmpty else { return }
        let event = WorkerEvent(handle: resources.handle, name: resources.name, kind: kind, time: .now)
        for continuation in self.eventSubscribers.values {
            continuation.yield(event)
        }
    }

    private func metadata(_ resources: WorkerResources, pid: Int32) -> Logger.Metadata {
        var metadata = resources.metadata
        metadata["worker.pid"] = "\(pid)"
        return metadata
    }
}
