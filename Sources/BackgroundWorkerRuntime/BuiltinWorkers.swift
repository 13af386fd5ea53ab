import BackgroundWorkerContract

/// Workers built into a supervisor's own binary (the entry point `.builtin(name)`).
///
/// The supervisor starts such a worker by executing its own binary again with the contract's marker
/// arguments (`--bgworker-builtin NAME`): a fresh process, never a `fork` without `exec` of a threaded one.
/// Call ``runIfRequested(_:)`` first thing in `main`:
///
/// ```swift
/// @main struct App {
///     static func main() async throws {
///         await BuiltinWorkers.runIfRequested([
///             "compactor": { worker in try worker.reportReady(); /* ... */ },
///         ])
///         // the supervisor's own main follows
///     }
/// }
/// ```
public enum BuiltinWorkers {
    /// The exit code when the marker names a built-in this binary does not have.
    public static let unknownBuiltinExitCode: Int32 = 1

    /// If this process was started as a built-in worker, runs the named closure under
    /// ``BackgroundWorkerRuntime`` and never returns; otherwise returns at once.
    public static func runIfRequested(_ workers: [String: @Sendable (WorkerContext) async throws -> Void]) async {
        guard let name = Self.requestedName else { return }
        Self.announceHandOver()
        guard let body = workers[name] else {
            let known = workers.keys.sorted().joined(separator: ", ")
            BackgroundWorkerRuntime.printError("no built-in worker named '\(name)' in this binary (it has: \(known))")
            exit(Self.unknownBuiltinExitCode)
        }
        await BackgroundWorkerRuntime.run(body)
    }

    /// The built-in this process was started as (`--bgworker-builtin NAME`), or nil.
    public static var requestedName: String? {
        let arguments = CommandLine.arguments
        guard arguments.count >= 3, arguments[1] == WorkerProcessContract.builtinMarker else { return nil }
        return arguments[2]
    }

    /// Tells the supervisor this binary hands over to its built-in: without this line it knows the binary ran
    /// its own main.
    static func announceHandOver() {
        if let identity = try? BackgroundWorker.current {
            BackgroundWorkerRuntime.writeStatusLine(WorkerProcessContract.builtinLine, identity)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
