import CLibUV
import CWorkerSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One thread running one libuv loop, usable as a Swift executor.
///
/// `UVEventLoop` is a `SerialExecutor`: an actor whose `unownedExecutor` is the loop runs every method on the
/// loop thread, and libuv callbacks (timers, signals, process exits) can enter such an actor synchronously
/// with `assumeIsolated`. ``taskExecutor`` is the same queue as a `TaskExecutor`, for
/// `withTaskExecutorPreference`.
///
/// Jobs enqueued from any thread run on the loop thread in the order they were enqueued. The loop is woken
/// through an eventfd only when it may be asleep in `epoll_wait`; while it is awake, enqueuing costs one
/// uncontended lock.
///
/// ```swift
/// let loop = try UVEventLoop(name: "supervisor")
/// actor Counter {
///     let loop: UVEventLoop
///     nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
///     ...
/// }
/// try await loop.shutdown()
/// ```
///
/// ## Shutdown
/// ``shutdown()`` stops the loop: new timers, watchers and processes are refused with
/// ``UVError/Code/loopStopped``; every live child process gets SIGKILL (its process group, when detached)
/// and is reaped by libuv, so its exit callback still runs; then every handle is closed, `uv_loop_close`
/// must return 0, and the thread is joined.
///
/// Work enqueued after the loop stopped still runs, exactly once and in order, on a short-lived fallback
/// thread that counts as the loop's thread (isolation checks pass, jobs stay serial), and every libuv
/// operation from it fails with ``UVError/Code/loopStopped``. So a task that was waiting on an actor on the
/// loop is never parked forever and nothing traps.
///
/// A loop's thread keeps the loop alive until it has stopped; after that, the loop (its memory and its
/// wake-up eventfd) is freed with its last reference, like any object.
public final class UVEventLoop: @unchecked Sendable {
    // @unchecked Sendable: `queue`, `lifecycle` and `joinState` are synchronised; everything else that is
    // `var` is touched only on the loop thread (or, after the loop stopped, never again by libuv code).

    /// The name given at creation, also the loop thread's name.
    public let name: String

    /// The same queue as a `TaskExecutor`, for `withTaskExecutorPreference(loop.taskExecutor) { ... }`.
    public private(set) var taskExecutor: UVLoopTaskExecutor! = nil

    let uvLoop: UnsafeMutablePointer<uv_loop_t>
    private let prepareHandle: UnsafeMutablePointer<uv_prepare_t>
    private let checkHandle: UnsafeMutablePointer<uv_check_t>
    private let wakeHandle: UnsafeMutablePointer<uv_poll_t>
    private let wakeFD: Int32

    let queue = Mutex(WorkQueue())
    /// Loop-thread only: the buffer being run while enqueuers fill the other one.
    private var running: [LoopWork] = []
    /// Loop-thread only: a drain is under way (a job that triggers another drain must not re-run `running`).
    private var isDraining = false
    private let lifecycle = Atomic<UInt8>(Lifecycle.running.rawValue)
    /// Set by every enqueue, cleared by every drain: lets the idle spin watch the queue without the lock.
    private let workHint = Atomic<Bool>(false)
    /// How long the loop keeps polling its queue before it sleeps in `epoll_wait`, in nanoseconds.
    private let spinNanoseconds: UInt64
    private let joinState = Mutex(JoinState())
    /// The loop thread, until joined. A lock of its own: joiners block in `pthread_join` while holding it, and
    /// the loop thread never takes it.
    private let thread = Mutex<pthread_t?>(nil)

    /// Loop-thread only: owners of open handles, closed at shutdown.
    var handleOwners: [ObjectIdentifier: any UVHandleOwner] = [:]
    /// Loop-thread only: child processes whose exit has not been reaped yet.
    var liveProcesses: [ObjectIdentifier: UVChildProcess] = [:]
    /// Loop-thread only: whether the internal handles were closed.
    private var internalHandlesClosed = false

