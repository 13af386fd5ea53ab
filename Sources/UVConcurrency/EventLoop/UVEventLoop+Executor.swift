import CWorkerSupport

extension UVEventLoop: SerialExecutor {
    /// Enqueues a job to run on the loop thread, isolated to this executor.
    public func enqueue(_ job: consuming ExecutorJob) {
        self.enqueue(.serialJob(UnownedJob(job)))
    }

    /// This loop as an unowned serial executor. Every actor on the loop gets the same instance, so hops
    /// between them are free when already on the loop.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Stops the process when not on the loop thread; lets `assumeIsolated` work inside libuv callbacks.
    public func checkIsolated() {
        self.preconditionInEventLoop()
    }

    /// Whether the current thread is the loop thread (asked by `assumeIsolated` before ``checkIsolated()``).
    public func isIsolatingCurrentContext() -> Bool? {
        self.inEventLoop
    }
}

/// A ``UVEventLoop``'s queue as a `TaskExecutor`: `withTaskExecutorPreference(loop.taskExecutor) { ... }`
/// runs a task's (and its child tasks') non-isolated code on the loop thread.
///
/// A separate object from the loop's `SerialExecutor` on purpose: jobs run through it are not isolated to the
/// loop, so hops between actors on the loop stay synchronous (one object playing both roles made every hop
/// go through the queue).
public final class UVLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: the only stored property is an immutable reference to a Sendable loop.
    unowned let loop: UVEventLoop

    init(loop: UVEventLoop) {
        self.loop = loop
    }

    /// Enqueues a job to run on the loop thread with this task executor preference.
    public func enqueue(_ job: consuming ExecutorJob) {
        self.loop.enqueue(.taskJob(UnownedJob(job)))
    }

    /// This task executor, unowned.
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }
}
