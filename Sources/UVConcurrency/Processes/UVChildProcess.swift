import CLibUV
import CWorkerSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process started on a ``UVEventLoop`` (see ``UVSpawnStrategy`` for how).
///
/// The child is reaped by pid only (by libuv's SIGCHLD handling, or after its pidfd became readable); the exit
/// is then reported on the loop thread, first to the `onExit` closure given at spawn, then to every task
/// waiting in ``waitForExit()``. Handles are closed only after the reap, so a child never stays a zombie, and
/// no signal is sent through this object after the reap (the pid may have been reused by then).
///
/// Nothing else in the process may reap children it did not start (`waitpid(-1)`, `wait()`, SIGCHLD set to
/// ignore): libuv then loses the exit. A pidfd-watched child reaped by someone else is reported as
/// `.exited(-1)`, a code no real exit has.
public final class UVChildProcess: @unchecked Sendable {
    // @unchecked Sendable: `pid`, `loop`, `executable` and `isDetached` are immutable; every `var` is touched only
    // on the loop thread.

    /// The loop that spawned the child and reports its exit.
    public let loop: UVEventLoop
    /// The child's process id.
    public let pid: Int32
    /// The executable it was started from, for messages.
    public let executable: String
    /// Whether it runs in a session and process group of its own (whose id is ``pid``).
    public let isDetached: Bool

    private var backend: Backend
    private var onExit: ((UVExitStatus) -> Void)?
    private var status: UVExitStatus?
    private var waiters = LoopWaiters<UVExitStatus>()

    /// How the exit is learnt, and what to close after it.
    enum Backend {
        /// `uv_spawn`: libuv reaps and calls the exit callback.
        case libuv(UnsafeMutablePointer<uv_process_t>)
        /// `posix_spawn`: a poll watcher on the pidfd; the process is reaped here.
        case pidfd(UnsafeMutablePointer<uv_poll_t>, Int32)
        /// Reaped, handles closed.
        case reaped
    }

    /// The strategy the child was started with.
    public let strategy: UVSpawnStrategy

    init(
        loop: UVEventLoop,
        pid: Int32,
        backend: Backend,
        executable: String,
        detached: Bool,
        strategy: UVSpawnStrategy,
        onExit: @escaping (UVExitStatus) -> Void
    ) {
        self.loop = loop
        self.backend = backend
        self.strategy = strategy
        self.pid = pid
        self.executable = executable
        self.isDetached = detached
        self.onExit = onExit
    }

    /// How the child ended, or `nil` while it runs. Loop thread only.
    public var exitStatus: UVExitStatus? {
        self.loop.preconditionInEventLoop()
        return self.status
    }

    /// Whether the child has not been reaped yet. Loop thread only.
    public var isRunning: Bool {
        self.loop.preconditionInEventLoop()
        return self.status == nil
    }

    /// Sends `signal` to the child. Loop thread only.
    /// - Returns: `false` when the child was already reaped, so nothing was sent.
    /// - Throws: ``UVError`` with ``UVError/Code/signalFailed`` when `kill` fails (EPERM, EINVAL).
    @discardableResult
    public func signal(_ signal: UVSignal) throws(UVError) -> Bool {
        self.loop.preconditionInEventLoop()
        guard self.status == nil else { return false }
        guard kill(self.pid, signal.rawValue) == 0 else {
            let error = errno
            // ESRCH: exited, not reaped yet; the exit callback is on its way.
            if error == ESRCH { return false }
            throw UVError(.signalFailed, errno: error, context: "sending \(signal) to pid \(self.pid) (\(self.executable))")
        }
        return true
    }

    /// Sends `signal` to the child's whole process group: the child and every process it started that stayed in
    /// its group. Only for detached children (``UVSpawnOptions/detached``); loop thread only.
    ///
    /// Works after the child itself was reaped, as long as processes of its group remain: the kernel does not
    /// hand out a process group's id as a new pid while the group has members.
    ///
    /// A child that has not made its group yet (a fork server's worker does so as its first step after the fork,
    /// while its pid is already known here) gets the signal alone: it has started nothing that could be in its
    /// group, and while it is not reaped its pid is its own.
    /// - Returns: `false` when no process of the group was left.
    /// - Throws: ``UVError`` with ``UVError/Code/invalidArgument`` for a child that is not detached (its group is
    ///   this process's), or ``UVError/Code/signalFailed`` when `kill` fails otherwise.
    @discardableResult
    public func signalGroup(_ signal: UVSignal) throws(UVError) -> Bool {
        self.loop.preconditionInEventLoop()
        guard self.isDetached else {
            throw UVError(
                .invalidArgument,
                context: "pid \(self.pid) (\(self.executable)) shares this process's group; spawn it detached to signal its group"
            )
        }
        guard kill(-self.pid, signal.rawValue) == 0 else {
            let error = errno
            if error == ESRCH, self.isRunning { return try self.signal(signal) }
            if error == ESRCH { return false }
            throw UVError(
                .signalFailed,
                errno: error,
                context: "sending \(signal) to process group \(self.pid) (\(self.executable))"
            )
        }
        return true
    }

    /// Waits until the child has been reaped and returns how it ended. Callable from any task.
    ///
    /// Resumes exactly once: with the status, or by throwing `CancellationError` when the task is cancelled
    /// first (the child keeps running; nothing is left registered).
    public func waitForExit() async throws -> UVExitStatus {
        try await self.waiters.wait(on: self.loop) { [self] in self.status }
    }

    // MARK: - Loop-thread internals

    func killForShutdown() {
        guard self.status == nil else { return }
        if self.isDetached {
            _ = kill(-self.pid, SIGKILL)
        }
        _ = kill(self.pid, SIGKILL)
    }

    /// The libuv exit callback: record, close the handle (the child is reaped), then tell everyone.
    func exited(status: Int64, signal: Int32) {
        let exitStatus: UVExitStatus =
            signal != 0 ? .signaled(UVSignal(rawValue: signal)) : .exited(Int32(truncatingIfNeeded: status))
        self.status = exitStatus
        self.closeHandle()
        self.loop.liveProcesses.removeValue(forKey: ObjectIdentifier(self))
        let onExit = self.onExit
        self.onExit = nil
        onExit?(exitStatus)
        self.waiters.resumeAll(returning: exitStatus)
        self.loop.closeIfNoLiveProcesses()
    }

    /// The pidfd became readable: the child exited (or, spuriously, not yet).
    func pidfdReadable() {
        var code: Int32 = 0
        var signal: Int32 = 0
        let reaped = cws_reap(self.pid, &code, &signal)
        if reaped == 0 { return }
        // ECHILD: something else in this process reaped our child; the status is lost.
        self.exited(status: reaped > 0 ? Int64(code) : -1, signal: reaped > 0 ? signal : 0)
    }

    private func closeHandle() {
        switch self.backend {
        case .reaped:
            return
        case .libuv(let handle):
            uvCloseReleasingOwner(handle)
        case .pidfd(let poll, let pidfd):
            uvCloseReleasingOwner(poll)
            // uv_close stopped the watcher and removed the descriptor from epoll: it may be closed now.
            _ = cws_close(pidfd)
        }
        self.backend = .reaped
    }
}
