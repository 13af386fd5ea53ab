/// What a worker process receives from its supervisor: environment variables and inherited descriptors.
/// A worker needs no Swift to follow it.
///
/// | variable | value |
/// |---|---|
/// | `BGW_NAME`, `BGW_TYPE` | the registration's name and type |
/// | `BGW_SLOT`, `BGW_GENERATION` | the worker's slot and the slot's generation (its handle) |
/// | `BGW_MAIN_ARG` | the 64-bit main argument, in decimal |
/// | `BGW_EXTRA` | the extra bytes, in lowercase hexadecimal (empty for none) |
/// | `BGW_FLAGS` | the flags' bits, in decimal (1: shared memory, 2: database connection) |
/// | `BGW_SUPERVISOR_PID` | the supervisor's process id |
/// | `BGW_ALIVE_FD` | descriptor 3: the read end of the supervisor-alive pipe. Nothing is ever written to it; it reaches end of file when the supervisor dies (PostgreSQL's postmaster-death pipe) |
/// | `BGW_READY_FD` | descriptor 4, for workers registered with `reportsReadiness`: the write end of the readiness pipe. Write the line `READY=1` once ready; a line `ERROR=text` says why it fails |
/// | `BGW_STATUS_FD` | descriptor 4 whenever it is open: for workers with `reportsReadiness` and for those the supervisor runs through the worker runtime itself (library and built-in entry points). `ERROR=text` lines on it are kept by the supervisor (`lastReportedError`); `READY=1` counts only with `reportsReadiness` |
/// | `BGW_SHM_FD`, `BGW_SHM_SIZE` | descriptor 5 and its size in bytes, for workers with the shared-memory flag when the supervisor has a segment: the supervisor's shared-memory segment (a memfd; `mmap` it `MAP_SHARED`). A crash reset replaces it with a new, zeroed one |
/// | `BGW_DB_*` | for workers with the database flag: where the PostgreSQL server is and the default role and database (``DatabaseServer`` lists them); a configured password comes as descriptor 6 (`BGW_DB_PASSWORD_FD`), never as a variable |
///
/// Exit codes: 0 means done (the worker is unregistered), 1 means restart after the interval, anything else
/// (or death by a signal) is a crash.
public enum WorkerProcessContract {
    /// Every variable of the contract starts with this; registrations may not set such variables themselves.
    public static let environmentPrefix = "BGW_"

    /// The descriptor number of the supervisor-alive pipe's read end in every worker.
    public static let aliveDescriptor: Int32 = 3
    /// The descriptor number of the readiness pipe's write end in workers that report readiness.
    public static let readinessDescriptor: Int32 = 4
    /// The first argument with which a supervisor re-executes its own binary for a built-in worker; the second
    /// is the built-in's name.
    public static let builtinMarker = "--bgworker-builtin"

    /// The descriptor number of the shared-memory segment in workers with the shared-memory flag.
    public static let sharedMemoryDescriptor: Int32 = 5
    /// The descriptor number of the database password (a sealed memfd) in database workers, when the supervisor's
    /// database server has a password.
    public static let databasePasswordDescriptor: Int32 = 6
    /// The line a worker writes to its readiness descriptor once it is ready.
    public static let readyLine = "READY=1"
    /// The prefix of a line a worker may write to its readiness (status) descriptor to say why it is failing; the
    /// supervisor keeps the last one (`BackgroundWorkerHandle.lastReportedError`).
    public static let errorLinePrefix = "ERROR="
    /// The status line with which a worker says it takes SIGUSR1 as a wake-up (it handles or ignores the
    /// signal, whose default action would end it): only then may another registration name it as its notify
    /// pid. Write it once the handler is installed.
    public static let notifyLine = "NOTIFY=1"
    /// The status line with which `BuiltinWorkers.runIfRequested` says it took over a process started for a
    /// built-in entry point. A built-in worker that exits without it ran its binary's own `main` instead.
    public static let builtinLine = "BUILTIN=1"
    /// The longest line the supervisor reads from a readiness descriptor; a longer one closes it.
    public static let maxReadinessLineLength = 1024

