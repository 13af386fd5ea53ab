import BackgroundWorkerContract
import PropertyBased
import Testing
import UVConcurrency

@testable import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

/// The supervisor's rules driven by long random sequences of what can happen, with the invariants checked
/// after every step. The harness plays the actor: it keeps the "processes", the armed deadlines and the
/// waiters, answers every spawn at once (started, or failed), and records every action.
@Suite("Supervisor state machine, random event sequences")
struct SupervisorStateMachinePropertyTests {
    @Test("invariants hold after every step of 400 random sequences")
    func invariants() async {
        await propertyCheck(count: 400, input: Gen.int(in: 0...1_000_000).array(of: 20...250)) { steps in
            var harness = Harness()
            for step in steps {
                harness.step(step)
                if !harness.violations.isEmpty { break }
            }
            if harness.violations.isEmpty { harness.finish() }
            #expect(harness.violations.isEmpty, "\(harness.violations.prefix(5))")
        }
    }

    /// A model of the supervisor actor around the machine.
    struct Harness {
        var machine = SupervisorStateMachine(
            settings: .init(maxWorkerProcesses: 6, keepStaticWorkersAcrossCrashReset: false, quitGracePeriod: .seconds(5), supervisorPID: 1)
        )
        var now: Duration = .zero
        var nextPID: Int32 = 1000
        /// The modelled processes: registration → pid.
        var processes: [WorkerID: Int32] = [:]
        var deadlines: [DeadlineKey: Duration] = [:]
        /// Waiters per registration and kind.
        var waiters: [WorkerID: [WaitKind: Int]] = [:]
        var registered: [WorkerID: BackgroundWorker] = [:]
        var released: Set<WorkerID> = []
        var terminated: Set<WorkerID> = []
        /// Restarts per registration (times), since its budget was last reset.
        var restarts: [WorkerID: [Duration]] = [:]
        var shutdownBegan = false
        var stopped = 0
        var spawnChoice = 0
        var violations: [String] = []

        struct DeadlineKey: Hashable {
            let id: WorkerID
            let kind: DeadlineKind
        }

        enum WaitKind: CaseIterable {
            case startup, shutdown, ready
        }

        var readings: SupervisorStateMachine.Readings { .init(now: self.now, random: { 0.5 }) }

        var live: [WorkerID] { self.registered.keys.filter { !self.released.contains($0) }.sorted { ($0.slot, $0.generation) < ($1.slot, $1.generation) } }

        mutating func violation(_ text: String) {
            self.violations.append(text)
        }

        // MARK: Steps

        mutating func step(_ value: Int) {
            let choice = value / 16
            switch value % 16 {
            case 0, 1, 2:
                self.register(choice)
            case 3:
                if self.machine.mode == .idle {
                    self.apply { $0.run($1, &$2) }
                } else {
                    let phase = [BackgroundWorker.StartTime.supervisorStart, .consistentState, .recoveryFinished][choice % 3]
                    self.apply { $0.reachPhase(phase, $1, &$2) }
                }
            case 4, 5, 6:
                // An exit of a running process.
                let running = self.processes.keys.sorted { ($0.slot, $0.generation) < ($1.slot, $1.generation) }
                guard !running.isEmpty else { return }
                let id = running[choice % running.count]
                let statuses: [UVExitStatus] = [.exited(0), .exited(1), .exited(1), .exited(2), .signaled(.terminate), .signaled(.kill), .signaled(.quit), .signaled(UVSignal(rawValue: SIGSEGV))]
                self.processes[id] = nil
                self.now += .milliseconds(Int64(choice % 3000))
                self.input(id, .exited(statuses[(choice / 7) % statuses.count]))
            case 7:
                guard let id = self.pick(choice) else { return }
                if self.machine.worker(id) != nil { self.terminated.insert(id) }
                self.input(id, .terminate)
            case 8, 9:
                // A deadline comes.
                let keys = self.deadlines.keys.sorted { ($0.id.slot, $0.id.generation, $0.kind == .kill ? 1 : 0) < ($1.id.slot, $1.id.generation, $1.kind == .kill ? 1 : 0) }
                guard !keys.isEmpty else { return }
                let key = keys[choice % keys.count]
                self.now = max(self.now, self.deadlines.removeValue(forKey: key)!)
                self.input(key.id, key.kind == .restart ? .restartDeadline : .killDeadline)
            case 10:
                guard let id = self.processes.keys.sorted(by: { ($0.slot, $0.generation) < ($1.slot, $1.generation) }).first(where: { _ in true }) else { return }
                self.input(id, .ready)
            case 11, 12:
                self.addWaiter(choice)
            case 13:
                guard choice % 4 == 0 else { return }  // shutdowns are rarer
                let mode = [ShutdownMode.smart, .fast, .immediate][choice % 3]
                self.shutdownBegan = true
                self.apply { $0.shutdown(mode, $1, &$2) }
            case 14:
                guard let id = self.pick(choice) else { return }
                if case .gaveUp = self.machine.worker(id)?.state { self.restarts[id] = [] }
                self.input(id, .resetBudget)
            default:
                self.now += .milliseconds(Int64(choice % 20_000))
            }
        }

