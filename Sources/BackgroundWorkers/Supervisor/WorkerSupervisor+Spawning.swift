import BackgroundWorkerContract
import Logging
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension WorkerSupervisor {
    /// Spawns a worker's process, in a session and process group of its own, and says how it went.
    func spawn(_ id: WorkerID) -> WorkerStateMachine.Input {
        guard let resources = self.resources(id), let worker = self.machine.worker(id) else {
            return .spawnFailed(UVError(.invalidArgument, context: "worker \(id) is not registered"))
        }
        let entry = worker.registration.entryPoint
        let executable: (path: String, arguments: [String], environment: [String: String], workingDirectory: String?)
        // The fork server for this entry point, if any, and the library it loads before forking.
        var forking: (server: ForkServer?, library: String?) = (nil, nil)
        if let library = entry.library {
            // bgworker-host loads the library and calls the function inside the worker runtime.
            let directory = self.configuration.libraryDirectory ?? Self.executableDirectory
            let path = library.path.contains("/") ? library.path : directory + "/" + library.path
            let host = self.configuration.hostExecutable ?? Self.executableDirectory + "/bgworker-host"
            executable = (host, [path, library.function], [:], nil)
            forking = (self.libraryForkServer, path)
        } else if let name = entry.builtinName {
            // Re-execute this very binary; its main hands over to the built-in (BuiltinWorkers.runIfRequested).
            executable = (self.configuration.builtinExecutable ?? "/proc/self/exe", [WorkerProcessContract.builtinMarker, name], [:], nil)
            forking = (self.forkServer, nil)
        } else if let direct = entry.executable {
            executable = direct
        } else {
            return .spawnFailed(UVError(.invalidArgument, context: "worker '\(resources.name)' has no entry point"))
        }
        let identity = WorkerProcessContract.Identity(
            worker: worker.registration,
            slot: id.slot,
            generation: id.generation,
            supervisorPID: self.machine.settings.supervisorPID,
            reportsReadiness: worker.registration.reportsReadiness,
            // Library and built-in entry points run in the worker runtime, which reports why it fails.
            reportsStatus: entry.library != nil || entry.builtinName != nil,
            sharedMemorySize: worker.usesSharedMemory ? self.sharedMemory?.size : nil
        )
        // Over the supervisor's own (prepared once), the entry point's variables, then the contract's.
        // The database server, for database workers (registration refuses them without one).
        let database = worker.registration.flags.contains(.databaseConnection) ? self.configuration.database : nil
        var environment = identity.environment
        if let database { environment.merge(database.environment) { contract, _ in contract } }
        environment.merge(executable.environment) { contract, _ in contract }
        var options = UVSpawnOptions(
            executable: executable.path,
            arguments: executable.arguments,
            environment: environment,
            workingDirectory: executable.workingDirectory,
            detached: true
        )
        options.baseEnvironment = self.baseEnvironment
        options.strategy = self.configuration.spawnStrategy
        do {
            if let ids = try Self.identity(of: worker.registration, strategy: options.strategy) {
                options.userID = ids.uid
                options.groupID = ids.gid
            }
        } catch {
            // Checked at registration; a user removed since cannot be had now.
            return .spawnFailed(UVError(.invalidArgument, context: error.description))
        }
        options.argumentZero = worker.registration.name
        options.descriptors[WorkerProcessContract.aliveDescriptor] = self.alivePipe.readEnd
        if worker.usesSharedMemory, let segment = self.sharedMemory {
            options.descriptors[WorkerProcessContract.sharedMemoryDescriptor] = segment.descriptor
        }
        if database != nil, self.databasePassword >= 0 {
            options.descriptors[WorkerProcessContract.databasePasswordDescriptor] = self.databasePassword
        }

        var readiness: UVPipePair?
        if identity.statusDescriptor != nil {
            do {
                let pipe = try UVPipePair()
                readiness = pipe
                options.descriptors[WorkerProcessContract.readinessDescriptor] = pipe.writeEnd
            } catch {
                return .spawnFailed(error)
            }
        }

        let onExit: (UVExitStatus) -> Void = { status in
            // The exit callback runs on the loop thread: enter the actor synchronously.
            self.assumeIsolated { $0.processExited(id, status) }
        }
        var forked: UVChildProcess?
        if let server = forking.server, options.userID == nil, options.groupID == nil {
            switch server.fork(options, preloading: forking.library, onExit: onExit) {
            case .success(let process):
                forked = process
            case .failure(let refusal):
                if case .ready = server.state {
                    self.logger.info("exec instead of fork: \(refusal)", metadata: resources.metadata)
                }
            }
        }
        let process: UVChildProcess
        if let forked {
            process = forked
        } else {
            do {
                process = try self.loop.spawn(options, onExit: onExit)
            } catch {
                readiness?.close()
                return .spawnFailed(error)
            }
        }
        resources.process = process
        resources.forked = forked != nil
        if forking.server != nil {
            if forked != nil { self.forkServedStarts.forked += 1 } else { self.forkServedStarts.execd += 1 }
        }
        self.guardian?.hold(process.pid)
        if let readiness {
            readiness.closeWriteEnd()
            self.watchReadiness(resources, descriptor: readiness.readEnd)
        }
        return .spawned(pid: process.pid)
    }

    /// Reads the worker's status descriptor: `READY=1` and `ERROR=` lines.
    private func watchReadiness(_ resources: WorkerResources, descriptor: Int32) {
        let id = resources.id
        do {
            resources.readiness = try self.loop.readLines(
                from: descriptor,
                maxLineLength: WorkerProcessContract.maxReadinessLineLength,
                onLine: { line in
                    self.assumeIsolated { supervisor in
                        if line == WorkerProcessContract.readyLine {
                            supervisor.apply(id, .ready)
                        } else if line == WorkerProcessContract.notifyLine {
                            supervisor.apply(id, .acceptsNotifications)
                        } else if line == WorkerProcessContract.builtinLine {
                            supervisor.apply(id, .builtinStarted)
                        } else if line.hasPrefix(WorkerProcessContract.errorLinePrefix) {
                            let text = String(line.dropFirst(WorkerProcessContract.errorLinePrefix.count).prefix(1000))
                            supervisor.apply(id, .reportedError(text))
                        }
                    }
                },
                onEnd: { _ in }
            )
        } catch {
            _ = close(descriptor)
            self.logger.warning("cannot read readiness: \(error)", metadata: resources.metadata)
        }
    }

    /// The directory of this process's executable (`/proc/self/exe`), read once.
    static let executableDirectory: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return "." }
        let path = String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }()

    /// The supervisor's environment at creation, the base of every worker's; the contract's own variables are
    /// the supervisor's to set, never to inherit.
    static func currentEnvironment() -> UVEnvironment {
        let variables = UVEnvironment.current().variables.filter { !$0.key.hasPrefix(WorkerProcessContract.environmentPrefix) }
        // Taken from a well-formed environment: nothing to refuse.
        return try! UVEnvironment(variables)
    }
}
