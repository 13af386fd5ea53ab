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
///
/// Every sample, separate or interleaved, is 1,000 consecutive hops from one task, and the figure is the time per
/// hop within it. package-benchmark runs each sample in a fresh task, so a sample of one hop measured something
/// else: a caller whose thread had just handed the job over and was still awake when the answer came, so that
/// its continuation ran at once on the same thread (about 2 µs, the fast mode of a two-humped distribution). In
/// a run of hops the caller's thread has gone to sleep by then and must be woken for every hop, which is what
/// code that talks to an actor repeatedly pays, and what the interleaved benchmark always measured.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(5),
        maxIterations: 200
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
        configuration: .init(metrics: [uvMetric, nioMetric, ratioMetric], warmupIterations: 3, maxDuration: .seconds(20), maxIterations: 300)
    ) { benchmark in
        var turn = 0
        for _ in benchmark.scaledIterations {
            turn += 1
            let elapsed = try await timeInRotation(turn: turn, batch: 1000, [
                { blackHole(await uvCounter.increment(by: 1)) },
                { blackHole(await nioCounter.increment(by: 1)) },
            ])
            let (uv, nio) = (elapsed[0], elapsed[1])
            let uvNanoseconds = nanoseconds(uv) / 1000
            let nioNanoseconds = nanoseconds(nio) / 1000
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
