/// An empty `async` Swift program: the start cost of Swift concurrency, which any async worker body pays.
@main
struct BenchEmptyAsyncMain {
    static func main() async {
        await Task.yield()
    }
}
