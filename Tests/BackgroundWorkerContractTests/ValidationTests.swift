import BackgroundWorkerContract
import Foundation
import Testing

@Suite("Registration record and validation (PG-SEMANTICS 1, 4, 27)")
struct ValidationTests {
    static let entry = BackgroundWorker.EntryPoint.executable("/bin/true")

    func refusal(_ worker: BackgroundWorker, isStatic: Bool = false) -> RegistrationError? {
        do {
            try worker.validate(isStatic: isStatic)
            return nil
        } catch {
            return error
        }
    }

    @Test("PG-1: the record carries every field, defaults as PostgreSQL's, and round-trips through Codable")
    func recordFieldsAndCodable() throws {
        var worker = BackgroundWorker(name: "índexer ✓", entryPoint: .executable("/bin/echo", arguments: ["a"]))
        #expect(worker.type == nil && worker.effectiveType == "índexer ✓")
        #expect(worker.restartInterval == .seconds(60))
        #expect(worker.startTime == .supervisorStart)
        #expect(worker.flags.isEmpty && worker.mainArgument == 0 && worker.extra.isEmpty && worker.notifyPID == nil)
        worker.type = "indexing"
        worker.flags = [.sharedMemoryAccess, .databaseConnection]
        worker.startTime = .recoveryFinished
        worker.mainArgument = .max
        worker.extra = Array(0..<128)
        worker.notifyPID = 1234
        worker.restartBackoff = .init(initial: .seconds(1), maximum: .seconds(30))
        worker.restartBudget = .init(maxRestarts: 3, window: .seconds(60))
        worker.reportsReadiness = true
        try worker.validate(isStatic: false)
        let decoded = try JSONDecoder().decode(BackgroundWorker.self, from: JSONEncoder().encode(worker))
        #expect(decoded == worker)
        #expect(decoded.name == "índexer ✓")  // Unicode kept intact
    }

    @Test("name: empty, over 63 bytes of UTF-8, or with NUL is refused; 63 bytes is fine")
    func nameRules() {
        #expect(refusal(BackgroundWorker(name: String(repeating: "a", count: 63), entryPoint: Self.entry)) == nil)
        // 21 three-byte characters = 63 bytes: fine; 22 = 66 bytes: refused although only 22 characters.
        #expect(refusal(BackgroundWorker(name: String(repeating: "€", count: 21), entryPoint: Self.entry)) == nil)
        let long = refusal(BackgroundWorker(name: String(repeating: "€", count: 22), entryPoint: Self.entry))
        #expect(long?.field == "name")
        #expect(long?.description.contains("66 bytes") == true)
        #expect(long?.description.contains("limit of 63 bytes") == true)
        #expect(refusal(BackgroundWorker(name: "", entryPoint: Self.entry))?.field == "name")
        #expect(refusal(BackgroundWorker(name: "a\u{0}b", entryPoint: Self.entry))?.field == "name")
        var typed = BackgroundWorker(name: "ok", entryPoint: Self.entry)
        typed.type = String(repeating: "t", count: 64)
        #expect(refusal(typed)?.field == "type")
    }

    @Test("names with control characters are refused: a newline would forge a log line")
    func controlCharactersInNames() {
        let forged = refusal(BackgroundWorker(name: "x\n2026-11-30T00:00:00+0000 critical forged", entryPoint: Self.entry))
        #expect(forged?.field == "name")
        #expect(forged?.description.contains("U+000A") == true)
        #expect(forged?.description.contains("\n") == false)  // the message itself forges nothing
        for control in ["\u{1B}[2J", "tab\there", "del\u{7F}", "c1\u{85}", "line\u{2028}sep"] {
            #expect(refusal(BackgroundWorker(name: control, entryPoint: Self.entry))?.field == "name", "\(control.debugDescription)")
        }
        var typed = BackgroundWorker(name: "ok", entryPoint: Self.entry)
        typed.type = "a\rb"
        #expect(refusal(typed)?.field == "type")
        #expect(refusal(BackgroundWorker(name: "ok", entryPoint: .builtin("a\nb")))?.field == "entryPoint.builtin")
        #expect(refusal(BackgroundWorker(name: "índexer ✓ 日本", entryPoint: Self.entry)) == nil)  // printable Unicode is fine
    }

