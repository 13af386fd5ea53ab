#if canImport(Glibc)
import Glibc
#endif

/// Environment variables prepared once for many children: checked once and kept as C strings, so that a spawn
/// that uses them (``UVSpawnOptions/baseEnvironment``) neither checks nor copies them again.
///
/// Immutable once made; its memory is freed with it.
public final class UVEnvironment: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init; the C strings are never written.

    /// The variables, by name.
    public let variables: [String: String]
    /// `NAME=value` C strings, in the order of `keys`.
    let entries: [UnsafeMutablePointer<CChar>]
    let keys: [String]

    /// Prepares `variables`.
    /// - Throws: ``UVError`` with ``UVError/Code/invalidArgument`` for a name that is empty or holds `=` or a NUL
    ///   byte, or a value that holds a NUL byte, naming the variable.
    public init(_ variables: [String: String]) throws(UVError) {
        for (key, value) in variables {
            try Self.check(key, value)
        }
        self.variables = variables
        self.keys = Array(variables.keys)
        self.entries = self.keys.map { strdup("\($0)=\(variables[$0]!)")! }
    }

    /// This process's environment now.
    public static func current() -> UVEnvironment {
        var variables: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "="), equals != text.startIndex {
                variables[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        // Names from `environ` are well formed and hold no NUL byte; values neither.
        return try! UVEnvironment(variables)
    }

    deinit {
        for entry in self.entries { free(entry) }
    }

    static func check(_ key: String, _ value: String) throws(UVError) {
        guard !key.isEmpty, !key.utf8.contains(UInt8(ascii: "=")), !key.utf8.contains(0), !value.utf8.contains(0) else {
            throw UVError(
                .invalidArgument,
                context: "environment variable '\(key)' has an empty name, '=' or a NUL byte"
            )
        }
    }
}

extension UVEnvironment: Hashable {
    /// Equal when the variables are.
    public static func == (lhs: UVEnvironment, rhs: UVEnvironment) -> Bool { lhs.variables == rhs.variables }

    /// Hashes the variables.
    public func hash(into hasher: inout Hasher) { hasher.combine(self.variables) }
}
