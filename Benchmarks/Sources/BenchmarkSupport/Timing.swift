#if canImport(Glibc)
import Glibc
#endif

/// Whole nanoseconds in a duration, for the custom metrics of the interleaved benchmarks.
public func nanoseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
}

/// Whole microseconds in a duration, for the custom metrics of the interleaved benchmarks.
public func microseconds(_ duration: Duration) -> Int {
    Int(duration.components.seconds) * 1_000_000 + Int(duration.components.attoseconds / 1_000_000_000_000)
}

/// Times contenders side by side in one sample of an interleaved benchmark: each runs `batch` times in a row,
/// in an order that rotates with `turn` (pass the sample's number), so that drift in the machine's speed falls
/// on each alike. Returns each contender's time for its whole batch, in the order given.
public func timeInRotation(
    turn: Int,
    batch: Int,
    _ contenders: [() async throws -> Void]
) async throws -> [Duration] {
    try await measuredInRotation(turn: turn, batch: batch, contenders.map { contender in
        {
            let start = ContinuousClock.now
            try await contender()
            return start.duration(to: .now)
        }
    })
}

/// Like ``timeInRotation(turn:batch:_:)``, for contenders that time only part of their run themselves (a start,
/// not the clean-up after it): each returns what it measured; the sums per contender are returned in order.
public func measuredInRotation(
    turn: Int,
    batch: Int,
    _ contenders: [() async throws -> Duration]
) async throws -> [Duration] {
    var elapsed = [Duration](repeating: .zero, count: contenders.count)
    for step in 0..<contenders.count {
        let which = (step + turn) % contenders.count
        for _ in 0..<batch {
            elapsed[which] += try await contenders[which]()
        }
    }
    return elapsed
}

/// The directory of the running benchmark's executable, where SwiftPM puts the package's other executables.
public let executableDirectory: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, 4095)
    let path = String(decoding: buffer.prefix(max(0, count)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}()
