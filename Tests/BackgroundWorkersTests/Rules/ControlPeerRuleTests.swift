@testable import BackgroundWorkers
import Testing

/// The rule that makes a control client's pid a notify pid: only while one of its connections that said it
/// handles SIGUSR1 is open (PG-19 across processes).
@Suite("Rules: control clients as notify pids")
struct ControlPeerRuleTests {
    @Test("a peer is notifiable while connected; its last disconnect clears the notify pids naming it, not others")
    func peerLifetime() throws {
        var machine = SupervisorStateMachine(
            settings: .init(maxWorkerProcesses: 4, keepStaticWorkersAcrossCrashReset: false, quitGracePeriod: .seconds(5), supervisorPID: 1)
        )
        let readings = SupervisorStateMachine.Readings(now: .zero, random: { 0.5 })
        var actions: [SupervisorAction] = []
        machine.run(readings, &actions)
        func register(_ name: String, notify pid: Int32) -> Result<WorkerID, SupervisorError> {
            var worker = BackgroundWorker(name: name, entryPoint: .executable("/bin/true"))
            worker.notifyPID = pid
            return machine.register(worker, readings, &actions)
        }
        #expect(register("early", notify: 500).failure?.code == .notifyPIDRefused)
        machine.peerConnected(pid: 500)
        machine.peerConnected(pid: 500)  // a second connection of the same process
        machine.peerConnected(pid: 600)
        let first = try register("a", notify: 500).get()
        let other = try register("b", notify: 600).get()
        machine.peerDisconnected(pid: 500, readings, &actions)
        #expect(machine.worker(first)?.notifyPID == 500, "one connection of 500 is still open")
        machine.peerDisconnected(pid: 500, readings, &actions)
        #expect(machine.worker(first)?.notifyPID == nil)
        #expect(machine.worker(other)?.notifyPID == 600)
        #expect(register("late", notify: 500).failure?.code == .notifyPIDRefused)
        // A disconnect of a pid that never connected changes nothing.
        machine.peerDisconnected(pid: 700, readings, &actions)
        #expect(machine.worker(other)?.notifyPID == 600)
        // The supervisor's own pid stays notifiable whatever its connections do.
        machine.peerConnected(pid: 1)
        let own = try register("own", notify: 1).get()
        machine.peerDisconnected(pid: 1, readings, &actions)
        #expect(machine.worker(own)?.notifyPID == 1)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
