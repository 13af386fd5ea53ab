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

/// Read once per process (Swift initialises globals lazily and thread-safely).
let currentIdentity: Result<WorkerProcessContract.Identity, WorkerRuntimeError> = {
    var environment: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if text.hasPrefix(WorkerProcessContract.environmentPrefix), let equals = text.firstIndex(of: "=") {
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    do {
        return .success(try WorkerProcessContract.Identity(environment: environment))
    } catch {
        return .failure(WorkerRuntimeError(.notStartedBySupervisor, "this process was not started by a supervisor: \(error)"))
    }
}()
