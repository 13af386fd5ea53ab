@_exported import BackgroundWorkerContract
import CWorkerSupport

#if canImport(Glibc)
import Glibc
#endif

extension BackgroundWorker {
    /// This worker's registration as its supervisor passed it: PostgreSQL's `MyBgworkerEntry`.
    ///
    /// Read from the worker process contract's variables once, at first use.
    /// - Throws: ``WorkerRuntimeError`` with ``WorkerRuntimeError/Code/notStartedBySupervisor`` naming the
    ///   missing or malformed variable when this process was not started by a supervisor.
    public static var current: WorkerProcessContract.Identity {
        get throws(WorkerRuntimeError) {
            try currentIdentity.get()
        }
    }
}

/// This process's identity or why it has none; not a `Result`, whose metadata would cost a protocol
/// conformance lookup at start.
enum CurrentIdentity: Sendable {
    case identity(WorkerProcessContract.Identity)
    case failure(WorkerRuntimeError)

    func get() throws(WorkerRuntimeError) -> WorkerProcessContract.Identity {
        switch self {
        case .identity(let identity): identity
        case .failure(let error): throw error
        }
    }
}

/// Read once per process (Swift initialises globals lazily and thread-safely), variable by variable with
/// `getenv`: no dictionary of the environment is built.
let currentIdentity: CurrentIdentity = {
    do {
        return .identity(
            try WorkerProcessContract.Identity(variable: { name in getenv(name).map { String(cString: $0) } })
        )
    } catch {
        return .failure(WorkerRuntimeError(.notStartedBySupervisor, "this process was not started by a supervisor: \(error)"))
    }
}()