    /// Creates a loop and starts its thread.
    /// - Parameters:
    ///   - name: The loop's name; the thread is named after its first 15 bytes.
    ///   - spinBeforeSleep: How long the loop, once out of work, keeps watching its queue before it sleeps in
    ///     `epoll_wait`. A job enqueued meanwhile runs without the cost of waking the thread (tens of
    ///     microseconds on a virtual machine), which halves the latency of request/response traffic such as
    ///     an `await` into an actor on the loop. The price is up to that much CPU time each time the loop
    ///     goes idle, and timers and I/O seen up to that much later. `.zero` never spins.
    /// - Throws: ``UVError`` with code ``UVError/Code/loopInitFailed`` when libuv or the kernel refuse, or
    ///   ``UVError/Code/invalidArgument`` for a negative or over-long spin.
    public init(name: String = "uv-loop", spinBeforeSleep: Duration = .microseconds(50)) throws(UVError) {
        guard spinBeforeSleep >= .zero, spinBeforeSleep <= .milliseconds(10) else {
            throw UVError(
                .invalidArgument,
                context: "spinBeforeSleep \(spinBeforeSleep) of loop '\(name)' is outside 0...10 ms"
            )
        }
        let (seconds, attoseconds) = spinBeforeSleep.components
        self.spinNanoseconds = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        self.name = name
        self.uvLoop = .allocate(capacity: 1)
        self.prepareHandle = .allocate(capacity: 1)
        self.checkHandle = .allocate(capacity: 1)
        self.wakeHandle = .allocate(capacity: 1)

        let fd = cws_eventfd()
        guard fd >= 0 else {
            Self.freeHandles(self.uvLoop, self.prepareHandle, self.checkHandle, self.wakeHandle)
            throw UVError(.loopInitFailed, errno: -fd, context: "creating the wake-up eventfd of loop '\(name)'")
        }
        self.wakeFD = fd

        var status = uv_loop_init(self.uvLoop)
        if status == 0 {
            status = uv_prepare_init(self.uvLoop, self.prepareHandle)
            precondition(status == 0, "uv_prepare_init cannot fail on Unix")
            status = uv_check_init(self.uvLoop, self.checkHandle)
            precondition(status == 0, "uv_check_init cannot fail on Unix")
            status = uv_poll_init(self.uvLoop, self.wakeHandle, fd)
            if status != 0 {
                // The loop holds the prepare and check handles; close them before closing the loop.
                uv_close(cuv_prepare_as_handle(self.prepareHandle), nil)
                uv_close(cuv_check_as_handle(self.checkHandle), nil)
                uv_run(self.uvLoop, UV_RUN_NOWAIT)
                _ = uv_loop_close(self.uvLoop)
            }
        }
        guard status == 0 else {
            _ = cws_close(fd)
            Self.freeHandles(self.uvLoop, self.prepareHandle, self.checkHandle, self.wakeHandle)
            throw UVError(.loopInitFailed, uvStatus: status, context: "initialising libuv loop '\(name)'")
        }

        self.taskExecutor = UVLoopTaskExecutor(loop: self)
        let unretained = Unmanaged.passUnretained(self).toOpaque()
        self.uvLoop.pointee.data = unretained
        self.prepareHandle.pointee.data = unretained
        self.checkHandle.pointee.data = unretained
        self.wakeHandle.pointee.data = unretained
        uv_prepare_start(self.prepareHandle) { handle in
            UVEventLoop.from(handle!.pointee.data).beforePoll()
        }
        uv_check_start(self.checkHandle) { handle in
            UVEventLoop.from(handle!.pointee.data).afterPoll()
        }
        uv_poll_start(self.wakeHandle, Int32(UV_READABLE.rawValue)) { handle, _, _ in
            UVEventLoop.from(handle!.pointee.data).wokenUp()
        }
        // The prepare and check handles must not keep the loop alive on their own: only the wake-up handle
        // does, until shutdown closes it.
        uv_unref(cuv_prepare_as_handle(self.prepareHandle))
        uv_unref(cuv_check_as_handle(self.checkHandle))

        try self.startThread()
    }

