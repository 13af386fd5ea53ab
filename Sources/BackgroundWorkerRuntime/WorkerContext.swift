import BackgroundWorkerContract
// Re-exported: its one type is the element-agnostic sequence behind this module's public sequences, so that
// iterating them needs no import of its own.
@_exported import StreamSequences

#if canImport(Glibc)
import Glibc
#endif

/// What a running worker's body gets: its registration, readiness, reload requests, signal blocking.
public final class WorkerContext: Sendable {
    /// This worker's registration (``BackgroundWorkerContract/BackgroundWorker/current``).
    public let identity: WorkerProcessContract.Identity
    /// SIGHUP, as reload requests. Buffering: at most one pending request is kept; several SIGHUPs before the
    /// body takes it are one request (signals coalesce anyway). A SIGHUP that arrived before the first use of
    /// this property is its first element. Every use returns the same sequence: iterate it from one task.
    public var reloads: WorkerReloads {
        self.reloadRequests.sequence()
    }

    /// SIGUSR1, as notifications: the wake-up a worker named as another registration's notify pid receives
    /// when that worker starts, exits or is unregistered (PostgreSQL's `bgw_notify_pid`). It carries nothing:
    /// look again at what you wait for (a handle's status, say). Buffering: at most one pending notification is
    /// kept; several before the body takes it are one. A worker on this runtime tells its supervisor at start
    /// that it takes SIGUSR1 (`NOTIFY=1` on its status descriptor), so it may be named as a notify pid.
    public var notifications: WorkerNotifications {
        self.notificationRequests.sequence()
    }

    let reloadRequests: SignalRequests
    let notificationRequests: SignalRequests
    let signals: SignalGate
    let hooks: ContextHooks
    private let mapping = RuntimeMutex<UnsafeMutableRawBufferPointer?>(nil)

    init(
        identity: WorkerProcessContract.Identity,
        reloads: SignalRequests,
        notifications: SignalRequests,
        signals: SignalGate,
        hooks: ContextHooks
    ) {
        self.identity = identity
        self.hooks = hooks
        self.reloadRequests = reloads
        self.notificationRequests = notifications
        self.signals = signals
    }

    /// Tells the supervisor the worker is ready: writes `READY=1` to the readiness descriptor, so that
    /// `waitForReady()` returns.
    /// - Throws: ``WorkerRuntimeError`` when the worker was registered without `reportsReadiness`, or the
    ///   write failed (the supervisor is gone).
    public func reportReady() throws(WorkerRuntimeError) {
        try BackgroundWorkerRuntime.reportReady(self.identity)
    }

