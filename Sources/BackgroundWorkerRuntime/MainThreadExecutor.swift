import CWorkerSupport

#if canImport(Glibc)
import Glibc
#endif

/// The task executor a worker's body prefers: the process's main thread, which has nothing else to do.
///
/// A worker is a short-lived process whose start is paid on every restart, and an `async` main costs Swift's
/// thread pool (a worker thread, Dispatch's manager thread, their teardown) before the body's first line. Here
/// the main thread runs the body's jobs itself, so a body that never needs a second thread never starts one.
/// It shares rather than serialises: a job enqueued while the main thread is busy (a child task started by the
/// body, a continuation resumed while a job runs) goes to Swift's global concurrent executor at once, so child
/// tasks still run in parallel and nothing waits behind a busy main thread.
///
/// Between jobs the main thread also drains Dispatch's main queue, so `MainActor` (and `DispatchQueue.main`)
/// work runs on the main thread as in any Swift program.
final class MainThreadExecutor: TaskExecutor, Sendable {
    private struct State {
        /// The job handed to the main thread, not yet taken.
        var job: UnownedJob?
        /// The main thread is running a job (the body's, or the main queue's).
        var busy = false
    }

    private let state = RuntimeMutex(State())
    /// An eventfd the main thread sleeps on; written when a job is handed to it.
    private let wake: Int32

    /// - Throws: ``WorkerRuntimeError`` when the wake-up eventfd cannot be made.
    init() throws(WorkerRuntimeError) {
        let wake = cws_eventfd()
        guard wake >= 0 else {
            throw WorkerRuntimeError(.runtimeFailed, "making the main thread's wake-up eventfd failed: errno \(-wake)")
        }
        self.wake = wake
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let handedOver = self.state.withLock { state -> Bool in
            guard !state.busy, state.job == nil else { return false }
            state.job = job
            return true
        }
        guard handedOver else {
            globalConcurrentExecutor.enqueue(job)
            return
        }
        _ = cws_eventfd_signal(self.wake)
    }

    /// Runs jobs on the calling thread, the process's main thread, until the process exits.
    func runOnMainThread() -> Never {
        let executor = self.asUnownedTaskExecutor()
        while true {
            let ready = cws_main_wait(self.wake)
            guard ready >= 0 else {
                BackgroundWorkerRuntime.printError("worker runtime: waiting on the main thread failed: errno \(-ready)")
                BackgroundWorkerRuntime.exitNow(1)
            }
            if ready & Int32(CWS_MAIN_QUEUE) != 0 {
                self.state.withLock { $0.busy = true }
                cws_main_queue_drain()
                self.state.withLock { $0.busy = false }
            }
            let job = self.state.withLock { state -> UnownedJob? in
                defer { state.job = nil }
                state.busy = state.job != nil
                return state.job
            }
            if let job {
                job.runSynchronously(on: executor)
                self.state.withLock { $0.busy = false }
            }
        }
    }
}