    deinit {
        // The thread held a reference until it stopped: libuv is done with the loop and its handles. A thread that
        // nobody joined (its loop stopped, but `shutdown()` was never awaited to the end) is detached.
        self.thread.withLock { thread in
            if let running = thread { pthread_detach(running) }
            thread = nil
        }
        _ = cws_close(self.wakeFD)
        Self.freeHandles(self.uvLoop, self.prepareHandle, self.checkHandle, self.wakeHandle)
    }

    private static func freeHandles(
        _ loop: UnsafeMutablePointer<uv_loop_t>,
        _ prepare: UnsafeMutablePointer<uv_prepare_t>,
        _ check: UnsafeMutablePointer<uv_check_t>,
        _ wake: UnsafeMutablePointer<uv_poll_t>
    ) {
        loop.deallocate()
        prepare.deallocate()
        check.deallocate()
        wake.deallocate()
    }

    @inline(__always)
    static func from(_ data: UnsafeMutableRawPointer?) -> UVEventLoop {
        Unmanaged<UVEventLoop>.fromOpaque(data!).takeUnretainedValue()
    }

    // MARK: - Thread identity

    /// Whether the calling thread is this loop's thread (or, after shutdown, its fallback thread).
    ///
    /// Read through an out-of-line C function, so an optimiser cannot reuse a value read on another thread.
    public var inEventLoop: Bool {
        cws_current_loop() == UnsafeRawPointer(Unmanaged.passUnretained(self).toOpaque())
    }

    /// Stops the process with a message naming the loop when called off the loop thread.
    public func preconditionInEventLoop(file: StaticString = #fileID, line: UInt = #line) {
        precondition(self.inEventLoop, "must be called on the thread of UVEventLoop '\(self.name)'", file: file, line: line)
    }

    /// Whether the loop still takes new handles (timers, watchers, processes): it is not shutting down.
    public var isAcceptingWork: Bool {
        self.lifecycle.load(ordering: .acquiring) == Lifecycle.running.rawValue
    }

    func throwIfStopping(_ what: @autoclosure () -> String) throws(UVError) {
        guard self.isAcceptingWork else {
            throw UVError(.loopStopped, context: "\(what()): loop '\(self.name)' is shutting down or stopped")
        }
    }

    // MARK: - Enqueuing

    /// Runs `body` on the loop thread, after every job enqueued before it. Callable from any thread.
    ///
    /// After the loop stopped, `body` runs on the fallback thread (see the type's documentation).
    public func execute(_ body: @escaping @Sendable () -> Void) {
        self.enqueue(.closure(body))
    }

