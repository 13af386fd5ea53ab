import Benchmark
import BenchmarkSupport
import NIOCore
import NIOPosix
import UVConcurrency

/// The same actor on three executors. Its method does real work, so that an optimised build cannot drop the hop.
actor Counter {
    private let executor: UnownedSerialExecutor
    private var value = 0

    nonisolated var unownedExecutor: UnownedSerialExecutor {
        self.executor
    }

    init(executor: UnownedSerialExecutor) {
        self.executor = executor
    }

    func increment(by amount: Int) -> Int {
        self.value &+= amount
        return self.value
    }
}

/// An actor on the default (global concurrent) executor.
actor DefaultCounter {
    private var value = 0

    func increment(by amount: Int) -> Int {
        self.value &+= amount
        return self.value
    }
}

/// Round trip of an `await` from a task on the global executor into an actor and back.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 1000,
        maxDuration: .seconds(5),
        maxIterations: 200_000
    )

    let defaultCounter = DefaultCounter()
    Benchmark("hop: actor on the default executor") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(await defaultCounter.increment(by: 1))
        }
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let nioLoop = group.next()
    let nioCounter = Counter(executor: nioLoop.executor.asUnownedSerialExecutor())
    Benchmark("hop: actor on a SwiftNIO EventLoop (baseline)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(await nioCounter.increment(by: 1))
        }
    }

    let uvLoop = try! UVEventLoop(name: "bench-hop")
    let uvCounter = Counter(executor: uvLoop.asUnownedSerialExecutor())
    Benchmark("hop: actor on a UVEventLoop") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(await uvCounter.increment(by: 1))
        }
    }

    // The two side by side in the same samples: the machine's speed drifts over seconds (other tenants),
    // so each sample times a batch on each executor, in alternating order, and records both and their ratio.
    let uvMetric = BenchmarkMetric.custom("UVEventLoop hop (ns)", useScalingFactor: false)
    let nioMetric = BenchmarkMetric.custom("SwiftNIO hop (ns)", useScalingFactor: false)
    let ratioMetric = BenchmarkMetric.custom("ratio UVEventLoop/SwiftNIO (‰)", useScalingFactor: false)
    Benchmark(
        "hop interleaved: UVEventLoop vs SwiftNIO",
        configuration: .init(metrics: [uvMetric, nioMetric, ratioMetric], warmupIterations: 5, maxDuration: .seconds(10), maxIterations: 400)
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            let elapsed = try await timeInRotation(turn: turn, batch: 100, [
                { blackHole(await uvCounter.increment(by: 1)) },
                { blackHole(await nioCounter.increment(by: 1)) },
            ])
            let (uv, nio) = (elapsed[0], elapsed[1])
            let uvNanoseconds = nanoseconds(uv) / 100
            let nioNanoseconds = nanoseconds(nio) / 100
            benchmark.measurement(uvMetric, uvNanoseconds)
            benchmark.measurement(nioMetric, nioNanoseconds)
            benchmark.measurement(ratioMetric, uvNanoseconds * 1000 / max(1, nioNanoseconds))
        }
    }

    let sleepyLoop = try! UVEventLoop(name: "bench-hop-nospin", spinBeforeSleep: .zero)
    let sleepyCounter = Counter(executor: sleepyLoop.asUnownedSerialExecutor())
    Benchmark("hop: actor on a UVEventLoop without spin") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(await sleepyCounter.increment(by: 1))
        }
    }
}