        mutating func pick(_ choice: Int) -> WorkerID? {
            let all = self.registered.keys.sorted { ($0.slot, $0.generation) < ($1.slot, $1.generation) }
            return all.isEmpty ? nil : all[choice % all.count]
        }

        mutating func register(_ choice: Int) {
            var worker = BackgroundWorker(name: "w\(choice % 100)", entryPoint: .executable("/bin/true"))
            if choice % 2 == 0 { worker.flags = [.sharedMemoryAccess] }
            worker.restartInterval = [.never, .seconds(0), .seconds(5)][(choice / 2) % 3]
            worker.reportsReadiness = (choice / 6) % 2 == 0
            if (choice / 12) % 3 == 0 { worker.restartBudget = .init(maxRestarts: 1 + (choice / 36) % 3, window: .seconds(60)) }
            if (choice / 108) % 4 == 0 { worker.restartThrottle = nil }
            worker.startTime = [.supervisorStart, .supervisorStart, .consistentState, .recoveryFinished][(choice / 432) % 4]
            var actions: [SupervisorAction] = []
            let readings = self.readings
            let result = self.machine.register(worker, readings, &actions)
            if case .success(let id) = result {
                if self.shutdownBegan { self.violation("registered \(id) during shutdown") }
                self.registered[id] = worker
            }
            self.perform(actions)
        }

        mutating func addWaiter(_ choice: Int) {
            guard let id = self.pick(choice) else { return }
            let kind = WaitKind.allCases[choice % 3]
            let stopped = self.machine.stoppedBy
            guard let worker = self.machine.worker(id) else { return }  // answered from the handle's record
            let waits: Bool
            switch kind {
            case .startup: waits = worker.startupAnswer(stoppedBy: stopped) == nil
            case .shutdown: waits = worker.shutdownAnswer(stoppedBy: stopped) == nil
            case .ready: waits = worker.readyAnswer(stoppedBy: stopped) == nil
            }
            if waits { self.waiters[id, default: [:]][kind, default: 0] += 1 }
        }

        mutating func input(_ id: WorkerID, _ input: WorkerStateMachine.Input) {
            self.apply { $0.handle(id, input, $1, &$2) }
        }

        mutating func apply(_ body: (inout SupervisorStateMachine, SupervisorStateMachine.Readings, inout [SupervisorAction]) -> Void) {
            var actions: [SupervisorAction] = []
            let readings = self.readings
            body(&self.machine, readings, &actions)
            self.perform(actions)
        }

        // MARK: Actions

