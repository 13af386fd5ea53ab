import CWorkerSupport
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// The promise that no worker outlives its supervisor, for every kind of worker: a small guardian process
/// holds the process group of every running worker and kills them all when the supervising process is gone,
/// whatever ended it (SIGKILL, a crash, `exit` without a shutdown).
///
/// The guardian is forked from the supervisor without `exec` (it runs only async-signal-safe C, see
/// `cws_guardian_start`), lives in a session of its own and ignores the signals a supervisor's process or group
/// gets, and reads the groups from a pipe whose write end only the supervisor holds: end of file on that pipe
/// means the supervisor died. Workers that watch descriptor 3 also exit by themselves; the guardian covers
/// programs that know nothing of the contract, and their children in the worker's group.
///
/// What it does not cover: a process that left its worker's process group (`setsid`, `setpgid`), the guardian
/// itself being killed in the same instant as the supervisor (a `kill -9` of every process of a user, the OOM
/// killer), and a worker spawned in the instant before the supervisor died, before its group was sent. A cgroup
/// per supervisor would cover the first two, but needs a delegated cgroup tree, which an embedded library
/// cannot count on.
final class WorkerGuardian {
    let loop: UVEventLoop
    private let process: UVChildProcess
    private var control: Int32?

    /// Starts a guardian for at most `capacity` groups; `onExit` runs (on the loop thread) if it ends.
    init(loop: UVEventLoop, capacity: Int, onExit: @escaping (UVExitStatus) -> Void) throws(UVError) {
        var pid: pid_t = 0
        var pidfd: Int32 = -1
        var control: Int32 = -1
        // This process's argv strings lie end to end: from the first one's start to the last one's end.
        let argv = CommandLine.unsafeArgv
        let count = Int(CommandLine.argc)
        var titleArea: UnsafeMutablePointer<CChar>? = nil
        var titleLength = 0
        if count > 0, let first = argv[0], let last = argv[count - 1] {
            titleArea = first
            titleLength = (last + strlen(last)) - first
        }
        let status = cws_guardian_start(Int32(capacity), titleArea, titleLength, &pid, &pidfd, &control)
        guard status == 0 else {
            throw UVError(.spawnFailed, errno: status, context: "starting the worker guardian")
        }
        self.loop = loop
        self.control = control
        do {
            self.process = try loop.adoptChild(pid: pid, pidfd: pidfd, name: "bgworker-guard", detached: true, onExit: onExit)
        } catch {
            _ = cws_close(control)
            _ = cws_close(pidfd)
            kill(pid, SIGKILL)
            while waitpid(pid, nil, 0) < 0 && errno == EINTR {}
            throw error
        }
    }

    var pid: Int32 { self.process.pid }

    /// The process groups it holds, as this side told it.
    private(set) var held: Set<Int32> = []

    /// Holds a worker's process group from now on.
    func hold(_ group: Int32) {
        guard let control = self.control else { return }
        self.held.insert(group)
        _ = cws_guardian_send(control, 1, group)
    }

    /// Forgets a worker's process group (its leader was reaped): its number may be another process's from now on,
    /// which the guardian must never kill.
    func release(_ group: Int32) {
        guard let control = self.control else { return }
        self.held.remove(group)
        _ = cws_guardian_send(control, 0, group)
    }

    deinit {
        self.close()
    }

    /// Stops the guardian: it kills the groups it still holds (none after a clean shutdown) and exits.
    func close() {
        guard let control = self.control else { return }
        self.control = nil
        _ = cws_close(control)
    }
}
