/// An error reply: a stable numeric code (JSON-RPC's own for malformed messages, positive ones for the
/// supervisor's refusals), its stable name, and a sentence naming the value involved.
public struct ControlError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error's code. Numbers and names never change meaning.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        /// The number sent as `error.code`.
        public let number: Int
        /// The name sent as `error.data.name`.
        public let name: String

        private init(_ number: Int, _ name: String) {
            self.number = number
            self.name = name
        }

        /// The line is not JSON (JSON-RPC -32700).
        public static let parseError = Code(-32700, "parseError")
        /// The JSON is not a request of this protocol: not an object, no `id`, wrong `jsonrpc`, or a first
        /// request other than `hello` (JSON-RPC -32600).
        public static let invalidRequest = Code(-32600, "invalidRequest")
        /// No such method (JSON-RPC -32601).
        public static let methodNotFound = Code(-32601, "methodNotFound")
        /// The parameters are missing, of the wrong type, or out of range; the message names the field
        /// (JSON-RPC -32602).
        public static let invalidParams = Code(-32602, "invalidParams")
        /// The line is longer than ``ControlProtocol/maxMessageLength``; the connection is closed.
        public static let messageTooLong = Code(-32001, "messageTooLong")
        /// `hello` named a protocol version the server does not speak.
        public static let unsupportedVersion = Code(-32002, "unsupportedVersion")
        /// The registration broke a rule; the message names the field.
        public static let invalidRegistration = Code(1, "invalidRegistration")
        /// Every slot is taken (and no slot came free within `waitForSlot`).
        public static let noFreeSlot = Code(2, "noFreeSlot")
        /// The supervisor is shutting down.
        public static let shuttingDown = Code(3, "shuttingDown")
        /// The notify pid was refused.
        public static let notifyPIDRefused = Code(4, "notifyPIDRefused")
        /// The worker stopped before the awaited state.
        public static let workerStopped = Code(5, "workerStopped")
        /// The supervisor stopped before the awaited state.
        public static let supervisorStopped = Code(6, "supervisorStopped")
        /// `wait` until `ready` on a worker that does not report readiness.
        public static let notReportingReadiness = Code(7, "notReportingReadiness")
        /// No worker matches the reference.
        public static let unknownWorker = Code(8, "unknownWorker")
        /// The wait's timeout passed first.
        public static let timedOut = Code(9, "timedOut")
        /// A limit of the server was reached (connections, registrations per client); the message says which.
        public static let limitReached = Code(10, "limitReached")
        /// The peer's user is neither the server's, root, nor in the group the server allows; sent before the
        /// connection is closed, without reading anything from it.
        public static let permissionDenied = Code(11, "permissionDenied")
        /// The request was cancelled by a `cancel` request before it was answered (LSP's -32800).
        public static let requestCancelled = Code(-32800, "requestCancelled")
        /// The server failed in a way that is not the request's fault (JSON-RPC -32603).
        public static let internalError = Code(-32603, "internalError")

        /// Every code, for lookups by number.
        public static let all: [Code] = [
            .parseError, .invalidRequest, .methodNotFound, .invalidParams, .messageTooLong, .unsupportedVersion,
            .invalidRegistration, .noFreeSlot, .shuttingDown, .notifyPIDRefused, .workerStopped, .supervisorStopped,
            .notReportingReadiness, .unknownWorker, .timedOut, .limitReached, .permissionDenied, .internalError, .requestCancelled,
        ]

        /// The code with this number, if it is one.
        public init?(number: Int) {
            guard let code = Self.all.first(where: { $0.number == number }) else { return nil }
            self = code
        }

        /// The name.
        public var description: String { self.name }
    }

    /// What went wrong.
    public let code: Code
    /// A sentence naming the value involved.
    public let message: String
    /// The state of the worker the error is about, when it is about one (a wait's `workerStopped` or
    /// `supervisorStopped`: how the worker stopped). Sent as `error.data.worker`.
    public let worker: WorkerInfo?

    /// Creates an error.
    public init(_ code: Code, _ message: String, worker: WorkerInfo? = nil) {
        self.code = code
        self.message = message
        self.worker = worker
    }

    /// `name: message`.
    public var description: String { "\(self.code.name): \(self.message)" }
}
