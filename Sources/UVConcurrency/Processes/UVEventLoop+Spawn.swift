import CLibUV
import CWorkerSupport

#if canImport(Glibc)
import Glibc
#endif

extension UVEventLoop {
    /// Starts a child process, by ``UVSpawnOptions/strategy``. Loop thread only.
    ///
    /// The pid is known when this returns. The exit is reported on the loop thread through `onExit`, then to
    /// ``UVChildProcess/waitForExit()``. Spawning blocks the loop thread until the child has called `exec`
    /// (a fraction of a millisecond with `posix_spawn`; with `uv_spawn`, longer the larger this process).
    ///
    /// - Parameters:
    ///   - options: What to start, and how.
    ///   - onExit: Runs on the loop thread once the child was reaped.
    /// - Throws: ``UVError`` with ``UVError/Code/spawnFailed`` and the errno (ENOENT: no such executable;
    ///   EACCES: not executable; EAGAIN, ENOMEM: transient), ``UVError/Code/invalidArgument`` for malformed
    ///   options, or ``UVError/Code/loopStopped`` once shutdown began. Nothing is left running on failure.
    @discardableResult
    public func spawn(
        _ options: UVSpawnOptions,
        onExit: @escaping (UVExitStatus) -> Void = { _ in }
    ) throws(UVError) -> UVChildProcess {
        self.preconditionInEventLoop()
        try self.throwIfStopping("spawning '\(options.executable)'")
        try options.validate()

        let strategy = try options.strategy.resolved(for: options)
        let process: UVChildProcess
        if strategy == .posixSpawn {
            process = try self.spawnWithPosixSpawn(options, onExit: onExit)
        } else {
            process = try self.spawnWithLibuv(options, onExit: onExit)
        }
        self.liveProcesses[ObjectIdentifier(process)] = process
        return process
    }

