import CWorkerSupport

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's shared-memory segment: an anonymous, zero-filled memfd handed to every worker with the
/// shared-memory flag as descriptor 5. A crash reset replaces it with a new one (PG-13: "shared memory is
/// rebuilt"); the workers that held the old one are all gone by then.
final class SharedMemorySegment: Sendable {
    let descriptor: Int32
    let size: Int

    /// Creates a segment. Memory is only committed when workers touch it.
    init(size: Int, generation: Int) throws(SupervisorError) {
        let fd = cws_memfd("bgworker-shm-\(generation)", UInt64(size))
        guard fd >= 0 else {
            throw SupervisorError(
                .sharedMemoryFailed,
                "creating a shared-memory segment of \(size) bytes failed: errno \(-fd); lower sharedMemorySize or raise the memory limits"
            )
        }
        self.descriptor = fd
        self.size = size
    }

    func close() {
        _ = cws_close(self.descriptor)
    }
}