    @Test("PG-4: the database flag needs shared memory and a start time after supervisor start")
    func databaseFlagRules() {
        var worker = BackgroundWorker(name: "db", entryPoint: Self.entry)
        worker.flags = [.databaseConnection]
        worker.startTime = .consistentState
        #expect(refusal(worker)?.field == "flags")
        #expect(refusal(worker)?.rule.contains("sharedMemoryAccess") == true)
        worker.flags = [.sharedMemoryAccess, .databaseConnection]
        worker.startTime = .supervisorStart
        #expect(refusal(worker)?.field == "startTime")
        worker.startTime = .recoveryFinished
        #expect(refusal(worker) == nil)
        worker.flags = BackgroundWorker.Flags(rawValue: 0x10)
        #expect(refusal(worker)?.field == "flags")
    }

    @Test("PG-4: the restart interval is never, or 0 through 86,400 seconds")
    func restartIntervalRules() {
        var worker = BackgroundWorker(name: "r", entryPoint: Self.entry)
        for seconds in [0, 1, 86_400] {
            worker.restartInterval = .seconds(seconds)
            #expect(refusal(worker) == nil)
        }
        worker.restartInterval = .never
        #expect(refusal(worker) == nil)
        worker.restartInterval = .seconds(86_401)
        #expect(refusal(worker)?.field == "restartInterval")
        #expect(refusal(worker)?.description.contains("86401 s") == true)
        worker.restartInterval = .seconds(-2)
        #expect(refusal(worker)?.field == "restartInterval")
    }

    @Test("PG-4, PG-18: a static record may not ask for notification; a notify pid must be positive")
    func notifyRules() {
        var worker = BackgroundWorker(name: "n", entryPoint: Self.entry)
        worker.notifyPID = 4242
        #expect(refusal(worker, isStatic: true)?.field == "notifyPID")
        #expect(refusal(worker, isStatic: false) == nil)
        worker.notifyPID = 0
        #expect(refusal(worker)?.field == "notifyPID")
    }

    @Test("PG-27: extra holds at most 128 bytes")
    func extraRule() {
        var worker = BackgroundWorker(name: "x", entryPoint: Self.entry)
        worker.extra = Array(repeating: 7, count: 128)
        #expect(refusal(worker) == nil)
        worker.extra.append(8)
        #expect(refusal(worker)?.field == "extra")
        #expect(refusal(worker)?.description.contains("129 bytes") == true)
    }

    @Test("backoff, budget, grace period and entry point are checked too")
    func beyondPostgresRules() {
        var worker = BackgroundWorker(name: "b", entryPoint: Self.entry)
        worker.restartBackoff = .init(multiplier: 0.5)
        #expect(refusal(worker)?.field == "restartBackoff.multiplier")
        worker.restartBackoff = .init(maximum: .seconds(1))  // below the 60 s interval it starts from
        #expect(refusal(worker)?.field == "restartBackoff.maximum")
        worker.restartBackoff = .init(jitter: 2)
        #expect(refusal(worker)?.field == "restartBackoff.jitter")
        worker.restartBackoff = nil
        worker.restartBudget = .init(maxRestarts: 0, window: .seconds(1))
        #expect(refusal(worker)?.field == "restartBudget.maxRestarts")
        worker.restartBudget = .init(maxRestarts: 1, window: .zero)
        #expect(refusal(worker)?.field == "restartBudget.window")
        worker.restartBudget = nil
        worker.stopGracePeriod = .seconds(-1)
        #expect(refusal(worker)?.field == "stopGracePeriod")
        #expect(refusal(BackgroundWorker(name: "e", entryPoint: .executable("")))?.field == "entryPoint")
        let reserved = BackgroundWorker(name: "e", entryPoint: .executable("/bin/true", environment: ["BGW_SLOT": "9"]))
        #expect(refusal(reserved)?.field == "entryPoint.environment")
    }

