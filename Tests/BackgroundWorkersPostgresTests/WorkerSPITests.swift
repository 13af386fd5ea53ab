import BackgroundWorkers
import Foundation
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// A program's standard output, line by line, as it comes.
final class ProgramLines: Sendable {
    let loop: UVEventLoop
    let process: UVChildProcess
    private let lines: AsyncStream<String>
    private let seen = LogCollector()

    init(_ executable: String, _ arguments: [String]) async throws {
        self.loop = try UVEventLoop(name: "program")
        let output = try UVPipePair()
        var options = UVSpawnOptions(executable: executable, arguments: arguments, environment: ["PATH": "/usr/bin:/bin"], detached: true)
        options.descriptors = [0: 0, 1: output.writeEnd]
        self.process = try await self.loop.spawnProcess(options)
        output.closeWriteEnd()
        let (lines, continuation) = AsyncStream<String>.makeStream()
        self.lines = lines
        let loop = self.loop
        let seen = self.seen
        try await loop.submit {
            _ = try loop.readLines(from: output.readEnd) { line in
                seen.add(line)
                continuation.yield(line)
            } onEnd: { _ in continuation.finish() }
        }
    }

    /// Returns once a line containing `text` was printed (at any time since the start); false when cancelled.
    @discardableResult
    func waitFor(_ text: String, count: Int = 1) async -> Bool {
        await self.seen.waitFor(text, count: count)
    }

    func close() async throws {
        try await self.loop.shutdown()
    }
}

@Suite(.sharedCluster, .timeLimit(.minutes(2)))
struct WorkerSPITests {
    /// Writes `settings` to `config` and starts the example with two static workers and `launch` launched ones.
    func startWorkerSPI(_ cluster: PostgresCluster, config: String, settings: String, launch: Int) async throws -> ProgramLines {
        try settings.write(toFile: config, atomically: true, encoding: .utf8)
        return try await ProgramLines(
            buildDirectory + "/worker-spi",
            ["--socket-dir", cluster.socketDirectory, "--port", String(cluster.port), "--user", "postgres",
             "--workers", "2", "--launch", String(launch), "--config", config]
        )
    }

    @Test("worker_spi: static and launched workers fold their counters, SIGHUP changes the naptime, a SQL error restarts the worker")
    func workerSPI() async throws {
        let cluster = try cluster
        let config = cluster.directory + "/worker_spi.conf"
        let program = try await self.startWorkerSPI(cluster, config: config, settings: "naptime = 0.2\ndatabase = bgw_test\n", launch: 1)
        do {
            // Static workers after the server finished recovery, then a launched one with waitForStartup().
            #expect(await program.waitFor("finished recovery"))
            #expect(await program.waitFor("worker_spi 3 launched with pid"))
            for index in 1...3 { #expect(await program.waitFor("worker_spi \(index): schema\(index).counted initialized")) }
            func total(_ index: Int) throws -> String {
                try cluster.sql("SELECT value FROM schema\(index).counted WHERE type = 'total'", database: "bgw_test")
            }

            // Deltas are folded into the total, in one transaction.
            try cluster.sql("INSERT INTO schema1.counted VALUES ('delta', 5), ('delta', 7)", database: "bgw_test")
            #expect(await program.waitFor("count in schema1.counted is now 12"))
            #expect(try total(1) == "12")
            #expect(try cluster.sql("SELECT count(*) FROM schema1.counted WHERE type = 'delta'", database: "bgw_test") == "0")

            // SIGHUP: a naptime of an hour, then back to 0.2 s; the fold after the second reload proves it was re-read.
            try "naptime = 3600\ndatabase = bgw_test\n".write(toFile: config, atomically: true, encoding: .utf8)
            kill(program.process.pid, SIGHUP)
            #expect(await program.waitFor("worker_spi 2: reloaded, naptime is now 3600.0 s"))
            try cluster.sql("INSERT INTO schema2.counted VALUES ('delta', 40)", database: "bgw_test")
            try "naptime = 0.2\ndatabase = bgw_test\n".write(toFile: config, atomically: true, encoding: .utf8)
            kill(program.process.pid, SIGHUP)
            #expect(await program.waitFor("worker_spi 2: reloaded, naptime is now 0.2 s"))
            #expect(await program.waitFor("count in schema2.counted is now 40"))

            // A SQL error: reported through ERROR=, kept by the supervisor, exit 1, restarted after its interval.
            try cluster.sql("DROP TABLE schema3.counted", database: "bgw_test")
            #expect(await program.waitFor("worker_spi 3 reported ERROR: worker_spi 3: folding the deltas of schema3.counted failed"))
            #expect(await program.waitFor("worker_spi 3 exited with code 1"))
            #expect(await program.waitFor("worker_spi 3 restarts in 2.0 seconds"))
            // Restarted: it makes its table again and folds as before.
            #expect(await program.waitFor("worker_spi 3: schema3.counted initialized", count: 2))
            try cluster.sql("INSERT INTO schema3.counted VALUES ('delta', 3)", database: "bgw_test")
            #expect(await program.waitFor("count in schema3.counted is now 3"))
        } catch {
            Issue.record(error)
        }
        kill(program.process.pid, SIGTERM)
        let status = try await program.process.waitForExit()
        #expect(status == .exited(0))
        #expect(await program.waitFor("worker-spi: stopped"))
        try await program.close()
    }

    @Test("a supervisor SIGKILLed: its database workers are gone and so are their server sessions")
    func supervisorKilled() async throws {
        let cluster = try cluster
        let program = try await self.startWorkerSPI(
            cluster, config: cluster.directory + "/worker_spi_killed.conf", settings: "naptime = 3600\ndatabase = postgres\n", launch: 0
        )
        for index in 1...2 { #expect(await program.waitFor("worker_spi \(index): schema\(index).counted initialized")) }
        let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'worker_spi %' AND datname = 'postgres'"
        #expect(try cluster.sql(sessions) == "2")
        kill(program.process.pid, SIGKILL)
        #expect(try await program.process.waitForExit() == .signaled(.kill))
        // The guardian kills the workers' process groups; the kernel closes their sockets and the server ends
        // their backends.
        #expect(try await eventually { try cluster.sql(sessions) == "0" })
        try await program.close()
    }
}