        /// Carries out actions as the actor does (spawn results at once), checking each against the invariants.
        mutating func perform(_ list: [SupervisorAction]) {
            var actions = list
            var index = 0
            while index < actions.count {
                let action = actions[index]
                index += 1
                if let id = action.workerID, self.released.contains(id) {
                    self.violation("\(Describe.action(action)) for \(id) after its release")
                }
                if self.stopped > 0 {
                    self.violation("\(Describe.action(action)) after the supervisor stopped")
                }
                switch action {
                case .spawn(let id):
                    if self.terminated.contains(id) { self.violation("spawn of \(id) after its terminate") }
                    if self.shutdownBegan { self.violation("spawn of \(id) during shutdown") }
                    if self.processes[id] != nil { self.violation("spawn of \(id) while it runs") }
                    self.spawnChoice += 1
                    let result: WorkerStateMachine.Input
                    switch self.spawnChoice % 11 {
                    case 3: result = .spawnFailed(transientError)
                    case 7: result = .spawnFailed(permanentError)
                    default:
                        self.nextPID += 1
                        self.processes[id] = self.nextPID
                        result = .spawned(pid: self.nextPID)
                    }
                    let readings = self.readings
                    self.machine.handle(id, result, readings, &actions)
                case .signal(let id, let pid, _):
                    if self.processes[id] != pid { self.violation("signal to \(pid), not the process of \(id)") }
                case .arm(let id, let kind, let after):
                    if after < .zero { self.violation("negative deadline \(after)") }
                    if kind == .kill && self.processes[id] == nil { self.violation("kill deadline for \(id) without a process") }
                    self.deadlines[DeadlineKey(id: id, kind: kind)] = self.now + after
                case .disarm(let id, let kind):
                    self.deadlines[DeadlineKey(id: id, kind: kind)] = nil
                case .resumeStartup(let id, _):
                    self.waiters[id]?[.startup] = 0
                case .resumeShutdown(let id, _):
                    self.waiters[id]?[.shutdown] = 0
                case .resumeReady(let id, _):
                    self.waiters[id]?[.ready] = 0
                case .count(.restart):
                    // The restart that follows: within the budget's window, no more than its restarts.
                    guard let id = actions[index...].first(where: { if case .spawn = $0 { return true } else { return false } })?.workerID,
                        let budget = self.registered[id]?.restartBudget
                    else { break }
                    self.restarts[id, default: []].append(self.now)
                    let recent = self.restarts[id]!.filter { self.now - $0 <= budget.window }
                    if recent.count > budget.maxRestarts { self.violation("\(id) restarted \(recent.count) times in its window, budget \(budget.maxRestarts)") }
                case .released(let final):
                    let id = final.id
                    if !self.released.insert(id).inserted { self.violation("\(id) released twice") }
                    if self.processes[id] != nil { self.violation("\(id) released while its process runs") }
                    if self.deadlines.keys.contains(where: { $0.id == id }) { self.violation("\(id) released with an armed deadline") }
                    if let left = self.waiters[id], left.values.contains(where: { $0 > 0 }) { self.violation("\(id) released with waiters left: \(left)") }
                    if self.machine.worker(id) != nil { self.violation("\(id) released but still in a slot") }
                case .stopped:
                    self.stopped += 1
                    if self.machine.slotsInUse != 0 { self.violation("stopped with \(self.machine.slotsInUse) slots in use") }
                    if !self.processes.isEmpty { self.violation("stopped with processes running") }
                case .notify, .emit, .count, .rebuildSharedMemory:
                    break
                }
            }
            if self.machine.slotsInUse > self.machine.capacity { self.violation("more slots used than exist") }
        }

        /// Shuts down and plays every process to its end: the supervisor must stop exactly once with every
        /// registration released and every waiter resumed.
        mutating func finish() {
            if self.machine.mode == .idle { self.apply { $0.run($1, &$2) } }
            self.shutdownBegan = true
            self.apply { $0.shutdown(.immediate, $1, &$2) }
            var rounds = 0
            while self.stopped == 0 && rounds < 1000 {
                rounds += 1
                if let (id, _) = self.processes.sorted(by: { ($0.key.slot, $0.key.generation) < ($1.key.slot, $1.key.generation) }).first {
                    self.processes[id] = nil
                    self.input(id, .exited(.signaled(.quit)))
                } else if let key = self.deadlines.keys.first {
                    self.deadlines[key] = nil
                    self.input(key.id, key.kind == .restart ? .restartDeadline : .killDeadline)
                } else {
                    break
                }
            }
            if self.stopped != 1 { self.violation("stopped \(self.stopped) times after a shutdown") }
            for id in self.registered.keys where !self.released.contains(id) { self.violation("\(id) never released") }
            for (id, lists) in self.waiters where lists.values.contains(where: { $0 > 0 }) { self.violation("waiters of \(id) never resumed: \(lists)") }
        }
    }
}

extension SupervisorAction {
    /// The registration an action is about, if any.
    var workerID: WorkerID? {
        switch self {
        case .spawn(let id), .signal(let id, _, _), .arm(let id, _, _), .disarm(let id, _), .resumeStartup(let id, _),
            .resumeShutdown(let id, _), .resumeReady(let id, _), .emit(let id, _):
            id
        case .released(let final): final.id
        case .notify, .count, .rebuildSharedMemory, .stopped: nil
        }
    }
}
