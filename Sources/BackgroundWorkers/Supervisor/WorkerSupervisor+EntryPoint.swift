import BackgroundWorkerContract
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

extension WorkerSupervisor {
    /// Refuses at registration, naming the field, what can be known then to keep a worker from starting: an
    /// executable that does not exist, is a directory or may not be executed, one not found in `PATH`, a
    /// working directory that does not exist, a missing `bgworker-host` or library. A file that goes away after
    /// the registration still fails at spawn, and the handle says so.
    func checkEntryPoint(_ worker: BackgroundWorker) throws(RegistrationError) {
        func refuse(_ field: String, _ value: String, _ rule: String) -> RegistrationError {
            RegistrationError(workerName: worker.name, field: field, value: value, rule: rule)
        }
        _ = try Self.identity(of: worker, strategy: self.configuration.spawnStrategy)
        if worker.flags.contains(.databaseConnection) && self.configuration.database == nil {
            throw refuse(
                "flags",
                "[.sharedMemoryAccess, .databaseConnection]",
                "but this supervisor has no database server; set Configuration.database to the PostgreSQL server's socket directory or host"
            )
        }
        let entry = worker.entryPoint
        if let library = entry.library {
            let host = self.configuration.hostExecutable ?? Self.executableDirectory + "/bgworker-host"
            if let problem = Self.executableProblem(host) {
                throw refuse(
                    "entryPoint.library",
                    "'\(library.path)'",
                    "but bgworker-host, which runs library entry points, \(problem) at '\(host)'. SwiftPM builds only the root package's executables: build it with `swift build --product bgworker-host` in the swift-background-workers checkout and set Configuration.hostExecutable to the built file"
                )
            }
            let directory = self.configuration.libraryDirectory ?? Self.executableDirectory
            let path = library.path.contains("/") ? library.path : directory + "/" + library.path
            if let kind = Self.fileKind(path), kind != S_IFREG {
                throw refuse("entryPoint.library", "'\(path)'", "which is not a file")
            } else if Self.fileKind(path) == nil {
                throw refuse("entryPoint.library", "'\(path)'", "which does not exist; name the shared library by its path, or put it in Configuration.libraryDirectory (\(directory))")
            }
            return
        }
        if entry.builtinName != nil, let binary = self.configuration.builtinExecutable, let problem = Self.executableProblem(binary) {
            throw refuse("entryPoint.builtin", "'\(entry.builtinName!)'", "but Configuration.builtinExecutable '\(binary)', which runs built-ins, \(problem)")
        }
        guard let executable = entry.executable else { return }  // built-in: this very binary, or builtinExecutable
        if let directory = executable.workingDirectory {
            switch Self.fileKind(directory) {
            case nil:
                throw refuse("entryPoint.workingDirectory", "'\(directory)'", "which does not exist")
            case let kind? where kind != S_IFDIR:
                throw refuse("entryPoint.workingDirectory", "'\(directory)'", "which is not a directory")
            default:
                break
            }
        }
        if executable.path.contains("/") {
            let base = executable.workingDirectory ?? "."
            let path = executable.path.hasPrefix("/") ? executable.path : base + "/" + executable.path
            if let problem = Self.executableProblem(path) {
                throw refuse("entryPoint.executable", "'\(executable.path)'", "which \(problem)")
            }
        } else {
            let search = executable.environment["PATH"] ?? self.baseEnvironment.variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
            let found = search.split(separator: ":").contains { directory in
                Self.executableProblem(directory + "/" + executable.path) == nil
            }
            guard found else {
                throw refuse("entryPoint.executable", "'\(executable.path)'", "which is not an executable file in any directory of the worker's PATH (\(search)); give its full path")
            }
        }
    }

    /// The user and group ids a worker runs as, or nil to keep the supervisor's: resolved from names or
    /// numbers, refused when this process cannot switch to them.
    static func identity(of worker: BackgroundWorker, strategy: UVSpawnStrategy) throws(RegistrationError) -> (uid: UInt32, gid: UInt32)? {
        guard worker.user != nil || worker.group != nil else { return nil }
        func refuse(_ field: String, _ value: String, _ rule: String) -> RegistrationError {
            RegistrationError(workerName: worker.name, field: field, value: value, rule: rule)
        }
        let field = worker.user != nil ? "user" : "group"
        let value = worker.user ?? worker.group!
        guard geteuid() == 0 else {
            throw refuse(field, "'\(value)'", "but running a worker as another user or group needs a supervisor running as root; this one runs as uid \(geteuid())")
        }
        guard strategy != .posixSpawn else {
            throw refuse(field, "'\(value)'", "but the posixSpawn strategy cannot switch user or group; use .automatic or .libuv")
        }
        var uid = getuid()
        var gid = getgid()
        if let user = worker.user {
            if let entry = user.withCString({ getpwnam($0) }) ?? UInt32(user).flatMap({ getpwuid($0) }) {
                uid = entry.pointee.pw_uid
                gid = entry.pointee.pw_gid
            } else if let number = UInt32(user) {
                // A numeric id without a passwd entry, as chown allows: its group is the same number.
                uid = number
                gid = number
            } else {
                throw refuse("user", "'\(user)'", "which is not a user of this system")
            }
        }
        if let group = worker.group {
            if let entry = group.withCString({ getgrnam($0) }) {
                gid = entry.pointee.gr_gid
            } else if let number = UInt32(group) {
                gid = number
            } else {
                throw refuse("group", "'\(group)'", "which is not a group of this system")
            }
        }
        return (uid, gid)
    }

    /// The `S_IFMT` bits of a path's file, following links; nil when nothing is there.
    static func fileKind(_ path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// Why `path` cannot be executed by this process, or nil when it can.
    static func executableProblem(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            return errno == ENOENT || errno == ENOTDIR ? "does not exist" : "cannot be read (\(String(cString: strerror(errno))))"
        }
        if info.st_mode & S_IFMT == S_IFDIR { return "is a directory, not a program" }
        guard info.st_mode & S_IFMT == S_IFREG else { return "is not a regular file" }
        guard access(path, X_OK) == 0 else {
            return "may not be executed by this supervisor's user (mode \(String(info.st_mode & 0o7777, radix: 8))); make it executable"
        }
        // The kernel runs ELF binaries and #! scripts; anything else fails with ENOEXEC under posix_spawn, while
        // uv_spawn's execvp would quietly hand it to /bin/sh. Refused alike under both.
        let file = open(path, O_RDONLY | O_CLOEXEC)
        if file >= 0 {
            defer { close(file) }
            var magic = [UInt8](repeating: 0, count: 4)
            let count = read(file, &magic, 4)
            let isELF = count == 4 && magic == [0x7F, 0x45, 0x4C, 0x46]  // \x7fELF
            let isScript = count >= 2 && magic[0] == 0x23 && magic[1] == 0x21  // #!
            if count >= 0 && !isELF && !isScript {
                return "is not an executable format (neither an ELF binary nor a script with a #! line); add a #! line"
            }
        }
        return nil
    }
}
