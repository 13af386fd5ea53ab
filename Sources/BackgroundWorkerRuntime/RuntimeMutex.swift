#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex: `Synchronization.Mutex`'s interface, without its library.
///
/// A worker pays its start on every restart, and loading `libswiftSynchronization.so` alone costs a worker
/// 0.2–0.3 ms here (4–7% of an empty Swift program's start, `BENCHMARKS.md`); the runtime needs nothing
/// else from it.
struct RuntimeMutex<State>: ~Copyable, @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<State>

    init(_ initial: consuming State) {
        self.mutex = .allocate(capacity: 1)
        self.mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(self.mutex, nil)
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: initial)
    }

    deinit {
        self.value.deinitialize(count: 1)
        self.value.deallocate()
        pthread_mutex_destroy(self.mutex)
        self.mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    borrowing func withLock<Result, Failure: Error>(
        _ body: (inout State) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return try body(&self.value.pointee)
    }
}
