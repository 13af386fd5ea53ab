import BackgroundWorkerRuntime

#if canImport(Glibc)
import Glibc
#endif

/// Runs a worker whose entry point is a function in a shared library (PostgreSQL's `bgw_library_name` and
/// `bgw_function_name`): loads the library with `dlopen`, resolves `void function(uint64_t main_arg)` with
/// `dlsym`, and calls it with the worker's main argument inside the worker runtime.
///
/// Usage (by the supervisor): bgworker-host LIBRARY FUNCTION
///
/// An unknown library or function exits 1 with an error naming both. SIGTERM exits 1 at once (a C function
/// cannot be cancelled): PostgreSQL's `bgworker_die`.
@main
struct BackgroundWorkerHost {
    struct HostError: Error, CustomStringConvertible {
        let description: String
    }

    typealias Entry = @convention(c) (UInt64) -> Void

    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count == 3 else {
            BackgroundWorkerRuntime.printError("usage: bgworker-host LIBRARY FUNCTION (started by a supervisor)")
            exit(2)
        }
        let (library, function) = (arguments[1], arguments[2])
        BackgroundWorkerRuntime.run(exitOnTerminate: true) { worker in
            guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
                throw HostError(description: "cannot load library '\(library)' for function '\(function)': \(Self.lastError())")
            }
            guard let symbol = dlsym(handle, function) else {
                throw HostError(description: "library '\(library)' has no function '\(function)': \(Self.lastError())")
            }
            let entry = unsafeBitCast(symbol, to: Entry.self)
            entry(worker.identity.mainArgument)
        }
    }

    static func lastError() -> String {
        guard let message = dlerror() else { return "unknown error" }
        return String(cString: message)
    }
}