    /// The supervisor's shared-memory segment, mapped read-write and shared (`MAP_SHARED`) at first use.
    ///
    /// Every worker with the shared-memory flag sees the same bytes; a crash reset gives the restarted workers
    /// a new, zeroed segment. Coordinate access between workers yourself (atomics, or a lock in the segment).
    /// - Throws: ``WorkerRuntimeError`` with ``WorkerRuntimeError/Code/noSharedMemory`` for a worker
    ///   registered without `.sharedMemoryAccess` (or whose supervisor has `sharedMemorySize` 0).
    public func sharedMemory() throws(WorkerRuntimeError) -> UnsafeMutableRawBufferPointer {
        guard let segment = self.identity.sharedMemory else {
            throw WorkerRuntimeError(
                .noSharedMemory,
                "worker '\(self.identity.name)' has no shared memory; register it with flags [.sharedMemoryAccess]"
            )
        }
        let result: Result<UnsafeMutableRawBufferPointer, WorkerRuntimeError> = self.mapping.withLock { mapping in
            if let mapping { return .success(mapping) }
            let address = mmap(nil, segment.size, PROT_READ | PROT_WRITE, MAP_SHARED, segment.descriptor, 0)
            guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
                return .failure(WorkerRuntimeError(.noSharedMemory, "mapping the shared-memory segment (\(segment.size) bytes) failed: errno \(errno)"))
            }
            let buffer = UnsafeMutableRawBufferPointer(start: address, count: segment.size)
            mapping = buffer
            return .success(buffer)
        }
        return try result.get()
    }

    /// Holds SIGTERM and SIGHUP (PostgreSQL's `BackgroundWorkerBlockSignals`): they are recorded, not acted on,
    /// until ``unblockSignals()``. The supervisor's grace-period SIGKILL still applies.
    public func blockSignals() {
        self.signals.block()
    }

    /// Acts on the SIGTERM and SIGHUP that arrived while blocked, and on every later one
    /// (`BackgroundWorkerUnblockSignals`).
    public func unblockSignals() {
        self.signals.unblock()
    }

    /// Whether a SIGTERM arrived: acted on (the body was cancelled) or, while signals are blocked, held.
    /// PostgreSQL workers poll a flag like this (`ShutdownRequestPending`) in long loops.
    public var isTerminationRequested: Bool {
        self.signals.terminationRequested
    }

    /// Runs `body` with SIGTERM and SIGHUP held; they are acted on when it returns or throws.
    public func withSignalsBlocked<T>(_ body: () throws -> T) rethrows -> T {
        self.blockSignals()
        defer { self.unblockSignals() }
        return try body()
    }

    /// Registers `handler` to run once when the body is cancelled: by SIGTERM (when acted on) or because the
    /// supervisor died. It runs at once on the runtime's watcher thread, so it must be short and must not
    /// block: close a socket so that a call waiting on it fails now (a database connection in the middle of a
    /// query, say), never wait for it. Registered after the cancellation, it runs at once.
    public func onCancel(_ handler: @escaping @Sendable () -> Void) {
        self.hooks.onCancel(handler)
    }

    /// Registers `cleanup` to run once after the body ended (returned, threw, or was cancelled), before the
    /// process exits: clean-ups run one after the other, the last registered first. A worker whose supervisor
    /// died exits 50 ms after its body was cancelled, clean-ups finished or not.
    public func addCleanup(_ cleanup: @escaping @Sendable () async -> Void) {
        self.hooks.addCleanup(cleanup)
    }
}

/// The cancel handlers and clean-ups of ``WorkerContext/onCancel(_:)`` and ``WorkerContext/addCleanup(_:)``;
/// nothing is allocated for a worker that registers none.
final class ContextHooks: Sendable {
    private final class Lists {
        var cancelHandlers: [@Sendable () -> Void] = []
        var cleanups: [@Sendable () async -> Void] = []
    }

    private struct State: @unchecked Sendable {
        var lists: Lists?
        var cancelled = false
    }

    private let state = RuntimeMutex(State())
    /// Held while cancel handlers run, so that clean-ups never start before they finished.
    private let running = RuntimeMutex(())

    func onCancel(_ handler: @escaping @Sendable () -> Void) {
        let now = self.state.withLock { state -> Bool in
            if state.cancelled { return true }
            if state.lists == nil { state.lists = Lists() }
            state.lists?.cancelHandlers.append(handler)
            return false
        }
        if now { handler() }
    }

    func addCleanup(_ cleanup: @escaping @Sendable () async -> Void) {
        self.state.withLock { state in
            if state.lists == nil { state.lists = Lists() }
            state.lists?.cleanups.append(cleanup)
        }
    }

    /// The body was cancelled: runs the cancel handlers, once. A second caller returns once the first one's
    /// handlers finished.
    func cancelled() {
        self.running.withLock { _ in
            let handlers = self.state.withLock { state -> [@Sendable () -> Void]? in
                guard !state.cancelled else { return nil }
                state.cancelled = true
                defer { state.lists?.cancelHandlers = [] }
                return state.lists?.cancelHandlers
            }
            handlers?.forEach { $0() }
        }
    }

    /// Whether a clean-up is registered (checked first, so that a worker with none never touches the list).
    var hasCleanups: Bool {
        self.state.withLock { $0.lists != nil }
    }

    /// The body ended: runs the clean-ups, last registered first, once; after the cancel handlers when the
    /// body was cancelled (the watcher thread may still be running them, or not have begun).
    func runCleanups(afterCancellation: Bool) async {
        if afterCancellation { self.cancelled() }
        let cleanups = self.state.withLock { state -> [@Sendable () async -> Void] in
            defer { state.lists?.cleanups = [] }
            return state.lists?.cleanups ?? []
        }
        for cleanup in cleanups.reversed() { await cleanup() }
    }
}

/// SIGHUP reload requests, as an `AsyncSequence` (``WorkerContext/reloads``): each element is one request, and
/// the sequence ends when the worker is stopping. Buffering: see ``WorkerContext/reloads``. Iterate it from one
/// task.
public typealias WorkerReloads = StreamSequence<Void>

