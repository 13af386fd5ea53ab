/// Whole nanoseconds in a duration, for the custom metrics of the interleaved benchmarks.
public func nanoseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
}

/// Whole microseconds in a duration, for the custom metrics of the interleaved benchmarks.
public func microseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1_000_000 + Int(duration.components.attoseconds / 1_000_000_000_000)
}
