import CWorkerSupport

/// How ``UVEventLoop/spawn(_:onExit:)`` starts a child. Both strategies give the child the same things (the
/// descriptors of ``UVSpawnOptions/descriptors``, an empty signal mask, default signal dispositions, its own
/// session when detached) and report the exit the same way, on the loop thread.
///
/// A struct over a private enum, so that strategies can be added without breaking callers.
public struct UVSpawnStrategy: Hashable, Sendable, CustomStringConvertible {
    private enum Base: Hashable, Sendable {
        case automatic
        case libuv
        case posixSpawn
    }

    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// ``posixSpawn`` where the kernel has pidfds and no user or group switch is asked for; ``libuv`` otherwise.
    public static let automatic = UVSpawnStrategy(.automatic)

    /// libuv's `uv_spawn`: `fork` + `exec`, reaped by libuv's SIGCHLD handling. Supports ``UVSpawnOptions/userID``
    /// and ``UVSpawnOptions/groupID``. `fork` copies this process's page tables, so it slows down as the
    /// process grows (about 0.5 ms small, about 57 ms at 2 GiB resident).
    public static let libuv = UVSpawnStrategy(.libuv)

    /// glibc's `posix_spawn` (`clone(CLONE_VM | CLONE_VFORK)`: no page tables copied, whatever this process's
    /// size) plus a pidfd (Linux 5.3+) watched on the loop, reaped with `waitpid` for that pid only. Does not
    /// support switching user or group. This is where libuv's own Linux spawn is heading.
    public static let posixSpawn = UVSpawnStrategy(.posixSpawn)

    /// The strategy's name.
    public var description: String {
        switch self.base {
        case .automatic: "automatic"
        case .libuv: "libuv"
        case .posixSpawn: "posixSpawn"
        }
    }

    /// The concrete strategy for `options` on this machine.
    func resolved(for options: UVSpawnOptions) throws(UVError) -> UVSpawnStrategy {
        switch self.base {
        case .libuv:
            return .libuv
        case .posixSpawn:
            guard options.userID == nil, options.groupID == nil else {
                throw UVError(
                    .invalidArgument,
                    context: "the posixSpawn strategy cannot switch user or group for '\(options.executable)'; use .libuv"
                )
            }
            guard cws_has_pidfd() == 1 else {
                throw UVError(
                    .invalidArgument,
                    context: "the posixSpawn strategy needs pidfd_open (Linux 5.3+), which this kernel lacks; use .libuv"
                )
            }
            return .posixSpawn
        case .automatic:
            let usable = options.userID == nil && options.groupID == nil && cws_has_pidfd() == 1
            return usable ? .posixSpawn : .libuv
        }
    }
}