    /// Runs `body` on the loop thread and returns its result.
    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            self.execute {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    @inline(__always)
    func enqueue(_ work: LoopWork) {
        // Once `work` is in the queue, another thread may run it at once, and running it may drop the last
        // reference to this loop (a task that finishes releases its actor, and the actor its loop). The wake-up
        // below still uses `self`: hold a reference of our own until it is done. The caller's reference is
        // valid here, because `work` has not run yet.
        let retained = Unmanaged.passRetained(self)
        defer { retained.release() }
        let action = self.queue.withLock { queue -> EnqueueAction in
            queue.jobs.append(work)
            self.workHint.store(true, ordering: .relaxed)
            switch queue.mode {
            case .loop:
                if queue.sleeping {
                    queue.sleeping = false
                    return .wake
                }
                return .none
            case .fallback:
                if queue.fallbackDraining { return .none }
                queue.fallbackDraining = true
                return .startFallback
            }
        }
        switch action {
        case .none:
            break
        case .wake:
            // The descriptor is closed only by deinit, which cannot run while this call holds its reference.
            // EAGAIN (counter saturated) still wakes the poller.
            _ = cws_eventfd_signal(self.wakeFD)
        case .startFallback:
            self.startFallbackDrainer()
        }
    }

    // MARK: - Loop-thread callbacks

    /// Runs every job queued so far, and the jobs they enqueue, until the queue is empty. With
    /// `sleepWhenEmpty`, marks the loop as about to sleep in the same critical section that finds it empty.
    private func drain(sleepWhenEmpty: Bool) {
        // Re-entered from a job (shutdown closes handles from inside a job): the outer drain goes on with
        // whatever is queued; draining here would swap `running` while it is being iterated and run jobs twice.
        if self.isDraining { return }
        self.isDraining = true
        defer { self.isDraining = false }
        while true {
            let hasWork = self.queue.withLock { queue -> Bool in
                if queue.jobs.isEmpty {
                    if sleepWhenEmpty { queue.sleeping = true }
                    return false
                }
                swap(&queue.jobs, &self.running)
                self.workHint.store(false, ordering: .relaxed)
                return true
            }
            guard hasWork else { return }
            for work in self.running {
                self.run(work)
            }
            self.running.removeAll(keepingCapacity: true)
        }
    }

    @inline(__always)
    private func run(_ work: LoopWork) {
        switch work {
        case .serialJob(let job):
            job.runSynchronously(on: self.asUnownedSerialExecutor())
        case .taskJob(let job):
            job.runSynchronously(on: self.taskExecutor.asUnownedTaskExecutor())
        case .closure(let body):
            body()
        }
    }

    /// The prepare phase, just before libuv computes its poll timeout and blocks.
    private func beforePoll() {
        if self.spinNanoseconds > 0 {
            self.drain(sleepWhenEmpty: false)
            // Each job that arrives restarts the spin, but one loop turn spins at most 1 ms in all, so that a
            // steady stream of jobs cannot keep timers and I/O (process exits) waiting.
            var now = uv_hrtime()
            let limit = now + 1_000_000
            var deadline = now + self.spinNanoseconds
            while now < deadline {
                if self.workHint.load(ordering: .relaxed) {
                    self.drain(sleepWhenEmpty: false)
                    now = uv_hrtime()
                    deadline = min(now + self.spinNanoseconds, limit)
                } else {
                    // Give the CPU to anything runnable on it: the scheduler tends to wake the thread this loop
                    // just handed work to (a caller's continuation) on this very CPU, where a plain spin would
                    // keep it waiting.
                    sched_yield()
                    now = uv_hrtime()
                }
            }
        }
        self.drain(sleepWhenEmpty: true)
    }

    /// The check phase, just after polling: the loop is awake, enqueuers need not wake it.
    private func afterPoll() {
        self.queue.withLock { $0.sleeping = false }
    }

    private func wokenUp() {
        _ = cws_eventfd_drain(self.wakeFD)
        self.drain(sleepWhenEmpty: false)
    }

    // MARK: - Thread

    private func startThread() throws(UVError) {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread,
            nil,
            { context in
                let loop = Unmanaged<UVEventLoop>.fromOpaque(context!).takeRetainedValue()
                loop.threadMain()
                return nil
            },
            context
        )
        guard status == 0 else {
            Unmanaged<UVEventLoop>.fromOpaque(context).release()
            // No thread will run the loop: close its handles and the loop here, so that deinit may free them.
            uv_close(cuv_prepare_as_handle(self.prepareHandle), nil)
            uv_close(cuv_check_as_handle(self.checkHandle), nil)
            uv_close(cuv_poll_as_handle(self.wakeHandle), nil)
            uv_run(self.uvLoop, UV_RUN_NOWAIT)
            _ = uv_loop_close(self.uvLoop)
            throw UVError(.loopInitFailed, errno: status, context: "starting the thread of loop '\(self.name)'")
        }
        self.thread.withLock { $0 = thread }
    }

