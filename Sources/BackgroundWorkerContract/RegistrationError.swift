/// Why a registration was refused: which field, what value, and what the rule is.
///
/// ```
/// invalid registration of worker 'indexer': restartInterval is 90000 s, more than the limit of 86400 s
/// (one day); use a shorter interval or .never
/// ```
public struct RegistrationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The field that broke a rule, named as in ``BackgroundWorker`` (`name`, `extra`, `flags`...).
    public let field: String
    /// The offending value, shortened for display.
    public let value: String
    /// The rule, and how to satisfy it.
    public let rule: String
    /// The worker's name as given (possibly the offending value itself), shortened for display.
    public let workerName: String

    /// Creates an error.
    public init(workerName: String, field: String, value: String, rule: String) {
        self.workerName = Self.shortened(workerName)
        self.field = field
        self.value = Self.shortened(value)
        self.rule = rule
    }

    /// One sentence: the worker, the field, its value and the rule.
    public var description: String {
        "invalid registration of worker '\(self.workerName)': \(self.field) is \(self.value), \(self.rule)"
    }

    static func shortened(_ text: String) -> String {
        text.count <= 80 ? text : String(text.prefix(77)) + "..."
    }
}
