import Foundation
import Testing
import UVConcurrency

extension UVConcurrencyTests {
    @Suite("Coexistence with Foundation's Process")
    struct FoundationCoexistenceTests {
        @Test("Foundation's Process and uv_spawn children in one process each see their own exits")
        func foundationProcessAndLibuvCoexist() async throws {
            try await withLoop { loop async throws in
                async let foundationStatuses: [Int32] = withCheckedContinuation { done in
                    // waitUntilExit blocks: give it a thread of its own rather than a Swift executor thread.
                    Thread.detach {
                        var statuses: [Int32] = []
                        for _ in 0..<20 {
                            let process = Process()
                            process.executableURL = URL(fileURLWithPath: "/bin/sh")
                            process.arguments = ["-c", "exit 3"]
                            do {
                                try process.run()
                                process.waitUntilExit()
                                statuses.append(process.terminationStatus)
                            } catch {
                                statuses.append(-1)
                            }
                        }
                        done.resume(returning: statuses)
                    }
                }
                var ours: [UVExitStatus] = []
                for _ in 0..<200 {
                    ours.append(try await run(loop, UVSpawnOptions(executable: "/bin/sh", arguments: ["-c", "exit 4"])))
                }
                #expect(ours == Array(repeating: .exited(4), count: 200))
                #expect(await foundationStatuses == Array(repeating: 3, count: 20))
                #expect(try await openHandles(loop) == 0)
            }
        }
    }
}
