import BackgroundWorkerContract
import UVConcurrency

@testable import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

/// Short, stable descriptions of the rules' states and actions, so that tables of expectations read as text.
enum Describe {
    static func state(_ state: WorkerStateMachine.State) -> String {
        switch state {
        case .waitingForPhase: return "waitingForPhase"
        case .starting: return "starting"
        case .running(let running):
            var parts = ["pid \(running.pid)"]
            if running.ready { parts.append("ready") }
            if running.acceptsNotifications { parts.append("notifiable") }
            if running.terminateRequested { parts.append("terminating") }
            if !running.stopSignals.isEmpty { parts.append("sent \(signals(running.stopSignals))") }
            if running.inCrashReset { parts.append("in reset") }
            if running.killArmed { parts.append("kill armed") }
            return "running(\(parts.joined(separator: ", ")))"
        case .restartScheduled(let after, let error):
            return "restartScheduled(\(after)\(error.map { ", errno \($0.errno)" } ?? ""))"
        case .waitingForCrashReset: return "waitingForCrashReset"
        case .gaveUp: return "gaveUp"
        case .unregistered(let reason): return "unregistered(\(reason))"
        }
    }

    static func signals(_ set: SignalSet) -> String {
        [UVSignal.terminate, .quit, .kill].filter { set.contains($0) }.map { "\($0)" }.joined(separator: "+")
    }

    static func action(_ action: SupervisorAction) -> String {
        switch action {
        case .spawn: return "spawn"
        case .signal(_, let pid, let signal): return "\(signal) \(pid)"
        case .arm(_, let kind, let after): return "arm \(kind) \(after)"
        case .disarm(_, let kind): return "disarm \(kind)"
        case .resumeStartup(_, let result): return "startup \(Self.result(result))"
        case .resumeShutdown(_, let status): return "shutdown \(status)"
        case .resumeReady(_, let result): return "ready \(Self.result(result))"
        case .notify(let pid): return "notify \(pid)"
        case .emit(_, let kind): return "emit \(Self.event(kind))"
        case .count(let counted):
            switch counted {
            case .restart: return "count restart"
            case .exit(let cause): return "count exit \(cause)"
            }
        case .released: return "released"
        case .rebuildSharedMemory: return "rebuild shared memory"
        case .stopped(let mode): return "stopped \(mode)"
        }
    }

    static func result(_ result: Result<Int32, SupervisorError>) -> String {
        switch result {
        case .success(let pid): return "\(pid)"
        case .failure(let error): return "\(error.code)"
        }
    }

    static func event(_ kind: WorkerEvent.Kind) -> String {
        switch kind {
        case .registered: return "registered"
        case .started(let pid): return "started \(pid)"
        case .ready(let pid): return "ready \(pid)"
        case .exited(let pid, let status): return "exited \(pid) \(status)"
        case .spawnFailed(let error): return "spawnFailed \(error.errno)"
        case .restartScheduled(let after): return "restart in \(after)"
        case .gaveUp: return "gaveUp"
        case .unregistered(let reason): return "unregistered \(reason)"
        case .crashReset: return "crashReset"
        case .reportedError(let text): return "error \(text)"
        }
    }
}

/// Supervisor facts for tests: running, every phase reached, at 100 s, no reset under way.
func facts(
    now: Duration = .seconds(100),
    phase: BackgroundWorker.StartTime? = .recoveryFinished,
    mode: SupervisorMode = .running,
    crashResetInProgress: Bool = false
) -> SupervisorFacts {
    SupervisorFacts(
        now: now,
        phase: phase,
        mode: mode,
        crashResetInProgress: crashResetInProgress,
        keepStaticWorkersAcrossCrashReset: false,
        quitGracePeriod: .seconds(5),
        random: { 0.5 }
    )
}

extension WorkerStateMachine {
    /// Applies inputs at the default facts and returns the actions of the last one.
    @discardableResult
    mutating func feed(_ inputs: Input..., facts given: SupervisorFacts = facts()) -> [SupervisorAction] {
        var actions: [SupervisorAction] = []
        for input in inputs {
            actions.removeAll()
            self.handle(input, given, &actions)
        }
        return actions
    }
}

let transientError = UVError(.spawnFailed, errno: EAGAIN, context: "test")
let permanentError = UVError(.spawnFailed, errno: ENOENT, context: "test")
