import BackgroundWorkers

/// Fans work out over eight worker processes in a throwing task group: registers them, awaits their startup
/// and their results, and terminates the rest as soon as one fails.
///
/// Worker 5 fails (exit 2), so the others, still working, are terminated: no orphan, no hang.
@main
struct TaskGroupExample {
    struct WorkerFailed: Error, CustomStringConvertible {
        let name: String
        let detail: WorkerStatusDetail
        var description: String { "\(self.name) failed: \(self.detail)" }
    }

    static func main() async throws {
        try await withWorkerSupervisor { supervisor in
            var handles: [BackgroundWorkerHandle] = []
            for index in 0..<8 {
                // Worker 5 fails after 0.3 s; the others would need 5 s.
                let script = index == 5 ? "sleep 0.3; exit 2" : "sleep 5; exit 0"
                var worker = BackgroundWorker(name: "part-\(index)", entryPoint: .executable("/bin/sh", arguments: ["-c", script]))
                worker.restartInterval = .never
                worker.mainArgument = UInt64(index)
                handles.append(try await supervisor.register(worker))
            }
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (index, handle) in handles.enumerated() {
                        group.addTask {
                            let pid = try await handle.waitForStartup()
                            print("part-\(index) started, pid \(pid)")
                            _ = try await handle.waitForShutdown()
                            let detail = await handle.detail
                            guard case .unregistered(.completed, _) = detail else {
                                throw WorkerFailed(name: "part-\(index)", detail: detail)
                            }
                            print("part-\(index) done")
                        }
                    }
                    // The first failure throws here at once (waitForAll would wait for every part first); leaving
                    // the group cancels the other parts' waits, which end at once.
                    while try await group.next() != nil {}
                }
            } catch {
                print("\(error); terminating the others")
                for handle in handles { await handle.terminate() }
                for handle in handles { _ = try await handle.waitForShutdown() }
                print("every part stopped: \(await supervisor.slotsInUse) slots in use")
            }
        }
    }
}