    @Test("library entry points: library and function names of at most 63 bytes (bgw_library_name, bgw_function_name)")
    func libraryEntryRules() {
        #expect(refusal(BackgroundWorker(name: "l", entryPoint: .library("libx.so", function: "main_fn"))) == nil)
        let longLibrary = BackgroundWorker(name: "l", entryPoint: .library(String(repeating: "a", count: 64), function: "f"))
        #expect(refusal(longLibrary)?.field == "entryPoint.library")
        let emptyFunction = BackgroundWorker(name: "l", entryPoint: .library("libx.so", function: ""))
        #expect(refusal(emptyFunction)?.field == "entryPoint.function")
        #expect(BackgroundWorker.EntryPoint.library("libx.so", function: "f").executable == nil)
    }

    @Test("the worker process contract round-trips an identity through the environment")
    func contractRoundTrip() throws {
        var worker = BackgroundWorker(name: "contract", entryPoint: Self.entry)
        worker.mainArgument = 0xdead_beef_cafe
        worker.extra = [0, 1, 0xab, 0xff]
        worker.flags = [.sharedMemoryAccess]
        let identity = WorkerProcessContract.Identity(
            worker: worker,
            slot: 3,
            generation: 7,
            supervisorPID: 99,
            reportsReadiness: true,
            sharedMemorySize: 4096
        )
        let environment = identity.environment
        #expect(environment["BGW_EXTRA"] == "0001abff")
        #expect(environment["BGW_READY_FD"] == "4" && environment["BGW_ALIVE_FD"] == "3")
        #expect(environment["BGW_SHM_FD"] == "5" && environment["BGW_SHM_SIZE"] == "4096")
        #expect(try WorkerProcessContract.Identity(environment: environment) == identity)
        #expect(environment["BGW_STATUS_FD"] == "4")

        // Without readiness, only a worker run through the runtime by its entry point gets descriptor 4, for
        // ERROR= lines; READY=1 is not asked of it.
        let statusOnly = WorkerProcessContract.Identity(
            worker: worker, slot: 3, generation: 7, supervisorPID: 99, reportsReadiness: false, reportsStatus: true
        )
        #expect(statusOnly.environment["BGW_READY_FD"] == nil && statusOnly.environment["BGW_STATUS_FD"] == "4")
        #expect(try WorkerProcessContract.Identity(environment: statusOnly.environment) == statusOnly)
        let plain = WorkerProcessContract.Identity(worker: worker, slot: 3, generation: 7, supervisorPID: 99, reportsReadiness: false)
        #expect(plain.environment["BGW_READY_FD"] == nil && plain.environment["BGW_STATUS_FD"] == nil)
        #expect(try WorkerProcessContract.Identity(environment: plain.environment) == plain)

        // Numbers: the whole UInt64 range for the main argument; anything else is refused, naming the variable.
        var numbers = environment
        numbers["BGW_MAIN_ARG"] = "18446744073709551615"
        #expect(try WorkerProcessContract.Identity(environment: numbers).mainArgument == UInt64.max)
        numbers["BGW_SUPERVISOR_PID"] = "-2147483648"
        #expect(try WorkerProcessContract.Identity(environment: numbers).supervisorPID == Int32.min)
        for (variable, value) in [
            ("BGW_MAIN_ARG", "18446744073709551616"), ("BGW_MAIN_ARG", "-1"), ("BGW_MAIN_ARG", ""), ("BGW_MAIN_ARG", "12a"),
            ("BGW_SLOT", "-"), ("BGW_SLOT", " 1"), ("BGW_SUPERVISOR_PID", "2147483648"), ("BGW_ALIVE_FD", "٣"),
        ] {
            var malformed = environment
            malformed[variable] = value
            #expect {
                try WorkerProcessContract.Identity(environment: malformed)
            } throws: { error in
                "\(error)".contains(variable)
            }
        }

        var broken = environment
        broken["BGW_SLOT"] = nil
        #expect(throws: RegistrationError.self) { try WorkerProcessContract.Identity(environment: broken) }
    }
}
