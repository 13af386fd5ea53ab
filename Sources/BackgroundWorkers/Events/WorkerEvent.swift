// Re-exported: its one type is the element-agnostic sequence behind this module's public sequences, so that
// iterating them needs no import of its own.
@_exported import StreamSequences
import UVConcurrency

/// Something that happened to a worker, in the order the supervisor saw it.
public struct WorkerEvent: Sendable, Hashable, CustomStringConvertible {
    /// What happened.
    public enum Kind: Sendable, Hashable {
        /// Registered (statically before `run()`, or dynamically).
        case registered
        /// A process was started.
        case started(pid: Int32)
        /// The worker reported readiness.
        case ready(pid: Int32)
        /// The process ended.
        case exited(pid: Int32, status: UVExitStatus)
        /// A spawn failed.
        case spawnFailed(UVError)
        /// A restart will happen after this long.
        case restartScheduled(after: Duration)
        /// The restart budget ran out.
        case gaveUp
        /// The slot was freed.
        case unregistered(UnregisterReason)
        /// A crash of this worker reset every shared-memory worker.
        case crashReset
        /// The worker wrote an `ERROR=` line to its readiness descriptor.
        case reportedError(String)
    }

    /// The worker's handle.
    public let handle: BackgroundWorkerHandle
    /// The worker's name.
    public let name: String
    /// What happened.
    public let kind: Kind
    /// When the supervisor saw it (read once per event, only while someone subscribes to events).
    public let time: ContinuousClock.Instant

    /// Equal when handle, name and kind are: ``time`` only says when.
    public static func == (lhs: WorkerEvent, rhs: WorkerEvent) -> Bool {
        lhs.handle == rhs.handle && lhs.name == rhs.name && lhs.kind == rhs.kind
    }

    /// Hashes handle, name and kind.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.handle)
        hasher.combine(self.name)
        hasher.combine(self.kind)
    }

    /// `name [slot/generation]: kind`.
    public var description: String { "\(self.name) [\(self.handle.slot)/\(self.handle.generation)]: \(self.kind)" }
}

/// The supervisor's events as an `AsyncSequence` (from ``WorkerSupervisor/events()``).
///
/// **Buffering:** each sequence holds up to ``WorkerSupervisor/Configuration/eventBufferSize`` events
/// (1,024 by default) that its consumer has not taken yet; when it falls further behind, the oldest are
/// dropped first. A consumer that must see every event keeps up or uses a larger buffer. The sequence
/// finishes when the supervisor has stopped.
public typealias WorkerEvents = StreamSequence<WorkerEvent>
