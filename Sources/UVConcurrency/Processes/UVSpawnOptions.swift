/// What to start, and how: the input of ``UVEventLoop/spawn(_:onExit:)``.
///
/// The child gets exactly the descriptors in ``descriptors``: every descriptor this package creates is
/// close-on-exec, and descriptors created elsewhere in the process without close-on-exec are closed in the
/// child (see the package documentation for the one gap of the `uv_spawn` path).
public struct UVSpawnOptions: Sendable, Hashable {
    /// The program to run: a path, or a bare name looked up in `PATH` as `execvp` does.
    public var executable: String
    /// The arguments after `argv[0]`.
    public var arguments: [String]
    /// `argv[0]`; `nil` uses ``executable``.
    public var argumentZero: String?
    /// The child's environment; `nil` inherits this process's environment at spawn time (or, with
    /// ``baseEnvironment``, gets exactly that).
    public var environment: [String: String]?
    /// Variables prepared once for many children: the child gets them, except those that ``environment``
    /// names, plus ``environment``. For a supervisor whose children share most of their environment.
    public var baseEnvironment: UVEnvironment?
    /// The child's working directory; `nil` inherits this process's.
    public var workingDirectory: String?
    /// Start the child in a session and process group of its own (`setsid`), so that
    /// ``UVChildProcess/signalGroup(_:)`` reaches it and everything it starts, and a terminal's Ctrl-C does not.
    public var detached: Bool
    /// The child's descriptors: child descriptor number to the parent's descriptor it receives.
    /// The default passes standard input, output and error through (`[0: 0, 1: 1, 2: 2]`). A standard stream
    /// left out is opened on `/dev/null`; any other number left out is closed in the child.
    public var descriptors: [Int32: Int32]
    /// Run the child as this user id (needs the privilege to switch); `nil` keeps this process's.
    public var userID: UInt32?
    /// Run the child as this group id (needs the privilege to switch); `nil` keeps this process's.
    public var groupID: UInt32?
    /// How to start the child; ``UVSpawnStrategy/automatic`` by default.
    public var strategy: UVSpawnStrategy

    /// The descriptors a child gets by default: standard input, output and error, passed through.
    public static let standardDescriptors: [Int32: Int32] = [0: 0, 1: 1, 2: 2]

    /// Creates spawn options.
    /// - Parameters:
    ///   - executable: The program: a path, or a name looked up in `PATH`.
    ///   - arguments: The arguments after `argv[0]`.
    ///   - environment: The environment, or `nil` to inherit this process's.
    ///   - workingDirectory: The working directory, or `nil` to inherit this process's.
    ///   - detached: Whether the child gets a session and process group of its own.
    ///   - descriptors: Child descriptor number to parent descriptor.
    public init(
        executable: String,
        arguments: [String] = [],
        environment: [String: String]? = nil,
        workingDirectory: String? = nil,
        detached: Bool = false,
        descriptors: [Int32: Int32] = UVSpawnOptions.standardDescriptors
    ) {
        self.executable = executable
        self.arguments = arguments
        self.argumentZero = nil
        self.environment = environment
        self.baseEnvironment = nil
        self.workingDirectory = workingDirectory
        self.detached = detached
        self.descriptors = descriptors
        self.userID = nil
        self.groupID = nil
        self.strategy = .automatic
    }

    /// Checks what libuv would otherwise reject with a less helpful message.
    func validate() throws(UVError) {
        guard !self.executable.isEmpty else {
            throw UVError(.invalidArgument, context: "the executable path is empty; name a program to run")
        }
        for (child, parent) in self.descriptors {
            guard child >= 0, child < 1024 else {
                throw UVError(
                    .invalidArgument,
                    context: "child descriptor number \(child) for '\(self.executable)' is out of range 0...1023"
                )
            }
            guard parent >= 0 else {
                throw UVError(
                    .invalidArgument,
                    context: "parent descriptor \(parent) for child descriptor \(child) of '\(self.executable)' is negative"
                )
            }
        }
        let strings = [self.executable] + self.arguments + [self.argumentZero ?? "", self.workingDirectory ?? ""]
        for string in strings where string.utf8.contains(0) {
            throw UVError(.invalidArgument, context: "an argument of '\(self.executable)' contains a NUL byte")
        }
        for (key, value) in self.environment ?? [:] {
            do {
                try UVEnvironment.check(key, value)
            } catch {
                throw UVError(.invalidArgument, context: "\(error.context) (spawning '\(self.executable)')")
            }
        }
    }
}

/// How a child process ended.
public enum UVExitStatus: Hashable, Sendable, CustomStringConvertible {
    /// It exited with this code (`exit(code)`, or returning from `main`).
    case exited(Int32)
    /// A signal ended it.
    case signaled(UVSignal)

    /// Whether it exited with code 0.
    public var isSuccess: Bool { self == .exited(0) }

    /// `exited with code N` or `killed by SIGNAME`.
    public var description: String {
        switch self {
        case .exited(let code): "exited with code \(code)"
        case .signaled(let signal): "killed by \(signal)"
        }
    }
}
