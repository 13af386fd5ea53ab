import BackgroundWorkerContract
import Testing
import UVConcurrency

@testable import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

/// One worker's rules without processes or clocks: every state against every input.
@Suite("Worker state machine, every state × every input")
struct WorkerStateMachineTests {
    /// A shared-memory worker with readiness, a notify pid, interval 10 s and a budget of one restart a minute.
    static func worker() -> WorkerStateMachine {
        var registration = BackgroundWorker(name: "w", entryPoint: .executable("/bin/true"))
        registration.flags = [.sharedMemoryAccess]
        registration.restartInterval = .seconds(10)
        registration.reportsReadiness = true
        registration.notifyPID = 4242
        registration.restartBudget = .init(maxRestarts: 1, window: .seconds(60))
        return WorkerStateMachine(id: WorkerID(slot: 0, generation: 1), registration: registration, isStatic: false, order: 0)
    }

    /// The machine in each state, reached through inputs only.
    static let states: [(String, WorkerStateMachine)] = {
        var result: [(String, WorkerStateMachine)] = []
        var worker = Self.worker()
        result.append(("waitingForPhase", worker))
        worker.feed(.phaseReached)
        result.append(("starting", worker))
        worker.feed(.spawned(pid: 100))
        result.append(("running", worker))
        var restart = worker
        restart.feed(.exited(.exited(1)))
        result.append(("restartScheduled", restart))
        var reset = worker
        reset.feed(.crashReset, .exited(.signaled(.quit)))
        result.append(("waitingForCrashReset", reset))
        var gaveUp = restart
        gaveUp.feed(.restartDeadline, .spawned(pid: 101), .exited(.exited(1)))
        result.append(("gaveUp", gaveUp))
        var gone = worker
        gone.feed(.terminate, .exited(.exited(1)))
        result.append(("unregistered", gone))
        return result
    }()

    static let inputs: [(String, WorkerStateMachine.Input)] = [
        ("phaseReached", .phaseReached),
        ("spawned", .spawned(pid: 200)),
        ("spawnFailed EAGAIN", .spawnFailed(transientError)),
        ("spawnFailed ENOENT", .spawnFailed(permanentError)),
        ("ready", .ready),
        ("reportedError", .reportedError("boom")),
        ("acceptsNotifications", .acceptsNotifications),
        ("builtinStarted", .builtinStarted),
        ("exited 1", .exited(.exited(1))),
        ("exited 3", .exited(.exited(3))),
        ("terminate", .terminate),
        ("restartDeadline", .restartDeadline),
        ("killDeadline", .killDeadline),
        ("crashReset", .crashReset),
        ("crashResetFinished", .crashResetFinished),
        ("shutdown fast", .shutdown(.fast)),
        ("shutdown smart", .shutdown(.smart)),
        ("resetBudget", .resetBudget),
        ("processGone", .processGone(pid: 4242)),
    ]

    /// What a (state, input) pair does: the state after, the actions in order, and whether it starts a crash
    /// reset. Every pair not listed here must change nothing and ask for nothing.
    struct Row {
        let state: String
        let input: String
        let after: String
        let actions: [String]
        let crash: Bool

        init(_ state: String, _ input: String, _ after: String, _ actions: [String], crash: Bool = false) {
            self.state = state
            self.input = input
            self.after = after
            self.actions = actions
            self.crash = crash
        }
    }

    /// Unregistration: PG-15 then PG-17: the rules have freed the slot; the notify pid and every waiter hear of it.
    static func told(_ reason: String) -> [String] {
        ["emit unregistered \(reason)", "notify 4242", "startup workerStopped", "shutdown stopped", "ready workerStopped"]
    }

