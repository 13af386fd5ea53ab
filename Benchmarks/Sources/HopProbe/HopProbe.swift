import CWorkerSupport
import Dispatch
import NIOCore
import NIOPosix
import UVConcurrency

actor Counter {
    private let executor: UnownedSerialExecutor
    private var value = 0
    nonisolated var unownedExecutor: UnownedSerialExecutor { self.executor }
    init(executor: UnownedSerialExecutor) { self.executor = executor }
    func increment(by amount: Int) -> (Int, pid_t) {
        self.value &+= amount
        return (self.value, cws_gettid())
    }
}

@inline(never) func tid() -> pid_t { cws_gettid() }

struct Tally {
    var hops = 0
    var callerKept = 0  // the caller came back on the thread it left
    var callerOnActorThread = 0  // the caller went on on the actor's thread: the hop back never left it
    var total: Duration = .zero

    mutating func hop(_ counter: Counter) async {
        let before = tid()
        let start = ContinuousClock.now
        let (_, inside) = await counter.increment(by: 1)
        self.total += start.duration(to: .now)
        let after = tid()
        self.hops += 1
        if after == before { self.callerKept += 1 }
        if after == inside { self.callerOnActorThread += 1 }
    }

    var line: String {
        "\(self.total / self.hops) per hop; back on the caller's thread \(self.callerKept)/\(self.hops); on the actor's thread \(self.callerOnActorThread)/\(self.hops)"
    }
}

@main
struct HopProbe {
    static func main() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let nio = Counter(executor: group.next().executor.asUnownedSerialExecutor())
        let uvLoop = try UVEventLoop(name: "probe")
        let uv = Counter(executor: uvLoop.asUnownedSerialExecutor())
        let spinning = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 50 : 50
        let uvLoop2 = try UVEventLoop(name: "probe2", spinBeforeSleep: .microseconds(spinning))
        let uv2 = Counter(executor: uvLoop2.asUnownedSerialExecutor())
        var ratios: [Double] = []
        var uvTimes: [Duration] = []
        var nioTimes: [Duration] = []
        for round in 0..<60 {
            var times: [Duration] = [.zero, .zero]
            for step in 0..<2 {
                let which = (step + round) % 2
                let counter = which == 0 ? uv2 : nio
                let done = DispatchSemaphore(value: 0)
                nonisolated(unsafe) var batch = Tally()
                Task.detached {
                    for _ in 0..<100 { await batch.hop(counter) }
                    done.signal()
                }
                done.wait()
                times[which] = batch.total / batch.hops
            }
            uvTimes.append(times[0])
            nioTimes.append(times[1])
            ratios.append(Double(times[0].components.attoseconds) / Double(times[1].components.attoseconds))
        }
        ratios.sort()
        uvTimes.sort()
        nioTimes.sort()
        _ = uv
        print("spin \(spinning) µs: uv p50 \(uvTimes[30]) nio p50 \(nioTimes[30]) ratio p50 \(ratios[30])")
    }
}