    private func spawnWithLibuv(
        _ options: UVSpawnOptions,
        onExit: @escaping (UVExitStatus) -> Void
    ) throws(UVError) -> UVChildProcess {
        let handle = UnsafeMutablePointer<uv_process_t>.allocate(capacity: 1)
        handle.initialize(to: uv_process_t())
        let status = Self.withCOptions(options, forLibuv: true) { cOptions in
            // uv_spawn closes nothing in the child: descriptors that other code left inheritable are made
            // close-on-exec for the length of the call (uv_spawn returns once the child has called exec).
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 4096) { marked in
                let count = max(0, cws_mark_inheritable_cloexec(3, marked.baseAddress, Int32(marked.count)))
                defer { cws_unmark_cloexec(marked.baseAddress, count) }
                return uv_spawn(self.uvLoop, handle, &cOptions)
            }
        }
        guard status == 0 else {
            // A failed uv_spawn still registered the handle with the loop: close it, never free it directly.
            handle.pointee.data = nil
            uvCloseReleasingOwner(handle)
            throw UVError(.spawnFailed, uvStatus: status, context: Self.spawnContext(options, errno: -status))
        }
        let process = UVChildProcess(
            loop: self,
            pid: handle.pointee.pid,
            backend: .libuv(handle),
            executable: options.executable,
            detached: options.detached,
            strategy: .libuv,
            onExit: onExit
        )
        handle.pointee.data = Unmanaged.passRetained(process).toOpaque()
        return process
    }

    private func spawnWithPosixSpawn(
        _ options: UVSpawnOptions,
        onExit: @escaping (UVExitStatus) -> Void
    ) throws(UVError) -> UVChildProcess {
        var pid: pid_t = 0
        var pidfd: Int32 = -1
        let status = Self.withCOptions(options, forLibuv: false) { cOptions in
            let children = options.descriptors.keys.sorted()
            let parents = children.map { options.descriptors[$0]! }
            return cws_spawn(
                cOptions.file,
                cOptions.args,
                cOptions.env,
                cOptions.cwd,
                options.detached ? 1 : 0,
                options.executable.utf8.contains(UInt8(ascii: "/")) ? 0 : 1,
                children,
                parents,
                Int32(children.count),
                &pid,
                &pidfd
            )
        }
        guard status == 0 else {
            throw UVError(.spawnFailed, errno: status, context: Self.spawnContext(options, errno: status))
        }
        return self.watch(pid: pid, pidfd: pidfd, executable: options.executable, detached: options.detached, onExit: onExit)
    }

    /// Watches a child through its pidfd: reaped by pid when the pidfd becomes readable.
    private func watch(
        pid: Int32,
        pidfd: Int32,
        executable: String,
        detached: Bool,
        onExit: @escaping (UVExitStatus) -> Void
    ) -> UVChildProcess {
        let poll = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let initStatus = uv_poll_init(self.uvLoop, poll, pidfd)
        precondition(initStatus == 0, "uv_poll_init on a fresh pidfd failed: \(initStatus)")
        let process = UVChildProcess(
            loop: self,
            pid: pid,
            backend: .pidfd(poll, pidfd),
            executable: executable,
            detached: detached,
            strategy: .posixSpawn,
            onExit: onExit
        )
        poll.pointee.data = Unmanaged.passRetained(process).toOpaque()
        uv_poll_start(poll, Int32(UV_READABLE.rawValue)) { poll, _, _ in
            Unmanaged<UVChildProcess>.fromOpaque(poll!.pointee.data!).takeUnretainedValue().pidfdReadable()
        }
        return process
    }

    /// Takes over a child this process started by other means (for example a `fork` in C), given its pid and a
    /// pidfd for it: the loop reaps it by pid when it exits and reports the exit like a spawned child's. The
    /// loop owns the pidfd from then on. Loop thread only.
    ///
    /// - Parameters:
    ///   - pid: The child's pid.
    ///   - pidfd: A pidfd of it (`pidfd_open`).
    ///   - name: What to call it in messages.
    ///   - detached: Whether it leads a process group of its own.
    ///   - onExit: Runs on the loop thread once it was reaped.
    /// - Throws: ``UVError`` with ``UVError/Code/loopStopped`` once shutdown began.
    public func adoptChild(
        pid: Int32,
        pidfd: Int32,
        name: String,
        detached: Bool,
        onExit: @escaping (UVExitStatus) -> Void = { _ in }
    ) throws(UVError) -> UVChildProcess {
        self.preconditionInEventLoop()
        try self.throwIfStopping("watching process \(pid) (\(name))")
        let process = self.watch(pid: pid, pidfd: pidfd, executable: name, detached: detached, onExit: onExit)
        self.liveProcesses[ObjectIdentifier(process)] = process
        return process
    }

    /// What failed, for the error: a missing working directory reads as ENOENT too, so it is named when it is
    /// the missing one.
    static func spawnContext(_ options: UVSpawnOptions, errno: Int32) -> String {
        if errno == ENOENT, let directory = options.workingDirectory, access(directory, F_OK) != 0 {
            return "spawning '\(options.executable)' in working directory '\(directory)', which does not exist"
        }
        return "spawning '\(options.executable)'"
    }

    /// Starts a child process from any task: hops to the loop thread, spawns, and returns the process.
    ///
    /// Use ``UVChildProcess/waitForExit()`` for its exit.
    /// - Throws: As ``spawn(_:onExit:)``.
    public func spawnProcess(_ options: UVSpawnOptions) async throws(UVError) -> UVChildProcess {
        let result: Result<UVChildProcess, UVError> = await withCheckedContinuation { continuation in
            self.execute {
                continuation.resume(returning: Result { () throws(UVError) in try self.spawn(options) })
            }
        }
        return try result.get()
    }

    /// Builds `uv_process_options_t` with C strings that live for the duration of `body`.
    private static func withCOptions(
        _ options: UVSpawnOptions,
        forLibuv: Bool,
        _ body: (inout uv_process_options_t) -> Int32
    ) -> Int32 {
        options.withArgumentsAndEnvironment { argv, envp in
            Self.withCOptions(options, argv: argv, envp: envp, forLibuv: forLibuv, body)
        }
    }

    private static func withCOptions(
        _ options: UVSpawnOptions,
        argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
        envp: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
        forLibuv: Bool,
        _ body: (inout uv_process_options_t) -> Int32
    ) -> Int32 {
        let strings = CStringCopies()
        let cString = strings.copy

        // libuv takes the child's descriptors as an array indexed by child descriptor number (posix_spawn gets
        // them as file actions instead: no array for it).
        let stdioCount = forLibuv ? Int((options.descriptors.keys.max() ?? -1) + 1) : 0
        var stdio = [uv_stdio_container_t](repeating: uv_stdio_container_t(), count: stdioCount)
        for index in 0..<stdioCount {
            if let parent = options.descriptors[Int32(index)] {
                cuv_stdio_inherit_fd(&stdio[index], parent)
            } else {
                cuv_stdio_ignore(&stdio[index])
            }
        }

        let file = cString(options.executable)
        let cwd = options.workingDirectory.map(cString)
        var flags: UInt32 = 0
        if options.detached { flags |= UV_PROCESS_DETACHED.rawValue }
        if options.userID != nil { flags |= UV_PROCESS_SETUID.rawValue }
        if options.groupID != nil { flags |= UV_PROCESS_SETGID.rawValue }

        // The copies must outlive `body`, which uses them: kept alive to the end.
        defer { withExtendedLifetime(strings) {} }
        return stdio.withUnsafeMutableBufferPointer { stdioBuffer in
            var cOptions = uv_process_options_t()
            cOptions.exit_cb = { handle, status, signal in
                guard let data = handle!.pointee.data else { return }
                Unmanaged<UVChildProcess>.fromOpaque(data).takeUnretainedValue()
                    .exited(status: status, signal: signal)
            }
            cOptions.file = UnsafePointer(file)
            cOptions.args = argv
            cOptions.env = envp
            cOptions.cwd = cwd.map { UnsafePointer($0) }
            cOptions.flags = flags
            cOptions.stdio_count = Int32(stdioCount)
            cOptions.stdio = stdioBuffer.baseAddress
            cOptions.uid = options.userID ?? 0
            cOptions.gid = options.groupID ?? 0
            return body(&cOptions)
        }
    }
}