    static let rows: [Row] = [
        Row("waitingForPhase", "phaseReached", "starting", ["spawn"]),
        Row("waitingForPhase", "terminate", "unregistered(terminated)", told("terminated")),
        Row("waitingForPhase", "crashReset", "waitingForCrashReset", []),
        Row("waitingForPhase", "shutdown fast", "unregistered(the supervisor shut down (fast shutdown))", told("the supervisor shut down (fast shutdown)")),
        Row("waitingForPhase", "shutdown smart", "unregistered(the supervisor shut down (smart shutdown))", told("the supervisor shut down (smart shutdown)")),
        Row("starting", "spawned", "running(pid 200)", ["emit started 200", "notify 4242", "startup 200"]),
        Row("starting", "spawnFailed EAGAIN", "restartScheduled(10.0 seconds, errno 11)", ["emit spawnFailed 11", "emit restart in 10.0 seconds", "arm restart 10.0 seconds"]),
        Row("starting", "spawnFailed ENOENT", "unregistered(could not be started: spawnFailed: test: ENOENT (no such file or directory))", ["emit spawnFailed 2", "emit unregistered could not be started: spawnFailed: test: ENOENT (no such file or directory)", "notify 4242", "startup workerStopped", "shutdown stopped", "ready workerStopped"]),
        Row("running", "ready", "running(pid 100, ready)", ["emit ready 100", "ready 100"]),
        Row("running", "reportedError", "running(pid 100)", ["emit error boom"]),
        Row("running", "acceptsNotifications", "running(pid 100, notifiable)", []),
        Row("running", "exited 1", "restartScheduled(10.0 seconds)", ["emit exited 100 exited with code 1", "count exit restart", "emit restart in 10.0 seconds", "arm restart 10.0 seconds", "notify 4242", "shutdown stopped"]),
        Row("running", "exited 3", "waitingForCrashReset", ["emit exited 100 exited with code 3", "count exit crash", "emit crashReset", "notify 4242", "shutdown stopped"], crash: true),
        Row("running", "terminate", "running(pid 100, terminating, sent SIGTERM, kill armed)", ["SIGTERM 100", "arm kill 10.0 seconds"]),
        Row("running", "crashReset", "running(pid 100, sent SIGQUIT, in reset, kill armed)", ["SIGQUIT 100", "arm kill 5.0 seconds"]),
        Row("running", "shutdown fast", "running(pid 100, sent SIGTERM, kill armed)", ["SIGTERM 100", "arm kill 10.0 seconds"]),
        Row("restartScheduled", "terminate", "unregistered(terminated)", ["disarm restart"] + told("terminated")),
        Row("restartScheduled", "restartDeadline", "starting", ["count restart", "spawn"]),
        Row("restartScheduled", "crashReset", "waitingForCrashReset", ["disarm restart"]),
        Row("restartScheduled", "shutdown fast", "unregistered(the supervisor shut down (fast shutdown))", ["disarm restart"] + told("the supervisor shut down (fast shutdown)")),
        Row("restartScheduled", "shutdown smart", "unregistered(the supervisor shut down (smart shutdown))", ["disarm restart"] + told("the supervisor shut down (smart shutdown)")),
        Row("waitingForCrashReset", "terminate", "unregistered(terminated)", told("terminated")),
        Row("waitingForCrashReset", "crashResetFinished", "restartScheduled(0.0 seconds)", ["emit restart in 0.0 seconds", "arm restart 0.0 seconds"]),
        Row("waitingForCrashReset", "shutdown fast", "unregistered(the supervisor shut down (fast shutdown))", told("the supervisor shut down (fast shutdown)")),
        Row("waitingForCrashReset", "shutdown smart", "unregistered(the supervisor shut down (smart shutdown))", told("the supervisor shut down (smart shutdown)")),
        Row("gaveUp", "terminate", "unregistered(terminated)", told("terminated")),
        Row("gaveUp", "shutdown fast", "unregistered(the supervisor shut down (fast shutdown))", told("the supervisor shut down (fast shutdown)")),
        Row("gaveUp", "shutdown smart", "unregistered(the supervisor shut down (smart shutdown))", told("the supervisor shut down (smart shutdown)")),
        Row("gaveUp", "resetBudget", "starting", ["spawn"]),
    ]

    @Test("every state × every input: the listed pairs act as listed, every other pair does nothing")
    func everyPair() throws {
        #expect(Self.states.count == 7)
        #expect(Self.inputs.count == 19)
        var listed = Set<String>()
        for row in Self.rows {
            #expect(listed.insert("\(row.state) \(row.input)").inserted, "listed twice: \(row.state) \(row.input)")
        }
        for (stateName, state) in Self.states {
            for (inputName, input) in Self.inputs {
                var machine = state
                var actions: [SupervisorAction] = []
                let crashed = machine.handle(input, facts(), &actions)
                let described = actions.map(Describe.action)
                if let row = Self.rows.first(where: { $0.state == stateName && $0.input == inputName }) {
                    #expect(Describe.state(machine.state) == row.after, "\(stateName) + \(inputName)")
                    #expect(described == row.actions, "\(stateName) + \(inputName)")
                    #expect(crashed == row.crash, "\(stateName) + \(inputName)")
                } else if case .processGone = input {
                    // It only forgets the notify pid (tested below).
                    #expect(machine.state == state.state && described.isEmpty && !crashed, "\(stateName) + \(inputName)")
                } else {
                    #expect(machine == state, "\(stateName) + \(inputName) changed the machine")
                    #expect(described.isEmpty, "\(stateName) + \(inputName) asked for \(described)")
                    #expect(!crashed)
                }
            }
        }
        #expect(listed.count == Self.rows.count)
    }