/// SIGUSR1 wake-ups, as an `AsyncSequence` (``WorkerContext/notifications``): each element means "something
/// the worker waits for may have changed: look again"; the sequence ends when the worker is stopping. Buffering:
/// see ``WorkerContext/notifications``. Iterate it from one task.
public typealias WorkerNotifications = StreamSequence<Void>

/// The requests behind ``WorkerContext/reloads`` (SIGHUP) and ``WorkerContext/notifications`` (SIGUSR1). The
/// stream is made at first use, not at start: a worker that never asks for them does not pay for one (nor for
/// its type metadata, which a stored `AsyncStream` field would make every worker instantiate before its body
/// starts).
final class SignalRequests: Sendable {
    /// The stream and its continuation, allocated at first use.
    private final class Stream: Sendable {
        let stream: AsyncStream<Void>
        let continuation: AsyncStream<Void>.Continuation

        init() {
            (self.stream, self.continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }
    }

    private struct State {
        var stream: Stream?
        var pending = false
        var finished = false
    }

    private let state = RuntimeMutex(State())

    /// The sequence, made at the first call.
    func sequence() -> StreamSequence<Void> {
        let stream = self.state.withLock { state -> Stream in
            if let stream = state.stream { return stream }
            let stream = Stream()
            if state.pending { stream.continuation.yield() }
            if state.finished { stream.continuation.finish() }
            state.stream = stream
            return stream
        }
        return StreamSequence(stream.stream)
    }

    /// A signal to act on.
    func request() {
        let made = self.state.withLock { state -> Bool in
            if state.stream == nil { state.pending = true }
            return state.stream != nil
        }
        if made { self.yieldToMadeStream() }
    }

    /// The body ended: iteration ends.
    func finish() {
        // Two steps, so that a worker that never asked for the stream does not instantiate `Optional<Stream>`.
        let made = self.state.withLock { state -> Bool in
            state.finished = true
            return state.stream != nil
        }
        if made { self.finishMadeStream() }
    }

    // The stream's own work, out of line: the callers' fast paths (no stream made) must not touch the stream's
    // types, whose metadata the Swift runtime would otherwise instantiate on entry.

    @inline(never)
    private func yieldToMadeStream() {
        self.state.withLock { $0.stream }?.continuation.yield()
    }

    @inline(never)
    private func finishMadeStream() {
        self.state.withLock { $0.stream }?.continuation.finish()
    }
}

/// Decides, under a lock, whether a SIGTERM or SIGHUP is acted on now or held until unblock.
final class SignalGate: Sendable {
    private struct State {
        var blocked = 0
        var pendingTerminate = false
        var pendingReload = false
        var terminationRequested = false
    }

    private let state = RuntimeMutex(State())
    let onTerminate: @Sendable () -> Void
    let onReload: @Sendable () -> Void

    init(onTerminate: @escaping @Sendable () -> Void, onReload: @escaping @Sendable () -> Void) {
        self.onTerminate = onTerminate
        self.onReload = onReload
    }

    var terminationRequested: Bool { self.state.withLock { $0.terminationRequested } }

    func terminate() {
        let now = self.state.withLock { state -> Bool in
            if state.blocked > 0 {
                state.pendingTerminate = true
                state.terminationRequested = true
            }
            return state.blocked == 0
        }
        guard now else { return }
        // Acted on: the body is cancelled before anyone can see the request.
        self.onTerminate()
        self.state.withLock { $0.terminationRequested = true }
    }

    func reload() {
        let now = self.state.withLock { state -> Bool in
            if state.blocked > 0 { state.pendingReload = true }
            return state.blocked == 0
        }
        if now { self.onReload() }
    }

    func block() {
        self.state.withLock { $0.blocked += 1 }
    }

    func unblock() {
        let (terminate, reload) = self.state.withLock { state -> (Bool, Bool) in
            state.blocked = max(0, state.blocked - 1)
            guard state.blocked == 0 else { return (false, false) }
            defer {
                state.pendingTerminate = false
                state.pendingReload = false
            }
            return (state.pendingTerminate, state.pendingReload)
        }
        if reload { self.onReload() }
        if terminate { self.onTerminate() }
    }
}
