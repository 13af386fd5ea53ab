import UVConcurrency

/// A registration waiting for a free slot: resumed with true when a slot was freed (or the supervisor began
/// shutting down: the retry then says so), false when its time is up.
struct SlotWaiter {
    let token: UVWaitToken
    let continuation: CheckedContinuation<Bool, any Error>
    let timer: UVTimer?
}

extension WorkerSupervisor {
    /// Registers a worker like ``register(_:)``, but when every slot is taken waits up to `timeout` for one to
    /// be freed instead of failing at once (PostgreSQL's `RegisterDynamicBackgroundWorker` only returns false).
    ///
    /// Waiting registrations are served in the order they began to wait, one per freed slot. A registration
    /// that breaks a rule is refused at once, as by ``register(_:)``; so is one made while the supervisor shuts
    /// down, and waiting ones are refused when a shutdown begins.
    /// - Parameter timeout: How long to wait for a slot; zero waits not at all.
    /// - Throws: ``SupervisorError``: ``SupervisorError/Code/noFreeSlot`` when no slot came free in time (the
    ///   message says how long it waited), or any refusal of ``register(_:)``; `CancellationError` when the
    ///   calling task is cancelled while waiting. Nothing is registered when it throws.
    public func register(_ worker: BackgroundWorker, waitingForSlotUpTo timeout: Duration) async throws -> BackgroundWorkerHandle {
        let start = ContinuousClock.now
        var attempt = 0
        while true {
            let refusal: SupervisorError
            do {
                return try self.register(worker)
            } catch {
                refusal = error
            }
            guard refusal.code == .noFreeSlot else { throw refusal }
            let remaining = timeout - start.duration(to: .now)
            // A waiter woken for a slot that another registration took goes back to the front of the line.
            guard remaining > .zero, try await self.waitForSlot(remaining, first: attempt > 0) else {
                throw SupervisorError(
                    .noFreeSlot,
                    "no worker slot came free for worker '\(worker.name)' within \(timeout): \(self.machine.slotsInUse) of \(self.configuration.maxWorkerProcesses) in use; raise maxWorkerProcesses or wait longer"
                )
            }
            attempt += 1
        }
    }

    /// How many registrations wait for a slot.
    var waitingForSlots: Int { self.slotWaiters.count }

    /// Waits until a slot is freed (true), or `timeout` passes (false).
    private func waitForSlot(_ timeout: Duration, first: Bool) async throws -> Bool {
        try await self.loop.wait { token, continuation in
            self.assumeIsolated { supervisor in
                // Registration is what decides; this only saves a wait that could not end otherwise.
                guard !supervisor.machine.hasFreeSlot, !supervisor.machine.mode.isStopping else {
                    continuation.resume(returning: true)
                    return
                }
                let timer = try? supervisor.loop.scheduleTimer(after: timeout) {
                    supervisor.assumeIsolated { $0.resumeSlotWaiter(token, with: .success(false)) }
                }
                let waiter = SlotWaiter(token: token, continuation: continuation, timer: timer)
                if first { supervisor.slotWaiters.insert(waiter, at: 0) } else { supervisor.slotWaiters.append(waiter) }
            }
        } cancel: { token in
            self.assumeIsolated { $0.resumeSlotWaiter(token, with: .failure(CancellationError())) }
        }
    }

    /// Resumes the waiter of `token`, if it still waits.
    private func resumeSlotWaiter(_ token: UVWaitToken, with result: Result<Bool, any Error>) {
        guard let index = self.slotWaiters.firstIndex(where: { $0.token === token }) else { return }
        let waiter = self.slotWaiters.remove(at: index)
        waiter.timer?.cancel()
        waiter.continuation.resume(with: result)
    }

    /// A slot was freed: the first waiting registration tries again.
    func slotFreed() {
        guard !self.slotWaiters.isEmpty else { return }
        let waiter = self.slotWaiters.removeFirst()
        waiter.timer?.cancel()
        waiter.continuation.resume(returning: true)
    }

    /// Shutting down: every waiting registration tries again, and is refused.
    func wakeAllSlotWaiters() {
        let waiters = self.slotWaiters
        self.slotWaiters.removeAll()
        for waiter in waiters {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: true)
        }
    }
}