    @Test("PG-19: the exit of the notify pid's process clears it, in any state but unregistered")
    func processGoneClearsTheNotifyPID() {
        for (stateName, state) in Self.states where stateName != "unregistered" {
            var machine = state
            #expect(machine.notifyPID == 4242)
            machine.feed(.processGone(pid: 1))
            #expect(machine.notifyPID == 4242, "\(stateName): another pid")
            machine.feed(.processGone(pid: 4242))
            #expect(machine.notifyPID == nil, "\(stateName)")
        }
    }

    // MARK: - A running worker being stopped

    @Test("PG-22: terminate sends SIGTERM once; SIGKILL at the deadline; a death by either is no crash")
    func terminating() {
        var worker = Self.worker()
        worker.feed(.phaseReached, .spawned(pid: 100), .terminate)
        #expect(worker.feed(.terminate).isEmpty)  // asked twice: nothing more
        #expect(worker.feed(.shutdown(.fast)).isEmpty)  // already stopping at least this hard
        var killed = worker
        #expect(killed.feed(.killDeadline).map(Describe.action) == ["SIGKILL 100"])
        #expect(killed.feed(.killDeadline).isEmpty)  // one SIGKILL
        var actions: [SupervisorAction] = []
        #expect(!killed.handle(.exited(.signaled(.kill)), facts(), &actions))
        #expect(Describe.state(killed.state) == "unregistered(terminated)")
        #expect(actions.map(Describe.action).contains("count exit restart"))  // a stop, not a crash
        var byTerm = worker
        #expect(!byTerm.handle(.exited(.signaled(.terminate)), facts(), &actions))
        #expect(Describe.state(byTerm.state) == "unregistered(terminated)")
        // A real crash while terminating still resets shared memory; the worker stays terminated.
        var crashed = worker
        #expect(crashed.handle(.exited(.signaled(UVSignal(rawValue: SIGSEGV))), facts(), &actions))
        #expect(Describe.state(crashed.state) == "unregistered(terminated)")
        var immediate = worker
        #expect(immediate.feed(.shutdown(.immediate)).map(Describe.action) == ["SIGQUIT 100", "arm kill 5.0 seconds"])
    }

    @Test("PG-13, PG-14: a worker stopped by a crash reset waits for it; terminated meanwhile, it is unregistered")
    func stoppedByCrashReset() {
        var worker = Self.worker()
        worker.feed(.phaseReached, .spawned(pid: 100), .crashReset)
        #expect(worker.feed(.crashReset).isEmpty)
        #expect(worker.isHeldByCrashReset)
        var exited = worker
        var actions: [SupervisorAction] = []
        // The runtime exits 2 on SIGQUIT: still the reset's doing, no crash of its own.
        #expect(!exited.handle(.exited(.exited(2)), facts(), &actions))
        #expect(Describe.state(exited.state) == "waitingForCrashReset")
        #expect(exited.shortRuns == 0)  // stopped by the supervisor: not a fast failure
        var terminated = worker
        #expect(terminated.feed(.terminate).isEmpty)  // no second signal
        terminated.feed(.exited(.signaled(.quit)))
        #expect(Describe.state(terminated.state) == "unregistered(terminated)")
    }

