import BackgroundWorkerRuntime

#if canImport(Glibc)
import Glibc
#endif

/// A background worker as a function in a shared library, run by `bgworker-host` (PostgreSQL's
/// `bgw_library_name` + `bgw_function_name`). Register it with
/// `.library("libExampleLibraryWorker.so", function: "library_worker_main")`.
///
/// It checks that `BackgroundWorker.current` works inside the library and carries its main argument and extra
/// bytes, reports ready, and works until SIGTERM (the host exits 1 at once) or the supervisor's death.
@_cdecl("library_worker_main")
public func libraryWorkerMain(_ mainArgument: UInt64) {
    guard let current = try? BackgroundWorker.current, current.mainArgument == mainArgument else {
        exit(3)
    }
    // The test registers it with extra bytes "lib": anything else means the record did not arrive intact.
    guard current.extra == Array("lib".utf8) else { exit(4) }
    do {
        try BackgroundWorkerRuntime.reportReady()
    } catch {
        exit(5)
    }
    while true {
        sleep(1)
    }
}
