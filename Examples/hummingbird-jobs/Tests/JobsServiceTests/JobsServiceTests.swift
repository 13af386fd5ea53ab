import BackgroundWorkers
import Foundation
import Hummingbird
import HummingbirdTesting
import JobsService
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The service against a supervisor in this process and against one reached over a control socket: the same
/// requests, the same answers, real worker processes.
@Suite("hummingbird-jobs: an async server awaiting workers", .serialized, .timeLimit(.minutes(2)))
struct JobsServiceTests {
    func exercise(_ backend: JobBackend) async throws {
        let app = Application(router: makeRouter(backend: backend))
        try await app.test(.router) { client in
            try await client.execute(uri: "/jobs/sleep?seconds=0", method: .post) { response in
                #expect(response.status == .ok)
                let result = try JSONDecoder().decode(JobResult.self, from: Data(String(buffer: response.body).utf8))
                #expect(result.exitCode == 0 && result.pid != 0 && result.outcome.contains("exited with code 0"), "\(result)")
            }
            try await client.execute(uri: "/jobs/fail", method: .post) { response in
                let result = try JSONDecoder().decode(JobResult.self, from: Data(String(buffer: response.body).utf8))
                #expect(result.exitCode == 3, "\(result)")
            }
            try await client.execute(uri: "/jobs/rm-rf", method: .post) { response in
                #expect(response.status == .notFound)
            }
            // A job still running shows in /workers.
            async let long: Void = client.execute(uri: "/jobs/sleep?seconds=2", method: .post) { response in
                #expect(response.status == .ok)
            }
            var listed: [WorkerInfo] = []
            for _ in 0..<200 where listed.isEmpty {
                try await client.execute(uri: "/workers", method: .get) { response in
                    listed = try JSONDecoder().decode([WorkerInfo].self, from: Data(String(buffer: response.body).utf8))
                }
                if listed.isEmpty { await Task.yield() }
            }
            #expect(listed.first?.name.hasPrefix("job-sleep-") == true, "\(listed)")
            _ = try await long
        }
    }

    @Test("in process")
    func inProcess() async throws {
        try await withWorkerSupervisor { supervisor in
            try await self.exercise(.inProcess(supervisor))
        }
    }

    @Test("through a control socket, as with bgworkerd")
    func remote() async throws {
        var template = Array("/tmp/bgw-hb-XXXXXX".utf8CString)
        let folder = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { rmdir(folder) }
        try await withWorkerSupervisor { supervisor in
            try await supervisor.serveControlSocket(ControlSocketConfiguration(path: "\(folder)/control.sock"))
            let client = try await SupervisorClient.connect(path: "\(folder)/control.sock")
            try await self.exercise(.remote(client))
            await client.close()
        }
    }
}