    @Test("a built-in worker that exits without its binary handing over is unregistered, never restarted")
    func builtinNotHandled() {
        var registration = BackgroundWorker(name: "b", entryPoint: .builtin("echo"))
        registration.restartInterval = .seconds(0)
        var unhandled = WorkerStateMachine(id: WorkerID(slot: 0, generation: 1), registration: registration, isStatic: false, order: 0)
        unhandled.feed(.phaseReached, .spawned(pid: 9), .exited(.exited(0)))
        #expect(Describe.state(unhandled.state) == "unregistered(\(UnregisterReason.builtinNotHandled))")
        var handled = WorkerStateMachine(id: WorkerID(slot: 0, generation: 1), registration: registration, isStatic: false, order: 0)
        handled.feed(.phaseReached, .spawned(pid: 9), .builtinStarted, .exited(.exited(1)))
        #expect(Describe.state(handled.state).hasPrefix("restartScheduled"))
    }

    // MARK: - Exits (PG-11–16, 22, 24)

    /// The state after one exit of a fresh process of `registration`, at `given` facts, after `uptime`.
    static func afterExit(
        _ status: UVExitStatus,
        configure: (inout BackgroundWorker) -> Void = { _ in },
        mode: SupervisorMode = .running,
        uptime: Duration = .milliseconds(10),
        terminate: Bool = false
    ) -> (state: String, crash: Bool) {
        var registration = BackgroundWorker(name: "w", entryPoint: .executable("/bin/true"))
        registration.restartInterval = .seconds(10)
        configure(&registration)
        var worker = WorkerStateMachine(id: WorkerID(slot: 0, generation: 1), registration: registration, isStatic: false, order: 0)
        worker.feed(.phaseReached, facts: facts(now: .seconds(100)))
        worker.feed(.spawned(pid: 7), facts: facts(now: .seconds(100)))
        if terminate { worker.feed(.terminate) }
        var actions: [SupervisorAction] = []
        let crash = worker.handle(.exited(status), facts(now: .seconds(100) + uptime, mode: mode), &actions)
        return (Describe.state(worker.state), crash)
    }

    @Test("PG-11, PG-12: exit 0 unregisters whatever the interval; exit 1 restarts after it, or never")
    func exitCodes() {
        #expect(Self.afterExit(.exited(0)).state == "unregistered(exited with code 0)")
        #expect(Self.afterExit(.exited(0), configure: { $0.restartInterval = .seconds(0) }).state == "unregistered(exited with code 0)")
        #expect(Self.afterExit(.exited(1), uptime: .seconds(5)).state == "restartScheduled(10.0 seconds)")
        #expect(Self.afterExit(.exited(1), configure: { $0.restartInterval = .never }).state == "unregistered(exited and is never restarted)")
    }

    @Test("PG-13: a crash resets shared-memory workers; a worker without the flag only restarts")
    func crashes() {
        let shared: (inout BackgroundWorker) -> Void = { $0.flags = [.sharedMemoryAccess] }
        #expect(Self.afterExit(.exited(2), configure: shared) == ("waitingForCrashReset", true))
        #expect(Self.afterExit(.signaled(.kill), configure: shared) == ("waitingForCrashReset", true))
        #expect(Self.afterExit(.exited(1), configure: shared, uptime: .seconds(5)) == ("restartScheduled(10.0 seconds)", false))
        #expect(Self.afterExit(.exited(2), uptime: .seconds(5)) == ("restartScheduled(10.0 seconds)", false))
        #expect(Self.afterExit(.signaled(.terminate), uptime: .seconds(5)) == ("restartScheduled(10.0 seconds)", false))
        #expect(RestartPolicy.isCrash(.exited(255)) && !RestartPolicy.isCrash(.exited(1)) && !RestartPolicy.isCrash(.exited(0)))
        #expect(!RestartPolicy.isCrash(.signaled(.terminate), stopSignals: SignalSet(.terminate)))
        #expect(RestartPolicy.isCrash(.signaled(.kill), stopSignals: SignalSet(.terminate)))
    }

    @Test("PG-22, PG-24: a terminated worker is never restarted; during shutdown nothing is, and nothing is a crash")
    func terminateAndShutdown() {
        #expect(Self.afterExit(.exited(1), terminate: true).state == "unregistered(terminated)")
        #expect(Self.afterExit(.exited(1), mode: .stopping(.smart)).state == "unregistered(the supervisor shut down (smart shutdown))")
        #expect(Self.afterExit(.exited(3), configure: { $0.flags = [.sharedMemoryAccess] }, mode: .stopping(.fast)) == ("unregistered(the supervisor shut down (fast shutdown))", false))
    }

    // MARK: - Delays (PG-16)

