import CWorkerSupport
import Synchronization
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// Every suite of this target runs one test at a time: they spawn children, send process-wide signals and
/// read `/proc`, and would see each other's processes otherwise.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct UVConcurrencyTests {}

/// An actor whose executor is a loop.
actor LoopActor {
    let loop: UVEventLoop
    var log: [Int] = []

    nonisolated var unownedExecutor: UnownedSerialExecutor { self.loop.asUnownedSerialExecutor() }

    init(loop: UVEventLoop) {
        self.loop = loop
    }

    func record(_ value: Int) {
        self.log.append(value)
    }

    func threadID() -> pid_t {
        cws_gettid()
    }

    func isOnLoopThread() -> Bool {
        self.loop.inEventLoop
    }
}

/// Runs `body` with a fresh loop and shuts it down afterwards, whatever happens.
func withLoop(
    name: String = "test-loop",
    _ body: (UVEventLoop) async throws -> Void
) async throws {
    let loop = try UVEventLoop(name: name)
    do {
        try await body(loop)
        try await loop.shutdown()
    } catch {
        try? await loop.shutdown()
        throw error
    }
}

/// Spawns on the loop and waits for the exit.
func run(_ loop: UVEventLoop, _ options: UVSpawnOptions) async throws -> UVExitStatus {
    let process = try await loop.spawnProcess(options)
    return try await process.waitForExit()
}

/// The loop's open handle count, read on the loop thread.
func openHandles(_ loop: UVEventLoop) async throws -> Int {
    try await loop.submit { loop.openHandleCount }
}
