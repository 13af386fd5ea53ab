import BackgroundWorkerControl
import UVConcurrency

// The supervisor's types on the control protocol's wire and back: one mapping, used by the server to answer
// and by `SupervisorClient` to give remote handles the same values as local ones.

extension ExitInfo {
    /// The wire form of an exit status.
    init(_ status: UVExitStatus) {
        switch status {
        case .exited(let code): self.init(code: code)
        case .signaled(let signal): self.init(signal: signal.rawValue)
        }
    }

    /// The exit status it describes.
    var exitStatus: UVExitStatus {
        if let code = self.code { return .exited(code) }
        return .signaled(UVSignal(rawValue: self.signal ?? 0))
    }
}

extension WorkerStatus {
    /// `notYetStarted`, `started`, `stopped` or `supervisorDied`.
    var wireName: String {
        switch self {
        case .notYetStarted: "notYetStarted"
        case .started: "started"
        case .stopped: "stopped"
        case .supervisorDied: "supervisorDied"
        }
    }

    /// The status a ``WorkerInfo`` reports.
    init?(wireName: String, pid: Int32?) {
        switch wireName {
        case "notYetStarted": self = .notYetStarted
        case "started":
            guard let pid else { return nil }
            self = .started(pid: pid)
        case "stopped": self = .stopped
        case "supervisorDied": self = .supervisorDied
        default: return nil
        }
    }
}

extension WorkerStateInfo {
    /// The wire form of a detail.
    init(_ detail: WorkerStatusDetail) {
        func spawn(_ error: UVError?, into info: inout WorkerStateInfo) {
            guard let error else { return }
            info.spawnErrno = error.errno
            info.spawnError = error.context
        }
        switch detail {
        case .waitingForStartPhase:
            self.init(kind: .waitingForStartPhase)
        case .waitingForCrashReset:
            self.init(kind: .waitingForCrashReset)
        case .running(let pid, let ready):
            self.init(kind: .running)
            self.pid = pid
            self.ready = ready
        case .stopping(let pid):
            self.init(kind: .stopping)
            self.pid = pid
        case .restartScheduled(let after, let lastExit, let spawnError):
            self.init(kind: .restartScheduled)
            self.restartAfter = after.seconds
            self.lastExit = lastExit.map(ExitInfo.init)
            spawn(spawnError, into: &self)
        case .gaveUp(let lastExit, let restarts, let window):
            self.init(kind: .gaveUp)
            self.lastExit = lastExit.map(ExitInfo.init)
            self.budgetRestarts = restarts
            self.budgetWindow = window.seconds
        case .unregistered(let reason, let lastExit):
            self.init(kind: .unregistered)
            self.reason = reason.name
            self.shutdownMode = reason.shutdownMode?.description
            self.lastExit = lastExit.map(ExitInfo.init)
            spawn(reason.spawnError, into: &self)
        }
    }

    /// The detail it describes, or nil when a field the kind needs is missing or unknown.
    var detail: WorkerStatusDetail? {
        let spawnError = self.spawnErrno.map { UVError(.spawnFailed, errno: $0, context: self.spawnError ?? "spawning") }
        let lastExit = self.lastExit?.exitStatus
        switch self.kind {
        case .waitingForStartPhase: return .waitingForStartPhase
        case .waitingForCrashReset: return .waitingForCrashReset
        case .running:
            guard let pid = self.pid else { return nil }
            return .running(pid: pid, ready: self.ready ?? false)
        case .stopping:
            guard let pid = self.pid else { return nil }
            return .stopping(pid: pid)
        case .restartScheduled:
            return .restartScheduled(after: .seconds(self.restartAfter ?? 0), lastExit: lastExit, spawnError: spawnError)
        case .gaveUp:
            return .gaveUp(lastExit: lastExit, restarts: self.budgetRestarts ?? 0, window: .seconds(self.budgetWindow ?? 0))
        case .unregistered:
            let mode = self.shutdownMode.flatMap(ShutdownMode.init(name:))
            guard let name = self.reason, let reason = UnregisterReason(name: name, spawnError: spawnError, shutdownMode: mode) else {
                return nil
            }
            return .unregistered(reason, lastExit: lastExit)
        }
    }
}

/// The supervisor's refusal and wait codes and their control-protocol counterparts: one table for both
/// directions.
private let sharedCodes: [(supervisor: SupervisorError.Code, control: ControlError.Code)] = [
    (.invalidRegistration, .invalidRegistration), (.noFreeSlot, .noFreeSlot), (.shuttingDown, .shuttingDown),
    (.notifyPIDRefused, .notifyPIDRefused), (.workerStopped, .workerStopped), (.supervisorStopped, .supervisorStopped),
    (.notReportingReadiness, .notReportingReadiness),
]

extension ControlError.Code {
    /// The control code of a supervisor refusal or wait error (`internalError` for one with no counterpart).
    init(supervisor code: SupervisorError.Code) {
        self = sharedCodes.first { $0.supervisor == code }?.control ?? (code == .invalidConfiguration ? .invalidRegistration : .internalError)
    }
}

extension SupervisorError.Code {
    /// The supervisor code of a control error that is one, or nil.
    init?(control code: ControlError.Code) {
        guard let pair = sharedCodes.first(where: { $0.control == code }) else { return nil }
        self = pair.supervisor
    }
}

extension Duration {
    /// The duration in seconds, as the wire carries it.
    var seconds: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
