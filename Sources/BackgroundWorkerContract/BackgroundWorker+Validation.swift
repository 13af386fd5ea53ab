extension BackgroundWorker {
    /// Checks every rule of a registration (PostgreSQL's `SanityCheckBackgroundWorker`, with one error per
    /// rule instead of a log line).
    ///
    /// - Parameter isStatic: Whether the registration happens before the supervisor runs. A static worker may
    ///   not ask for notification.
    /// - Throws: ``RegistrationError`` naming the first field that breaks a rule.
    public func validate(isStatic: Bool) throws(RegistrationError) {
        func refuse(_ field: String, _ value: String, _ rule: String) -> RegistrationError {
            RegistrationError(workerName: self.name, field: field, value: value, rule: rule)
        }

        try Self.checkLabel(self.name, field: "name", worker: self.name)
        if let type = self.type {
            try Self.checkLabel(type, field: "type", worker: self.name)
        }

        let known: Flags = [.sharedMemoryAccess, .databaseConnection]
        guard self.flags.isSubset(of: known) else {
            throw refuse("flags", "0x\(String(self.flags.rawValue, radix: 16))", "which has bits no flag defines; use .sharedMemoryAccess and .databaseConnection only")
        }
        if self.flags.contains(.databaseConnection) {
            guard self.flags.contains(.sharedMemoryAccess) else {
                throw refuse("flags", "[.databaseConnection]", "but a database connection requires shared-memory access; add .sharedMemoryAccess")
            }
            guard self.startTime != .supervisorStart else {
                throw refuse("startTime", "supervisorStart", "but a worker with a database connection cannot start before a consistent state; use .consistentState or .recoveryFinished")
            }
        }

        if let seconds = self.restartInterval.seconds {
            guard seconds >= 0 else {
                throw refuse("restartInterval", "\(seconds) s", "which is negative; use 0 (restart at once) up to 86400 s, or .never")
            }
            guard seconds <= 86_400 else {
                throw refuse("restartInterval", "\(seconds) s", "more than the limit of 86400 s (one day); use a shorter interval or .never")
            }
        }

        guard self.extra.count <= Self.maxExtraLength else {
            throw refuse("extra", "\(self.extra.count) bytes", "more than the limit of \(Self.maxExtraLength) bytes; pass larger data another way")
        }

        if let pid = self.notifyPID {
            guard !isStatic else {
                throw refuse("notifyPID", "\(pid)", "but a worker registered before the supervisor runs cannot ask for notification; register it dynamically")
            }
            guard pid > 0 else {
                throw refuse("notifyPID", "\(pid)", "which is not a process id; use nil for no notification")
            }
        }

        guard self.stopGracePeriod >= .zero else {
            throw refuse("stopGracePeriod", "\(self.stopGracePeriod)", "which is negative; use .zero to kill at once")
        }

        if let backoff = self.restartBackoff {
            if let initial = backoff.initial, initial < .zero {
                throw refuse("restartBackoff.initial", "\(initial)", "which is negative")
            }
            guard backoff.multiplier >= 1, backoff.multiplier.isFinite else {
                throw refuse("restartBackoff.multiplier", "\(backoff.multiplier)", "which must be a finite number of at least 1")
            }
            let first = backoff.initial ?? self.restartInterval.duration ?? .zero
            guard backoff.maximum >= first else {
                throw refuse("restartBackoff.maximum", "\(backoff.maximum)", "less than the first wait; raise the maximum")
            }
            // Without the throttle's floor, a first wait of zero stays zero however often it is multiplied.
            guard first > .zero || self.restartThrottle != nil else {
                throw refuse(
                    "restartBackoff.initial",
                    backoff.initial.map { "\($0)" } ?? "nil (the restart interval, 0 s)",
                    "so every wait would be 0 s (0 × multiplier stays 0); set initial above zero, or keep restartThrottle"
                )
            }
            guard backoff.jitter >= 0, backoff.jitter <= 1 else {
                throw refuse("restartBackoff.jitter", "\(backoff.jitter)", "outside 0...1")
            }
            guard backoff.resetAfter > .zero else {
                throw refuse("restartBackoff.resetAfter", "\(backoff.resetAfter)", "which must be positive")
            }
        }

        if let throttle = self.restartThrottle {
            guard throttle.initial > .zero else {
                throw refuse("restartThrottle.initial", "\(throttle.initial)", "which must be more than zero; use restartThrottle = nil for PostgreSQL's unthrottled restarts")
            }
            guard throttle.multiplier >= 1, throttle.multiplier.isFinite else {
                throw refuse("restartThrottle.multiplier", "\(throttle.multiplier)", "which must be a finite number of at least 1")
            }
            guard throttle.maximum >= throttle.initial else {
                throw refuse("restartThrottle.maximum", "\(throttle.maximum)", "less than restartThrottle.initial (\(throttle.initial)); raise the maximum")
            }
            guard throttle.stableAfter > .zero else {
                throw refuse("restartThrottle.stableAfter", "\(throttle.stableAfter)", "which must be positive")
            }
        }

        if let budget = self.restartBudget {
            guard budget.maxRestarts >= 1 else {
                throw refuse("restartBudget.maxRestarts", "\(budget.maxRestarts)", "which must be at least 1; use restartInterval .never for no restarts")
            }
            guard budget.window > .zero else {
                throw refuse("restartBudget.window", "\(budget.window)", "which must be positive")
            }
        }

        if let user = self.user { try Self.checkLabel(user, field: "user", worker: self.name) }
        if let group = self.group { try Self.checkLabel(group, field: "group", worker: self.name) }

        try self.entryPoint.validate(worker: self.name)
    }

    static func checkLabel(_ label: String, field: String, worker: String) throws(RegistrationError) {
        let bytes = label.utf8.count
        guard bytes > 0 else {
            throw RegistrationError(workerName: worker, field: field, value: "empty", rule: "but it must not be empty")
        }
        guard bytes <= Self.maxNameLength else {
            throw RegistrationError(
                workerName: worker,
                field: field,
                value: "'\(label)' (\(bytes) bytes of UTF-8)",
                rule: "more than the limit of \(Self.maxNameLength) bytes; shorten it (it is never cut silently)"
            )
        }
        guard !label.utf8.contains(0) else {
            throw RegistrationError(workerName: worker, field: field, value: "a string with a NUL byte", rule: "which a worker's environment cannot carry")
        }
        if let control = label.unicodeScalars.first(where: Self.isControl) {
            throw RegistrationError(
                workerName: worker.unicodeScalars.contains(where: Self.isControl) ? Self.visible(worker) : worker,
                field: field,
                value: "'\(Self.visible(label))'",
                rule: "which holds the control character U+\(String(control.value, radix: 16, uppercase: true).leftPadded(to: 4)); names appear in logs, where a newline or an escape sequence would forge lines: use printable characters only"
            )
        }
    }
}

