import BackgroundWorkerContract

/// The one error type of the worker runtime: what went wrong, in a sentence a worker author can act on.
public struct WorkerRuntimeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong. A struct over a private enum, so that codes can be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case notStartedBySupervisor
            case notReportingReadiness
            case readinessFailed
            case runtimeFailed
            case noSharedMemory
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The process lacks the worker contract's variables: it was not started by a supervisor.
        public static let notStartedBySupervisor = Code(.notStartedBySupervisor)
        /// `reportReady()` in a worker registered without `reportsReadiness`.
        public static let notReportingReadiness = Code(.notReportingReadiness)
        /// Writing to the readiness descriptor failed.
        public static let readinessFailed = Code(.readinessFailed)
        /// The runtime's signal and supervisor watcher could not be set up.
        public static let runtimeFailed = Code(.runtimeFailed)
        /// `sharedMemory()` in a worker without the shared-memory flag, or whose supervisor has no segment.
        public static let noSharedMemory = Code(.noSharedMemory)

        /// The code's name.
        public var description: String {
            switch self.base {
            case .notStartedBySupervisor: "notStartedBySupervisor"
            case .notReportingReadiness: "notReportingReadiness"
            case .readinessFailed: "readinessFailed"
            case .runtimeFailed: "runtimeFailed"
            case .noSharedMemory: "noSharedMemory"
            }
        }
    }

    /// What went wrong.
    public let code: Code
    /// A sentence naming the values involved.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(self.code): \(self.message)" }
}
