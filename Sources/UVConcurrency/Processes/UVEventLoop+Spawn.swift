import CLibUV

#if canImport(Glibc)
import Glibc
#endif

extension UVEventLoop {
    /// Starts a child process with `uv_spawn`. Loop thread only.
    ///
    /// The pid is known when this returns. The exit is reported on the loop thread through `onExit`, then to
    /// ``UVChildProcess/waitForExit()``. `uv_spawn` blocks the loop thread until the child has called `exec`
    /// (about 0.25 ms for a small process; longer the larger this process's memory).
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

        let handle = UnsafeMutablePointer<uv_process_t>.allocate(capacity: 1)
        handle.initialize(to: uv_process_t())
        let status = Self.withCOptions(options) { cOptions in
            uv_spawn(self.uvLoop, handle, &cOptions)
        }
        guard status == 0 else {
            // A failed uv_spawn still registered the handle with the loop: close it, never free it directly.
            handle.pointee.data = nil
            uv_close(cuv_process_as_handle(handle)) { handle in
                UnsafeMutableRawPointer(handle!).assumingMemoryBound(to: uv_process_t.self).deallocate()
            }
            throw UVError(.spawnFailed, uvStatus: status, context: "spawning '\(options.executable)'")
        }
        let process = UVChildProcess(loop: self, handle: handle, options: options, onExit: onExit)
        handle.pointee.data = Unmanaged.passRetained(process).toOpaque()
        self.liveProcesses[ObjectIdentifier(process)] = process
        return process
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
        _ body: (inout uv_process_options_t) -> Int32
    ) -> Int32 {
        var strings: [UnsafeMutablePointer<CChar>?] = []
        defer { for string in strings { free(string) } }
        func cString(_ string: String) -> UnsafeMutablePointer<CChar> {
            let copy = strdup(string)!
            strings.append(copy)
            return copy
        }

        var argv: [UnsafeMutablePointer<CChar>?] = [cString(options.argumentZero ?? options.executable)]
        for argument in options.arguments { argv.append(cString(argument)) }
        argv.append(nil)

        var envp: [UnsafeMutablePointer<CChar>?]? = nil
        if let environment = options.environment {
            var list: [UnsafeMutablePointer<CChar>?] = []
            list.reserveCapacity(environment.count + 1)
            for (key, value) in environment.sorted(by: { $0.key < $1.key }) { list.append(cString("\(key)=\(value)")) }
            list.append(nil)
            envp = list
        }

        let stdioCount = Int((options.descriptors.keys.max() ?? -1) + 1)
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

        return argv.withUnsafeMutableBufferPointer { argvBuffer in
            stdio.withUnsafeMutableBufferPointer { stdioBuffer in
                func run(_ env: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
                    var cOptions = uv_process_options_t()
                    cOptions.exit_cb = { handle, status, signal in
                        guard let data = handle!.pointee.data else { return }
                        Unmanaged<UVChildProcess>.fromOpaque(data).takeUnretainedValue()
                            .exited(status: status, signal: signal)
                    }
                    cOptions.file = UnsafePointer(file)
                    cOptions.args = argvBuffer.baseAddress
                    cOptions.env = env
                    cOptions.cwd = cwd.map { UnsafePointer($0) }
                    cOptions.flags = flags
                    cOptions.stdio_count = Int32(stdioCount)
                    cOptions.stdio = stdioBuffer.baseAddress
                    cOptions.uid = options.userID ?? 0
                    cOptions.gid = options.groupID ?? 0
                    return body(&cOptions)
                }
                guard envp != nil else { return run(nil) }
                return envp!.withUnsafeMutableBufferPointer { run($0.baseAddress) }
            }
        }
    }
}
