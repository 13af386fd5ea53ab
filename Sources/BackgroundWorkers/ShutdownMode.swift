/// How the supervisor stops (PostgreSQL's smart, fast and immediate shutdown).
public struct ShutdownMode: Hashable, Sendable, CustomStringConvertible {
    private enum Base: Int, Hashable, Sendable {
        case smart
        case fast
        case immediate
    }

    private let base: Base
    private init(_ base: Base) { self.base = base }

    /// Take no new registrations, restart nothing, and wait for every worker to exit by itself.
    public static let smart = ShutdownMode(.smart)
    /// SIGTERM to every worker's process group at once, then SIGKILL to each after its grace period: one stuck
    /// worker cannot hang shutdown.
    public static let fast = ShutdownMode(.fast)
    /// SIGQUIT to every worker's process group, then SIGKILL after 5 seconds.
    public static let immediate = ShutdownMode(.immediate)

    /// The mode named `smart`, `fast` or `immediate` (as ``description`` prints it), or nil.
    public init?(name: String) {
        switch name {
        case "smart": self = .smart
        case "fast": self = .fast
        case "immediate": self = .immediate
        default: return nil
        }
    }

    /// Whether this mode is more forceful than `other` (a later, stronger request takes over).
    func isStronger(than other: ShutdownMode) -> Bool { self.base.rawValue > other.base.rawValue }

    /// `smart`, `fast` or `immediate`.
    public var description: String {
        switch self.base {
        case .smart: "smart"
        case .fast: "fast"
        case .immediate: "immediate"
        }
    }
}