    @Test("the default throttle: fast failures wait 100 ms doubling to 30 s; a stable run starts again; nil is PostgreSQL's")
    func throttle() {
        var registration = BackgroundWorker(name: "w", entryPoint: .executable("/bin/false"))
        registration.restartInterval = .seconds(0)
        let waits = (1...12).map { RestartPolicy.delay(registration, base: .zero, useBackoff: true, backoffAttempts: 0, shortRuns: $0, random: { 0.5 }) }
        #expect(waits.prefix(9) == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .milliseconds(3200), .milliseconds(6400), .milliseconds(12800), .milliseconds(25600)])
        #expect(waits.suffix(3).allSatisfy { $0 == .seconds(30) })
        // A longer interval wins over the throttle; a stable run is never throttled.
        registration.restartInterval = .seconds(60)
        #expect(RestartPolicy.delay(registration, base: .seconds(60), useBackoff: true, backoffAttempts: 0, shortRuns: 20, random: { 0.5 }) == .seconds(60))
        #expect(RestartPolicy.delay(registration, base: .zero, useBackoff: true, backoffAttempts: 0, shortRuns: 0, random: { 0.5 }) == .zero)
        registration.restartThrottle = nil
        #expect(RestartPolicy.delay(registration, base: .zero, useBackoff: true, backoffAttempts: 0, shortRuns: 20, random: { 0.5 }) == .zero)
        // Through the machine: a short run counts, a run of a second resets the count.
        #expect(Self.afterExit(.exited(1), configure: { $0.restartInterval = .seconds(0) }, uptime: .milliseconds(10)).state == "restartScheduled(0.1 seconds)")
        #expect(Self.afterExit(.exited(1), configure: { $0.restartInterval = .seconds(0) }, uptime: .seconds(1)).state == "restartScheduled(0.0 seconds)")
        #expect(Self.afterExit(.exited(1), configure: { $0.restartInterval = .seconds(0); $0.restartThrottle = nil }).state == "restartScheduled(0.0 seconds)")
    }

    @Test("PG-16: backoff grows, is capped, jitters within its share, and resets after a stable uptime")
    func backoff() {
        var registration = BackgroundWorker(name: "w", entryPoint: .executable("/bin/false"))
        registration.restartInterval = .seconds(1)
        registration.restartBackoff = .init(multiplier: 3, maximum: .seconds(20), jitter: 0.5, resetAfter: .seconds(30))
        let waits = (0..<5).map { RestartPolicy.delay(registration, base: .seconds(1), useBackoff: true, backoffAttempts: $0, shortRuns: 0, random: { 0.5 }) }
        #expect(waits == [.seconds(1), .seconds(3), .seconds(9), .seconds(20), .seconds(20)])
        let low = RestartPolicy.delay(registration, base: .seconds(1), useBackoff: true, backoffAttempts: 2, shortRuns: 0, random: { 0 })
        let high = RestartPolicy.delay(registration, base: .seconds(1), useBackoff: true, backoffAttempts: 2, shortRuns: 0, random: { 0.999_999 })
        #expect(low == .seconds(4.5))
        #expect(high > .seconds(13.49) && high <= .seconds(13.5))
        // No backoff after a crash reset (PG-14: at once).
        #expect(RestartPolicy.delay(registration, base: .zero, useBackoff: false, backoffAttempts: 4, shortRuns: 0, random: { 0.5 }) == .zero)
    }

    @Test("PG-16: a spent budget gives up; a reset budget starts it again")
    func budget() {
        var worker = Self.worker()
        worker.feed(.phaseReached, .spawned(pid: 100), .exited(.exited(1)), .restartDeadline, .spawned(pid: 101))
        let actions = worker.feed(.exited(.exited(1)))
        #expect(Describe.state(worker.state) == "gaveUp")
        #expect(actions.map(Describe.action).contains("emit gaveUp"))
        #expect(worker.detail == .gaveUp(lastExit: .exited(1), restarts: 1, window: .seconds(60)))
        // The window slides: a minute later the same exit restarts.
        var later = Self.worker()
        later.feed(.phaseReached, .spawned(pid: 100), .exited(.exited(1)), .restartDeadline, .spawned(pid: 101))
        later.feed(.exited(.exited(1)), facts: facts(now: .seconds(161)))
        #expect(Describe.state(later.state).hasPrefix("restartScheduled"))
    }
}
