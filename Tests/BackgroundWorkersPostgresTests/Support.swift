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

