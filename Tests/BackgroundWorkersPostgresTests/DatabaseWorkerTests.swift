import BackgroundWorkers
import BackgroundWorkersPostgres
import Foundation
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// Database workers against a real PostgreSQL cluster made by the test setup (initdb, Unix socket only).
@Suite(.sharedCluster, .timeLimit(.minutes(3)))
struct DatabaseWorkerTests {
    /// The database and role the server reports for a worker's connection (`pg_stat_activity`).
    func session(of name: String) throws -> String {
        try cluster.sql("SELECT datname || ' ' || usename FROM pg_stat_activity WHERE application_name = '\(name)'")
    }

    @Test("connects by name, by OID, and to the maintenance database as the default role with neither")
    func connectsByNameAndOID() async throws {
        let cluster = try cluster
        let databaseOID = try cluster.sql("SELECT oid FROM pg_database WHERE datname = 'bgw_test'")
        let roleOID = try cluster.sql("SELECT oid FROM pg_roles WHERE rolname = 'bgw_reader'")
        try await withDatabaseSupervisor(cluster.server) { supervisor in
            let cases: [(name: String, arguments: [String], expected: String)] = [
                ("by-name", ["by-name", "bgw_test", "bgw_reader"], "bgw_test bgw_reader"),
                ("by-oid", ["by-oid", databaseOID, roleOID], "bgw_test bgw_reader"),
                ("defaults", ["by-name", "-", "-"], "postgres postgres"),
                ("oid-defaults", ["by-oid", "-", "-"], "postgres postgres"),
            ]
            for item in cases {
                let handle = try await supervisor.register(databaseWorker(item.name, item.arguments))
                _ = try await handle.waitForReady()
                #expect(try self.session(of: item.name) == item.expected, "\(item.name)")
                await handle.terminate()
                #expect(try await handle.waitForShutdown() == .stopped)
                // Closed when the body ended: the server's backend is gone.
                #expect(try await eventually { try self.session(of: item.name).isEmpty }, "\(item.name) left its session open")
            }
        }
    }