    /// The names of the contract's environment variables.
    public enum Variable {
        /// The registration's name.
        public static let name = "BGW_NAME"
        /// The registration's type.
        public static let type = "BGW_TYPE"
        /// The worker's slot.
        public static let slot = "BGW_SLOT"
        /// The slot's generation.
        public static let generation = "BGW_GENERATION"
        /// The main argument, in decimal.
        public static let mainArgument = "BGW_MAIN_ARG"
        /// The extra bytes, in hexadecimal.
        public static let extra = "BGW_EXTRA"
        /// The flags' bits, in decimal.
        public static let flags = "BGW_FLAGS"
        /// The supervisor's process id.
        public static let supervisorPID = "BGW_SUPERVISOR_PID"
        /// The supervisor-alive descriptor's number.
        public static let aliveDescriptor = "BGW_ALIVE_FD"
        /// The readiness descriptor's number, for workers that report readiness.
        public static let readinessDescriptor = "BGW_READY_FD"
        /// The status descriptor's number (descriptor 4), whenever the worker has it: for `ERROR=` lines.
        public static let statusDescriptor = "BGW_STATUS_FD"
        /// The shared-memory descriptor's number, for workers with the shared-memory flag.
        public static let sharedMemoryDescriptor = "BGW_SHM_FD"
        /// The shared-memory segment's size in bytes.
        public static let sharedMemorySize = "BGW_SHM_SIZE"
        /// The database server's Unix socket directory.
        public static let databaseSocketDirectory = "BGW_DB_SOCKET_DIR"
        /// The database server's host, for TCP.
        public static let databaseHost = "BGW_DB_HOST"
        /// The database server's port.
        public static let databasePort = "BGW_DB_PORT"
        /// `disable` or `require`.
        public static let databaseTLS = "BGW_DB_TLS"
        /// The PEM file of certificate authorities to trust for TLS, when set.
        public static let databaseTLSRootCertificates = "BGW_DB_TLS_ROOT_CERT"
        /// The default role.
        public static let databaseUser = "BGW_DB_USER"
        /// The maintenance database.
        public static let databaseName = "BGW_DB_NAME"
        /// The password descriptor's number, when a password is configured.
        public static let databasePasswordDescriptor = "BGW_DB_PASSWORD_FD"
    }

    /// A worker's identity as the contract carries it.
    public struct Identity: Sendable, Hashable {
        /// The registration's name.
        public var name: String
        /// The registration's type.
        public var type: String
        /// The worker's slot.
        public var slot: Int
        /// The slot's generation.
        public var generation: UInt64
        /// The main argument.
        public var mainArgument: UInt64
        /// The extra bytes.
        public var extra: [UInt8]
        /// The flags.
        public var flags: BackgroundWorker.Flags
        /// The supervisor's process id.
        public var supervisorPID: Int32
        /// The supervisor-alive descriptor.
        public var aliveDescriptor: Int32
        /// The readiness descriptor, when the worker reports readiness.
        public var readinessDescriptor: Int32?
        /// The status descriptor (the same descriptor 4), for `ERROR=` lines: present when the worker reports
        /// readiness or runs through the worker runtime by its entry point (library, built-in).
        public var statusDescriptor: Int32?
        /// The shared-memory descriptor and the segment's size, when the worker has one.
        public var sharedMemory: (descriptor: Int32, size: Int)?

        /// Equal when every field is.
        public static func == (lhs: Identity, rhs: Identity) -> Bool {
            lhs.name == rhs.name && lhs.type == rhs.type && lhs.slot == rhs.slot && lhs.generation == rhs.generation
                && lhs.mainArgument == rhs.mainArgument && lhs.extra == rhs.extra && lhs.flags == rhs.flags
                && lhs.supervisorPID == rhs.supervisorPID && lhs.aliveDescriptor == rhs.aliveDescriptor
                && lhs.readinessDescriptor == rhs.readinessDescriptor && lhs.statusDescriptor == rhs.statusDescriptor
                && lhs.sharedMemory?.descriptor == rhs.sharedMemory?.descriptor
                && lhs.sharedMemory?.size == rhs.sharedMemory?.size
        }

        /// Hashes the identifying fields.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(self.slot)
            hasher.combine(self.generation)
            hasher.combine(self.name)
        }

        /// Creates an identity.
        /// - Parameters:
        ///   - worker: The registration.
        ///   - slot: The worker's slot.
        ///   - generation: The slot's generation.
        ///   - supervisorPID: The supervisor's process id.
        ///   - reportsReadiness: Whether descriptor 4 is the readiness pipe (`BGW_READY_FD`).
        ///   - reportsStatus: Whether descriptor 4 is given as the status pipe for `ERROR=` lines even without
        ///     readiness (`BGW_STATUS_FD`; always with readiness).
        ///   - sharedMemorySize: The shared-memory segment's size, for a worker that gets descriptor 5.
        public init(
            worker: BackgroundWorker,
            slot: Int,
            generation: UInt64,
            supervisorPID: Int32,
            reportsReadiness: Bool,
            reportsStatus: Bool = false,
            sharedMemorySize: Int? = nil
        ) {
            self.name = worker.name
            self.type = worker.effectiveType
            self.slot = slot
            self.generation = generation
            self.mainArgument = worker.mainArgument
            self.extra = worker.extra
            self.flags = worker.flags
            self.supervisorPID = supervisorPID
            self.aliveDescriptor = WorkerProcessContract.aliveDescriptor
            self.readinessDescriptor = reportsReadiness ? WorkerProcessContract.readinessDescriptor : nil
            self.statusDescriptor = reportsReadiness || reportsStatus ? WorkerProcessContract.readinessDescriptor : nil
            self.sharedMemory = sharedMemorySize.map { (WorkerProcessContract.sharedMemoryDescriptor, $0) }
        }