    private func threadMain() {
        cws_set_current_loop(Unmanaged.passUnretained(self).toOpaque())
        cws_set_thread_name(self.name)
        // Swift's executor threads block most signals and a new thread inherits its creator's mask. libuv
        // handles signals on whichever thread may take them: this one must take SIGCHLD (process exits) and the
        // signals watched here (unblocked again by each watcher).
        [SIGCHLD, SIGUSR1].withUnsafeBufferPointer { _ = cws_unblock_signals($0.baseAddress, Int32($0.count)) }

        uv_run(self.uvLoop, UV_RUN_DEFAULT)

        // Every handle is closed and its close callback ran; anything left was created behind our back.
        uv_walk(
            self.uvLoop,
            { handle, _ in
                if uv_is_closing(handle) == 0 { uv_close(handle, nil) }
            },
            nil
        )
        uv_run(self.uvLoop, UV_RUN_DEFAULT)
        let closeStatus = uv_loop_close(self.uvLoop)
        self.lifecycle.store(Lifecycle.stopped.rawValue, ordering: .releasing)

        // From here on, jobs run on the fallback thread. Hand over what is queued without running it here,
        // so that the loop thread and the fallback thread never run jobs at the same time.
        let startFallback = self.queue.withLock { queue -> Bool in
            queue.mode = .fallback
            queue.sleeping = false
            guard !queue.jobs.isEmpty else { return false }
            queue.fallbackDraining = true
            return true
        }
        cws_set_current_loop(nil)
        if startFallback { self.startFallbackDrainer() }

        let waiters = self.joinState.withLock { state in
            state.closeStatus = closeStatus
            state.stopped = true
            return state.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    private func startFallbackDrainer() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let status = pthread_create(
            &thread,
            &attributes,
            { context in
                let loop = Unmanaged<UVEventLoop>.fromOpaque(context!).takeRetainedValue()
                loop.fallbackMain()
                return nil
            },
            context
        )
        pthread_attr_destroy(&attributes)
        precondition(status == 0, "cannot start the fallback thread of stopped loop '\(self.name)': errno \(status)")
    }

    private func fallbackMain() {
        cws_set_current_loop(Unmanaged.passUnretained(self).toOpaque())
        cws_set_thread_name("\(self.name)-after")
        var batch: [LoopWork] = []
        while true {
            let hasWork = self.queue.withLock { queue -> Bool in
                if queue.jobs.isEmpty {
                    queue.fallbackDraining = false
                    return false
                }
                swap(&queue.jobs, &batch)
                return true
            }
            guard hasWork else { break }
            for work in batch { self.run(work) }
            batch.removeAll(keepingCapacity: true)
        }
        cws_set_current_loop(nil)
    }

    // MARK: - Shutdown

    /// Stops the loop and waits until its thread has ended.
    ///
    /// Live child processes are killed with SIGKILL (their process group when detached) and reaped; their exit
    /// callbacks run. Timers are cancelled without firing, signal sequences finish, line readers end with
    /// ``UVLineReader/EndReason/closed``. Calling it again, or from several tasks, waits for the same shutdown.
    ///
    /// - Throws: ``UVError`` when `uv_loop_close` did not return 0 (a handle stayed open; a bug worth reporting).
    public func shutdown() async throws(UVError) {
        self.initiateShutdown()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let stopped = self.joinState.withLock { state -> Bool in
                if state.stopped { return true }
                state.waiters.append(continuation)
                return false
            }
            if stopped { continuation.resume() }
        }
        try self.joinThread()
    }

    /// Stops the loop and blocks the calling thread until the loop's thread has ended. For code that cannot
    /// `await` (a `deinit`, a C callback, the end of `main`). Must not be called on the loop thread.
    public func syncShutdown() throws(UVError) {
        precondition(!self.inEventLoop, "syncShutdown() on the thread of loop '\(self.name)' would wait for itself")
        self.initiateShutdown()
        try self.joinThread()
    }