extension UVSpawnOptions {
    /// The child's argument vector (`argumentZero` or the executable, then the arguments) and environment
    /// (``environment`` over ``baseEnvironment``; nil: this process's own) as NULL-terminated C arrays, valid
    /// during `body`: for starting the child by other means than ``UVEventLoop/spawn(_:onExit:)``, such as a
    /// fork server.
    public func withArgumentsAndEnvironment<Result>(
        _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Result
    ) -> Result {
        let strings = CStringCopies()
        let cString = strings.copy

        var argv: [UnsafeMutablePointer<CChar>?] = [cString(self.argumentZero ?? self.executable)]
        for argument in self.arguments { argv.append(cString(argument)) }
        argv.append(nil)

        var envp: [UnsafeMutablePointer<CChar>?]? = nil
        if self.environment != nil || self.baseEnvironment != nil {
            let environment = self.environment ?? [:]
            var list: [UnsafeMutablePointer<CChar>?] = []
            list.reserveCapacity(environment.count + (self.baseEnvironment?.entries.count ?? 0) + 1)
            for (key, value) in environment { list.append(cString("\(key)=\(value)")) }
            if let base = self.baseEnvironment {
                // Already checked and copied once: only the ones the options do not replace.
                for (key, entry) in zip(base.keys, base.entries) where environment[key] == nil {
                    list.append(entry)
                }
            }
            list.append(nil)
            envp = list
        }
        defer { withExtendedLifetime(strings) {} }  // the copies must outlive `body`
        return argv.withUnsafeMutableBufferPointer { argvBuffer in
            guard envp != nil else { return body(argvBuffer.baseAddress!, nil) }
            return envp!.withUnsafeMutableBufferPointer { body(argvBuffer.baseAddress!, $0.baseAddress) }
        }
    }
}

/// C copies of Swift strings, freed together when the copies are dropped.
private final class CStringCopies {
    private var copies: [UnsafeMutablePointer<CChar>] = []

    func copy(_ string: String) -> UnsafeMutablePointer<CChar> {
        let copy = strdup(string)!
        self.copies.append(copy)
        return copy
    }

    deinit {
        for copy in self.copies { free(copy) }
    }
}