    @Test("unknown database, role and OIDs: the worker exits 1 with an ERROR= line naming them")
    func unknownNamesAndOIDs() async throws {
        let cluster = try cluster
        try await withDatabaseSupervisor(cluster.server) { supervisor in
            let cases: [(arguments: [String], expected: [String])] = [
                (["by-name", "no_such_db", "-"], ["connectionFailed", "no_such_db", "does not exist", "3D000"]),
                (["by-name", "-", "no_such_role"], ["connectionFailed", "no_such_role", "does not exist", "28000"]),
                (["by-oid", "4000000001", "-"], ["unknownDatabaseOID", "4000000001", "pg_database"]),
                (["by-oid", "-", "4000000002"], ["unknownRoleOID", "4000000002", "pg_roles"]),
            ]
            for (index, item) in cases.enumerated() {
                let handle = try await supervisor.register(databaseWorker("unknown-\(index)", item.arguments))
                let error = try await reportedError(handle)
                for text in item.expected { #expect(error.contains(text), "\(item.arguments): \(error)") }
                let detail = await handle.detail
                guard case .unregistered(_, let exit) = detail else {
                    Issue.record("\(detail)")
                    continue
                }
                #expect(exit == .exited(1))
            }
        }
    }

    @Test("a worker without the database flag, and a second call, are errors naming why")
    func flagAndOnce() async throws {
        let cluster = try cluster
        try await withDatabaseSupervisor(cluster.server) { supervisor in
            let noFlag = try await supervisor.register(databaseWorker("no-flag", ["by-name", "-", "-"], flags: []))
            let error = try await reportedError(noFlag)
            #expect(error.contains("noDatabaseFlag") && error.contains(".databaseConnection"), "\(error)")

            let twice = try await supervisor.register(databaseWorker("twice", ["twice"]))
            let second = try await reportedError(twice)
            #expect(second.contains("alreadyInitialized") && second.contains("once"), "\(second)")
        }
    }

    @Test("registrations are refused as in PostgreSQL, naming the field")
    func validation() async throws {
        let cluster = try cluster
        // No server configured: a database worker cannot be served.
        try await withWorkerSupervisor { supervisor in
            do {
                _ = try await supervisor.register(databaseWorker("no-server", ["by-name"]))
                Issue.record("registered without a database server")
            } catch let error as SupervisorError {
                #expect(error.registrationError?.field == "flags")
                #expect(error.message.contains("Configuration.database"), "\(error)")
            }
        }
        try await withDatabaseSupervisor(cluster.server) { supervisor in
            var noSharedMemory = databaseWorker("no-shm", ["by-name"])
            noSharedMemory.flags = [.databaseConnection]
            var atStart = databaseWorker("at-start", ["by-name"])
            atStart.startTime = .supervisorStart
            for (worker, field) in [(noSharedMemory, "flags"), (atStart, "startTime")] {
                do {
                    _ = try await supervisor.register(worker)
                    Issue.record("\(worker.name) was registered")
                } catch let error as SupervisorError {
                    #expect(error.registrationError?.field == field, "\(error)")
                }
            }
            #expect(await supervisor.slotsInUse == 0)
        }
        // A malformed server is refused when the supervisor is made.
        var bad = cluster.server
        bad.location = .unixSocket(directory: "relative/dir")
        var configuration = WorkerSupervisor.Configuration()
        configuration.database = bad
        #expect(throws: SupervisorError.self) { _ = try WorkerSupervisor(configuration: configuration) }
    }

    @Test("the password reaches the worker as descriptor 6, never in its environment or command line")
    func passwordThroughDescriptor() async throws {
        let cluster = try cluster
        var server = cluster.server
        server.defaultUser = cluster.passwordRole
        server.password = cluster.password
        try await withDatabaseSupervisor(server) { supervisor in
            let handle = try await supervisor.register(databaseWorker("with-password", ["by-name", "-", "-"]))
            let pid = try await handle.waitForReady()
            #expect(try self.session(of: "with-password") == "postgres \(cluster.passwordRole)")
            let environment = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")), as: UTF8.self)
            let commandLine = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")), as: UTF8.self)
            #expect(!environment.contains(cluster.password) && !commandLine.contains(cluster.password))
            #expect(environment.contains("BGW_DB_PASSWORD_FD=6"))
            let target = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/6")
            #expect(target.contains("memfd:bgworker-db-password"), "\(target)")
            await handle.terminate()
            _ = try await handle.waitForShutdown()
        }
        // A wrong password is the server's refusal, reported.
        server.password = "wrong"
        try await withDatabaseSupervisor(server) { supervisor in
            let handle = try await supervisor.register(databaseWorker("wrong-password", ["by-name", "-", "-"]))
            let error = try await reportedError(handle)
            #expect(error.contains("28P01") && error.contains(cluster.passwordRole), "\(error)")
        }
    }

    @Test("SIGTERM during a query ends the worker at once and the server's backend with it")
    func terminateDuringQuery() async throws {
        let cluster = try cluster
        try await withDatabaseSupervisor(cluster.server) { supervisor in
            let handle = try await supervisor.register(databaseWorker("sleeper", ["sleep-query"]))
            _ = try await handle.waitForReady()
            #expect(try await eventually { try cluster.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sleeper' AND query LIKE '%pg_sleep%' AND state = 'active'") == "1" })
            let start = ContinuousClock.now
            await handle.terminate()
            _ = try await handle.waitForShutdown()
            // Exited by itself (1: cancelled) well before the 10 s grace period's SIGKILL.
            let detail = await handle.detail
            #expect(detail == .unregistered(.terminated, lastExit: .exited(1)), "\(detail)")
            #expect(ContinuousClock.now - start < .seconds(5))
            #expect(try await eventually { try self.session(of: "sleeper").isEmpty }, "the backend kept running the query")
        }
    }
}