    /// Starts stopping the loop, as ``shutdown()`` does, without waiting for it. For an owner that goes away
    /// without awaiting the end (a `deinit`): the loop thread finishes by itself and is detached when the loop is
    /// freed.
    public func requestShutdown() {
        self.initiateShutdown()
    }

    private func joinThread() throws(UVError) {
        self.thread.withLock { thread in
            if let running = thread {
                pthread_join(running, nil)
                thread = nil
            }
        }
        let closeStatus = self.joinState.withLock { $0.closeStatus ?? 0 }
        guard closeStatus == 0 else {
            throw UVError(.loopInitFailed, uvStatus: closeStatus, context: "closing libuv loop '\(self.name)'")
        }
    }

    private func initiateShutdown() {
        let previous = self.lifecycle.compareExchange(
            expected: Lifecycle.running.rawValue,
            desired: Lifecycle.stopping.rawValue,
            ordering: .acquiringAndReleasing
        )
        guard previous.exchanged else { return }
        self.execute { [self] in
            self.beginShutdown()
        }
    }

    /// Loop thread: kill what is alive, then close once nothing is.
    private func beginShutdown() {
        for process in self.liveProcesses.values {
            process.killForShutdown()
        }
        self.closeIfNoLiveProcesses()
    }

    /// Loop thread: called at shutdown and after each reaped exit.
    func closeIfNoLiveProcesses() {
        guard !self.isAcceptingWork, self.liveProcesses.isEmpty, !self.internalHandlesClosed else { return }
        self.internalHandlesClosed = true
        let owners = self.handleOwners
        self.handleOwners.removeAll()
        for owner in owners.values {
            owner.closeForShutdown()
        }
        uv_close(cuv_prepare_as_handle(self.prepareHandle), nil)
        uv_close(cuv_check_as_handle(self.checkHandle), nil)
        uv_close(cuv_poll_as_handle(self.wakeHandle), nil)
        // Jobs enqueued from here on wait for the hand-over to the fallback thread in `threadMain`; run what is
        // queued now while the loop can still serve it.
        self.drain(sleepWhenEmpty: false)
    }

    // MARK: - Handle owners

    /// How many timers, signal watchers, line readers and unreaped child processes this package has open on
    /// the loop: a leak check for tests and diagnostics. Loop thread only.
    public var openHandleCount: Int {
        self.preconditionInEventLoop()
        return self.handleOwners.count + self.liveProcesses.count
    }

    func register(_ owner: any UVHandleOwner) {
        self.handleOwners[ObjectIdentifier(owner)] = owner
    }

    func unregister(_ owner: any UVHandleOwner) {
        self.handleOwners.removeValue(forKey: ObjectIdentifier(owner))
    }
}

/// Something that owns libuv handles on a loop and closes them when the loop shuts down.
protocol UVHandleOwner: AnyObject {
    /// Loop thread: close every handle now; the owner's users learn that it ended (not that it fired).
    func closeForShutdown()
}

/// A unit of work on the loop's queue.
enum LoopWork: Sendable {
    case serialJob(UnownedJob)
    case taskJob(UnownedJob)
    case closure(@Sendable () -> Void)
}

enum EnqueueAction {
    case none
    case wake
    case startFallback
}

struct WorkQueue: ~Copyable {
    enum Mode {
        case loop
        case fallback
    }

    var jobs: [LoopWork] = []
    /// The loop may be blocked in poll and nobody has woken it since.
    var sleeping = false
    var mode = Mode.loop
    /// After shutdown: a fallback thread is draining `jobs`.
    var fallbackDraining = false

    init() {
        self.jobs.reserveCapacity(64)
    }
}

struct JoinState: ~Copyable {
    var stopped = false
    var closeStatus: Int32? = nil
    var waiters: [CheckedContinuation<Void, Never>] = []

    mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
        defer { self.waiters = [] }
        return self.waiters
    }
}

enum Lifecycle: UInt8 {
    case running
    case stopping
    case stopped
}
