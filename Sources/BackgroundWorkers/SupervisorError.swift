import BackgroundWorkerContract
import UVConcurrency

/// The one error type of `BackgroundWorkers`: what was refused or what ended a wait, with a sentence a person
/// can act on, and the error underneath when another one caused it. A worker's non-zero exit is a result
/// (``WorkerStatusDetail``), never this error.
///
/// Two errors are equal when code, message, registration error and detail are; the underlying error is not
/// compared.
public struct SupervisorError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What happened. A struct over a private enum, so codes can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case invalidRegistration
            case noFreeSlot
            case shuttingDown
            case notifyPIDRefused
            case workerStopped
            case supervisorStopped
            case notReportingReadiness
            case alreadyRunning
            case startupFailed
            case loopFailed
            case sharedMemoryFailed
            case invalidConfiguration
            case controlFailed
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The registration broke a rule; ``SupervisorError/registrationError`` says which.
        public static let invalidRegistration = Code(.invalidRegistration)
        /// Every slot is taken (`max_worker_processes`); PostgreSQL returns `false` here.
        public static let noFreeSlot = Code(.noFreeSlot)
        /// The supervisor is shutting down or stopped and takes no new registrations.
        public static let shuttingDown = Code(.shuttingDown)
        /// The notify pid is neither the supervisor's own process nor one of its live workers.
        public static let notifyPIDRefused = Code(.notifyPIDRefused)
        /// The worker stopped (or was never started) before the awaited state; ``SupervisorError/detail`` says how.
        public static let workerStopped = Code(.workerStopped)
        /// The supervisor stopped before the awaited state.
        public static let supervisorStopped = Code(.supervisorStopped)
        /// `waitForReady()` on a worker registered without `reportsReadiness`.
        public static let notReportingReadiness = Code(.notReportingReadiness)
        /// `run()` was called on a supervisor that already ran.
        public static let alreadyRunning = Code(.alreadyRunning)
        /// The startup step threw; the supervisor shut down.
        public static let startupFailed = Code(.startupFailed)
        /// The event loop could not be created or closed.
        public static let loopFailed = Code(.loopFailed)
        /// The shared-memory segment could not be created.
        public static let sharedMemoryFailed = Code(.sharedMemoryFailed)
        /// A setting of the supervisor's configuration is invalid (``SupervisorError/registrationError`` names
        /// the field), or a resource it asks for could not be created.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// Talking to a supervisor over its control socket failed: it cannot be reached, the connection ended,
        /// or the server refused the request for a reason with no code of its own here (``SupervisorError/underlying``
        /// is then the `ControlError`, whose code says which).
        public static let controlFailed = Code(.controlFailed)

        /// The code's name.
        public var description: String {
            switch self.base {
            case .invalidRegistration: "invalidRegistration"
            case .noFreeSlot: "noFreeSlot"
            case .shuttingDown: "shuttingDown"
            case .notifyPIDRefused: "notifyPIDRefused"
            case .workerStopped: "workerStopped"
            case .supervisorStopped: "supervisorStopped"
            case .notReportingReadiness: "notReportingReadiness"
            case .alreadyRunning: "alreadyRunning"
            case .startupFailed: "startupFailed"
            case .loopFailed: "loopFailed"
            case .sharedMemoryFailed: "sharedMemoryFailed"
            case .invalidConfiguration: "invalidConfiguration"
            case .controlFailed: "controlFailed"
            }
        }
    }

    /// What happened.
    public let code: Code
    /// A sentence naming the values involved and what to do.
    public let message: String
    /// For ``Code/invalidRegistration``: the broken rule.
    public let registrationError: RegistrationError?
    /// For ``Code/workerStopped`` and ``Code/supervisorStopped``: how the worker stopped.
    public let detail: WorkerStatusDetail?
    /// The error that caused this one: the startup step's for ``Code/startupFailed``, a ``UVConcurrency/UVError``
    /// for ``Code/loopFailed``.
    public let underlying: (any Error)?

    init(
        _ code: Code,
        _ message: String,
        registrationError: RegistrationError? = nil,
        detail: WorkerStatusDetail? = nil,
        underlying: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.registrationError = registrationError
        self.detail = detail
        self.underlying = underlying
    }

    /// `code: message`.
    public var description: String { "\(self.code): \(self.message)" }

    /// Equal when code, message, registration error and detail are.
    public static func == (lhs: SupervisorError, rhs: SupervisorError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.registrationError == rhs.registrationError
            && lhs.detail == rhs.detail
    }

    /// Hashes code, message, registration error and detail.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.code)
        hasher.combine(self.message)
        hasher.combine(self.registrationError)
        hasher.combine(self.detail)
    }
}
