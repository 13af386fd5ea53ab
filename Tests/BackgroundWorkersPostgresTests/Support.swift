import BackgroundWorkers
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

/// A registration of the database fixture worker (`Tests/Fixtures/FixtureDatabaseWorker`) in `mode`.
func databaseWorker(_ name: String, _ arguments: [String], flags: BackgroundWorker.Flags = [.sharedMemoryAccess, .databaseConnection]) -> BackgroundWorker {
    var worker = BackgroundWorker(name: name, entryPoint: .executable(buildDirectory + "/FixtureDatabaseWorker", arguments: arguments))
    worker.flags = flags
    worker.startTime = flags.contains(.databaseConnection) ? .recoveryFinished : .supervisorStart
    worker.restartInterval = .never
    worker.reportsReadiness = true
    worker.stopGracePeriod = .seconds(10)
    return worker
}

/// A supervisor whose database is `server`.
func withDatabaseSupervisor(
    _ server: DatabaseServer,
    configure: (inout WorkerSupervisor.Configuration) -> Void = { _ in },
    _ body: (WorkerSupervisor) async throws -> Void
) async throws {
    var configuration = WorkerSupervisor.Configuration()
    configuration.database = server
    configuration.logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
    configure(&configuration)
    try await withWorkerSupervisor(configuration: configuration) { supervisor in
        try await body(supervisor)
    }
}

/// Waits until `handle`'s worker stopped for good and returns the last `ERROR=` line it wrote.
func reportedError(_ handle: BackgroundWorkerHandle) async throws -> String {
    _ = try await handle.waitForShutdown()
    return await handle.lastReportedError ?? "(none)"
}

/// Waits, up to `seconds`, until `condition` holds; checks it every 50 ms (the server has no event to await).
func eventually(within seconds: Int = 20, _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try condition()
}

/// Collects log messages and lets a test await one.
final class LogCollector: Sendable {
    private struct Waiter {
        let id: Int
        let text: String
        let count: Int
        let continuation: CheckedContinuation<Bool, Never>
    }

    private let state = Mutex<(messages: [String], waiters: [Waiter], nextID: Int)>(([], [], 0))

    var logger: Logger {
        Logger(label: "collector") { _ in CollectingHandler(collector: self) }
    }

    func add(_ message: String) {
        let ready = self.state.withLock { state -> [Waiter] in
            state.messages.append(message)
            let messages = state.messages
            func satisfied(_ waiter: Waiter) -> Bool {
                message.contains(waiter.text) && messages.count { $0.contains(waiter.text) } >= waiter.count
            }
            let matched = state.waiters.filter(satisfied)
            state.waiters.removeAll(where: satisfied)
            return matched
        }
        ready.forEach { $0.continuation.resume(returning: true) }
    }

    /// Returns true once `count` messages containing `text` were logged, false if the task was cancelled first
    /// (a test's time limit cancels it).
    @discardableResult
    func waitFor(_ text: String, count: Int = 1) async -> Bool {
        let id = self.state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = self.state.withLock { state -> Bool in
                    if state.messages.count(where: { $0.contains(text) }) >= count { return true }
                    if Task.isCancelled { return true }
                    state.waiters.append(Waiter(id: id, text: text, count: count, continuation: continuation))
                    return false
                }
                if now { continuation.resume(returning: self.occurrences(of: text) >= count) }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(returning: false)
        }
    }

    private func occurrences(of text: String) -> Int {
        self.state.withLock { $0.messages.count { $0.contains(text) } }
    }
}

struct CollectingHandler: LogHandler {
    let collector: LogCollector
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        self.collector.add("\(event.message)")
    }
}