extension BackgroundWorker {
    /// C0 and C1 control characters, and the Unicode line and paragraph separators.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    /// The text with its control characters escaped, for an error message.
    static func visible(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            if Self.isControl(scalar) {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}

extension BackgroundWorker.EntryPoint {
    func validate(worker: String) throws(RegistrationError) {
        if let name = self.builtinName {
            try BackgroundWorker.checkLabel(name, field: "entryPoint.builtin", worker: worker)
            return
        }
        if let library = self.library {
            try BackgroundWorker.checkLabel(library.path, field: "entryPoint.library", worker: worker)
            try BackgroundWorker.checkLabel(library.function, field: "entryPoint.function", worker: worker)
            return
        }
        guard let executable = self.executable else { return }
        guard !executable.path.isEmpty else {
            throw RegistrationError(workerName: worker, field: "entryPoint", value: "an empty executable path", rule: "but it must name a program")
        }
        let strings = [executable.path] + executable.arguments + [executable.workingDirectory ?? ""]
        for string in strings where string.utf8.contains(0) {
            throw RegistrationError(workerName: worker, field: "entryPoint", value: "'\(string)'", rule: "which contains a NUL byte")
        }
        for (key, value) in executable.environment {
            guard !key.isEmpty, !key.utf8.contains(UInt8(ascii: "=")), !key.utf8.contains(0), !value.utf8.contains(0) else {
                throw RegistrationError(
                    workerName: worker,
                    field: "entryPoint.environment",
                    value: "'\(key)'",
                    rule: "which is not a valid variable name (empty, or with '=' or NUL)"
                )
            }
            guard !key.hasPrefix(WorkerProcessContract.environmentPrefix) else {
                throw RegistrationError(
                    workerName: worker,
                    field: "entryPoint.environment",
                    value: "'\(key)'",
                    rule: "which is reserved for the worker process contract (\(WorkerProcessContract.environmentPrefix)*)"
                )
            }
        }
    }
}
