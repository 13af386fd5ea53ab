import BackgroundWorkers
import BackgroundWorkersPostgres
import Logging
import TestSupport
import Testing
import UVConcurrency

/// The startup step on a real server: down at start, a standby, a restart under a running worker. Each test has
/// a cluster of its own, since it stops or changes it.
@Suite(.timeLimit(.minutes(1)))
struct StartPhaseTests {
    /// A supervisor whose startup step is `PostgresStartup.waitForServer`, logging into `log`.
    func withStartupSupervisor(_ cluster: PostgresCluster, log: LogCollector, _ body: (WorkerSupervisor) async throws -> Void) async throws {
        let server = cluster.server
        let logger = log.logger
        try await withDatabaseSupervisor(server, configure: { configuration in
            configuration.startupStep = { progress in
                try await PostgresStartup.waitForServer(server, logger: logger, consistent: progress.reportConsistent)
            }
        }, body)
    }

    @Test("with the server down at start, the step waits and says why, the supervisor stays responsive, and workers start once it is up")
    func serverDownAtStart() async throws {
        try await PostgresCluster.withCluster(started: false) { cluster in
            let log = LogCollector()
            try await self.withStartupSupervisor(cluster, log: log) { supervisor in
                let consistent = try await supervisor.register(databaseWorker("consistent", ["by-name", "-", "-"]).starting(at: .consistentState))
                let finished = try await supervisor.register(databaseWorker("finished", ["by-name", "-", "-"]))
                #expect(await log.waitFor("waiting for the database server"))
                // Still down: nothing started, and the supervisor answers and registers meanwhile.
                #expect(await consistent.status == .notYetStarted)
                #expect(await finished.status == .notYetStarted)
                var plain = BackgroundWorker(name: "plain", entryPoint: .executable("/bin/true"))
                plain.restartInterval = .never
                let other = try await supervisor.register(plain)
                #expect(try await other.waitForShutdown() == .stopped)
                try cluster.start()
                _ = try await consistent.waitForReady()
                _ = try await finished.waitForReady()
                #expect(await log.waitFor("finished recovery"))
            }
        }
    }

    @Test("a standby is consistent but not finished: recovery-finished workers start only after promotion")
    func standbyThenPromote() async throws {
        try await PostgresCluster.withCluster(started: false) { cluster in
            try cluster.makeStandby()
            try cluster.start()
            #expect(try cluster.sql("SELECT pg_is_in_recovery()") == "t")
            let log = LogCollector()
            try await self.withStartupSupervisor(cluster, log: log) { supervisor in
                let consistent = try await supervisor.register(databaseWorker("consistent", ["by-name", "-", "-"]).starting(at: .consistentState))
                let finished = try await supervisor.register(databaseWorker("finished", ["by-name", "-", "-"]))
                _ = try await consistent.waitForReady()
                #expect(await log.waitFor("the server is in recovery"))
                #expect(await finished.status == .notYetStarted)
                try cluster.promote()
                _ = try await finished.waitForReady()
            }
        }
    }

    @Test("a server restarted under a running worker: it fails, exits 1, is restarted and reconnects")
    func serverRestart() async throws {
        try await PostgresCluster.withCluster { cluster in
            try await withDatabaseSupervisor(cluster.server) { supervisor in
                let events = await supervisor.events()
                var worker = databaseWorker("listener", ["listen"])
                worker.restartInterval = .seconds(0)
                let handle = try await supervisor.register(worker)
                let first = try await handle.waitForReady()
                try cluster.stop()
                var iterator = events.makeAsyncIterator()
                var exit: UVExitStatus?
                while let event = await iterator.next() {
                    if case .exited(let pid, let status) = event.kind, pid == first {
                        exit = status
                        break
                    }
                }
                #expect(exit == .exited(1))
                try cluster.start()
                // Restarted (after failing while the server was down, perhaps) until it connects again.
                var second: Int32?
                while let event = await iterator.next() {
                    if case .ready(let pid) = event.kind {
                        second = pid
                        break
                    }
                }
                #expect(second != nil && second != first)
                #expect(try cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'listener'") == "1")
            }
        }
    }
}

extension BackgroundWorker {
    /// The registration with another start time.
    func starting(at time: StartTime) -> BackgroundWorker {
        var copy = self
        copy.startTime = time
        return copy
    }
}

/// TCP with TLS, against a cluster that accepts TLS connections only.
@Suite(.timeLimit(.minutes(1)))
struct TLSTests {
    @Test("TLS required over TCP: trusted with the configured root, refused without it, and refused by the server when off")
    func tls() async throws {
        try await PostgresCluster.withCluster(started: false) { cluster in
            try cluster.enableTLS()
            try cluster.start()
            var server = DatabaseServer(.tcp(host: "localhost"), port: cluster.port, tls: .require, defaultUser: cluster.superuser)
            server.tlsRootCertificates = cluster.directory + "/root.crt"
            try await withDatabaseSupervisor(server) { supervisor in
                let handle = try await supervisor.register(databaseWorker("tls", ["by-name", "-", "-"]))
                let pid = try await handle.waitForReady()
                _ = pid
                #expect(try cluster.sql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tls'") == "t")
                await handle.terminate()
                _ = try await handle.waitForShutdown()
            }
            // The system's roots do not know the self-signed certificate.
            server.tlsRootCertificates = nil
            try await withDatabaseSupervisor(server) { supervisor in
                let handle = try await supervisor.register(databaseWorker("untrusted", ["by-name", "-", "-"]))
                let error = try await reportedError(handle)
                #expect(error.contains("connectionFailed") && error.contains("localhost:\(cluster.port)") && error.contains("CERTIFICATE_VERIFY_FAILED"), "\(error)")
            }
            // Without TLS, the server's rules refuse the connection, and say so.
            server.tls = .disable
            try await withDatabaseSupervisor(server) { supervisor in
                let handle = try await supervisor.register(databaseWorker("plain", ["by-name", "-", "-"]))
                let error = try await reportedError(handle)
                #expect(error.contains("no encryption") && error.contains("28000"), "\(error)")
            }
        }
    }
}
