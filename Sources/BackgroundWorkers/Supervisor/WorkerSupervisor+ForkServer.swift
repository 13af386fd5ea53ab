import CWorkerSupport
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's side of the fork servers (``WorkerSupervisor/Configuration/forkServer``): starting them,
/// reaping what a failed one left, and waiting for them. The servers themselves are ``ForkServer``.
extension WorkerSupervisor {
    /// Starts the fork servers: one of the built-ins' binary, and one of `bgworker-host` for library workers when
    /// it is there. Their process groups are held by the guardian.
    func startForkServer() {
        func server(_ executable: String, servesLibraries: Bool) -> ForkServer {
            ForkServer(
                loop: self.loop,
                logger: self.logger,
                environment: self.baseEnvironment,
                strategy: self.configuration.spawnStrategy,
                executable: executable,
                servesLibraries: servesLibraries,
                onServerProcess: { [unowned self] pid, running in
                    self.assumeIsolated { supervisor in
                        if running { supervisor.guardian?.hold(pid) } else { supervisor.guardian?.release(pid) }
                    }
                }
            )
        }
        let builtins = server(self.configuration.builtinExecutable ?? "/proc/self/exe", servesLibraries: false)
        self.forkServer = builtins
        builtins.start()
        let host = self.configuration.hostExecutable ?? Self.executableDirectory + "/bgworker-host"
        if Self.executableProblem(host) == nil {
            let libraries = server(host, servesLibraries: true)
            self.libraryForkServer = libraries
            libraries.start()
        }
        self.resumeForkServerWaiters()
    }

    /// Wakes the tasks that waited for the fork server before it was started.
    func resumeForkServerWaiters() {
        let waiters = self.forkServerWaiters
        self.forkServerWaiters.removeAll()
        for waiter in waiters { waiter.resume() }
    }

    /// Waits while the fork servers (``Configuration/forkServer``) are starting, or are to be started again after a
    /// start failed for a passing reason (no descriptor or memory free; tried again after 1 s, doubling up to
    /// 30 s, exec'ing meanwhile); true when built-in workers are
    /// forked from now on, false when they are exec'd (no fork server configured, the supervisor has not run or has
    /// stopped, or the server cannot be used: the log says why). Library workers are forked too once it returns,
    /// unless `bgworker-host` is missing or is no fork server (``libraryForkServerPID`` is then nil, and the log
    /// says why).
    public func waitForForkServer() async -> Bool {
        if self.forkServer == nil, self.configuration.forkServer, self.machine.mode == .idle {
            // Not started yet: run() starts it (or the supervisor stops without running).
            await withCheckedContinuation { self.forkServerWaiters.append($0) }
        }
        guard let server = self.forkServer else { return false }
        _ = await self.libraryForkServer?.waitUntilSettled(isolation: self)
        if case .ready = await server.waitUntilSettled(isolation: self) { return true }
        return false
    }

    /// The process groups the guardian holds.
    var guardedGroups: Set<Int32> { self.guardian?.held ?? [] }

    /// The library workers' fork server's pid while it runs, or nil.
    public var libraryForkServerPID: Int32? { self.libraryForkServer?.pid }

    /// Waits until the fork server whose pid was `pid` was replaced (or given up); returns the state then.
    func waitUntilForkServerReplaced(_ pid: Int32) async -> ForkServer.State? {
        guard let server = self.forkServer else { return nil }
        while server.pid == pid {
            _ = await server.waitForChange(isolation: self)
        }
        return await server.waitUntilSettled(isolation: self)
    }

    /// The pid of the built-in fork server's spare that the next built-in worker becomes; asked for and waited for
    /// when none is there. Nil without a ready fork server.
    func forkServerSparePID() -> Int32? { self.forkServer?.readySparePID() }

    /// The built-in workers' fork server's pid while it runs (starting or ready), or nil.
    public var forkServerPID: Int32? { self.forkServer?.pid }

    /// Whether the worker's current process was forked by a fork server (false when it was exec'd, or has no
    /// process).
    public func isForked(_ handle: BackgroundWorkerHandle) -> Bool {
        guard let resources = self.resources(handle.id), resources.process != nil else { return false }
        return resources.forked
    }
}
