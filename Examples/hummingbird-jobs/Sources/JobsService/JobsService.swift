import BackgroundWorkers
import Hummingbird

/// Where the service's workers run: a supervisor in this process, or one in another process (`bgworkerd`)
/// reached through its control socket. The job code is the same for both: it awaits a
/// `WorkerHandleProtocol`.
public enum JobBackend: Sendable {
    /// A `WorkerSupervisor` of this process.
    case inProcess(WorkerSupervisor)
    /// A supervisor in another process.
    case remote(SupervisorClient)

    func register(_ worker: BackgroundWorker) async throws -> any WorkerHandleProtocol {
        switch self {
        case .inProcess(let supervisor): try await supervisor.register(worker)
        case .remote(let client): try await client.register(worker, notify: false, linked: true)
        }
    }

    func list() async throws -> [WorkerInfo] {
        switch self {
        case .inProcess(let supervisor): await supervisor.list()
        case .remote(let client): try await client.list()
        }
    }
}

/// What `POST /jobs/{kind}` answers once the job's worker has exited.
public struct JobResult: ResponseCodable, Equatable {
    /// The worker's name.
    public var name: String
    /// The pid it ran as; nil when it had already ended when its start was awaited (PostgreSQL's
    /// `BGWH_STOPPED`: a quick job seen through a socket, whose round trips take longer than the job).
    public var pid: Int32?
    /// How it ended, for people ("unregistered: exited with code 0").
    public var outcome: String
    /// Its exit code, when it exited (not killed by a signal).
    public var exitCode: Int32?
}

/// The jobs the service runs: fixed kinds, never a command from the request (a service that ran what an HTTP
/// client sent would be a remote shell).
enum JobKind: String {
    /// `/bin/sleep N` (N from `?seconds=`, 0...60, default 1).
    case sleep
    /// A job that fails: exits with code 3.
    case fail

    func worker(seconds: Int, number: Int) -> BackgroundWorker {
        let entryPoint: BackgroundWorker.EntryPoint =
            switch self {
            case .sleep: .executable("/bin/sleep", arguments: ["\(seconds)"])
            case .fail: .executable("/bin/sh", arguments: ["-c", "exit 3"])
            }
        var worker = BackgroundWorker(name: "job-\(self.rawValue)-\(number)", entryPoint: entryPoint)
        worker.restartInterval = .never
        return worker
    }
}

/// Runs one job: registers its worker, awaits its start and its exit, and says how it ended. The same code
/// for a local and a remote handle.
func run(_ worker: BackgroundWorker, on backend: JobBackend) async throws -> JobResult {
    let handle = try await backend.register(worker)
    var pid: Int32?
    do {
        pid = try await handle.waitForStartup()
    } catch let error as SupervisorError where error.code == .workerStopped {
        pid = nil  // started and already done: its end is below
    }
    _ = try await handle.waitForShutdown()
    let detail = try await handle.detail
    var exitCode: Int32?
    if case .unregistered(_, .exited(let code)?) = detail { exitCode = code }
    return JobResult(name: worker.name, pid: pid, outcome: "\(detail)", exitCode: exitCode)
}

/// Numbers jobs.
actor JobCounter {
    private var next = 0
    func take() -> Int {
        self.next += 1
        return self.next
    }
}

/// The service's routes: `POST /jobs/sleep?seconds=N`, `POST /jobs/fail`, and `GET /workers`.
public func makeRouter(backend: JobBackend) -> Router<BasicRequestContext> {
    let router = Router()
    let counter = JobCounter()
    router.post("jobs/:kind") { request, context -> JobResult in
        let name = try context.parameters.require("kind")
        guard let kind = JobKind(rawValue: name) else {
            throw HTTPError(.notFound, message: "no job kind '\(name)'; the kinds are sleep and fail")
        }
        let seconds = request.uri.queryParameters.get("seconds", as: Int.self) ?? 1
        guard (0...60).contains(seconds) else {
            throw HTTPError(.badRequest, message: "seconds \(seconds) is outside 0...60")
        }
        do {
            return try await run(kind.worker(seconds: seconds, number: await counter.take()), on: backend)
        } catch let error as SupervisorError {
            throw HTTPError(error.code == .noFreeSlot ? .serviceUnavailable : .internalServerError, message: error.message)
        }
    }
    router.get("workers") { _, _ -> [WorkerInfo] in
        try await backend.list()
    }
    return router
}

extension WorkerInfo: @retroactive ResponseEncodable {}