        /// The contract's variables for this identity.
        public var environment: [String: String] {
            var result = [
                Variable.name: self.name,
                Variable.type: self.type,
                Variable.slot: String(self.slot),
                Variable.generation: String(self.generation),
                Variable.mainArgument: String(self.mainArgument),
                Variable.extra: Self.hex(self.extra),
                Variable.flags: String(self.flags.rawValue),
                Variable.supervisorPID: String(self.supervisorPID),
                Variable.aliveDescriptor: String(self.aliveDescriptor),
            ]
            if let readiness = self.readinessDescriptor {
                result[Variable.readinessDescriptor] = String(readiness)
            }
            if let status = self.statusDescriptor {
                result[Variable.statusDescriptor] = String(status)
            }
            if let sharedMemory = self.sharedMemory {
                result[Variable.sharedMemoryDescriptor] = String(sharedMemory.descriptor)
                result[Variable.sharedMemorySize] = String(sharedMemory.size)
            }
            return result
        }

        /// Reads an identity back from a worker's environment.
        /// - Throws: ``RegistrationError`` naming the variable that is missing or malformed.
        public init(environment: [String: String]) throws(RegistrationError) {
            try self.init(variable: { environment[$0] })
        }

        /// Reads an identity back through `variable`, which returns a contract variable's value or `nil` (a
        /// worker passes `getenv`, so that no dictionary of its environment is built at start).
        /// - Throws: ``RegistrationError`` naming the variable that is missing or malformed.
        public init(variable lookup: (String) -> String?) throws(RegistrationError) {
            func value(_ variable: String) throws(RegistrationError) -> String {
                guard let value = lookup(variable) else {
                    throw RegistrationError(
                        workerName: lookup(Variable.name) ?? "?",
                        field: variable,
                        value: "missing",
                        rule: "but a supervisor always sets it; was this process started by a supervisor?"
                    )
                }
                return value
            }
            func number<T: FixedWidthInteger>(_ variable: String, as: T.Type) throws(RegistrationError) -> T {
                let text = try value(variable)
                guard let number = Self.decimal(text, as: T.self) else {
                    throw RegistrationError(workerName: lookup(Variable.name) ?? "?", field: variable, value: "'\(text)'", rule: "which is not a number")
                }
                return number
            }
            self.name = try value(Variable.name)
            self.type = try value(Variable.type)
            self.slot = try number(Variable.slot, as: Int.self)
            self.generation = try number(Variable.generation, as: UInt64.self)
            self.mainArgument = try number(Variable.mainArgument, as: UInt64.self)
            let extraText = try value(Variable.extra)
            guard let extra = Self.bytes(fromHex: extraText) else {
                throw RegistrationError(workerName: self.name, field: Variable.extra, value: "'\(extraText)'", rule: "which is not hexadecimal")
            }
            self.extra = extra
            self.flags = BackgroundWorker.Flags(rawValue: try number(Variable.flags, as: Int32.self))
            self.supervisorPID = try number(Variable.supervisorPID, as: Int32.self)
            self.aliveDescriptor = try number(Variable.aliveDescriptor, as: Int32.self)
            self.readinessDescriptor =
                lookup(Variable.readinessDescriptor) == nil
                ? nil : try number(Variable.readinessDescriptor, as: Int32.self)
            self.statusDescriptor =
                lookup(Variable.statusDescriptor) == nil
                ? self.readinessDescriptor : try number(Variable.statusDescriptor, as: Int32.self)
            if lookup(Variable.sharedMemoryDescriptor) != nil {
                self.sharedMemory = (
                    try number(Variable.sharedMemoryDescriptor, as: Int32.self),
                    try number(Variable.sharedMemorySize, as: Int.self)
                )
            } else {
                self.sharedMemory = nil
            }
        }

        /// A decimal number with an optional leading minus sign, or nil (also on overflow). The contract's
        /// numbers are read at every worker's start: this loop over the UTF-8 bytes costs a worker less than
        /// the standard library's generic parser, whose code the first use pages in.
        static func decimal<T: FixedWidthInteger>(_ text: String, as: T.Type) -> T? {
            var utf8 = text.utf8[...]
            let negative = utf8.first == UInt8(ascii: "-")
            if negative {
                guard T.isSigned else { return nil }
                utf8 = utf8.dropFirst()
            }
            guard !utf8.isEmpty else { return nil }
            var value: T = 0
            for byte in utf8 {
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
                let digit = T(byte &- UInt8(ascii: "0"))
                let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
                guard !overflow1 && !overflow2 else { return nil }
                value = next
            }
            return value
        }

        static func hex(_ bytes: [UInt8]) -> String {
            let digits = Array("0123456789abcdef".utf8)
            var result = [UInt8]()
            result.reserveCapacity(bytes.count * 2)
            for byte in bytes {
                result.append(digits[Int(byte >> 4)])
                result.append(digits[Int(byte & 0x0f)])
            }
            return String(decoding: result, as: UTF8.self)
        }

        static func bytes(fromHex text: String) -> [UInt8]? {
            let utf8 = Array(text.utf8)
            guard utf8.count % 2 == 0 else { return nil }
            func nibble(_ c: UInt8) -> UInt8? {
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
                default: nil
                }
            }
            var result = [UInt8]()
            result.reserveCapacity(utf8.count / 2)
            var index = 0
            while index < utf8.count {
                guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
                result.append(high << 4 | low)
                index += 2
            }
            return result
        }
    }
}
