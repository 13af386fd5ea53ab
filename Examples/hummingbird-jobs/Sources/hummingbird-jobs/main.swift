import BackgroundWorkers
import Hummingbird
import JobsService

// hummingbird-jobs [--port 8080] [--socket PATH]: with --socket, jobs run in bgworkerd; without, in a
// supervisor of this process.
let arguments = CommandLine.arguments
func option(_ name: String) -> String? {
    arguments.firstIndex(of: name).flatMap { arguments.index(after: $0) < arguments.endIndex ? arguments[arguments.index(after: $0)] : nil }
}
let port = option("--port").flatMap(Int.init) ?? 8080

if let socket = option("--socket") {
    let client = try await SupervisorClient.connect(path: socket)
    let app = Application(router: makeRouter(backend: .remote(client)), configuration: .init(address: .hostname("127.0.0.1", port: port)))
    try await app.runService()
    await client.close()
} else {
    try await withWorkerSupervisor { supervisor in
        let app = Application(router: makeRouter(backend: .inProcess(supervisor)), configuration: .init(address: .hostname("127.0.0.1", port: port)))
        try await app.runService()
    }
}
