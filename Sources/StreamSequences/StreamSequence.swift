/// An `AsyncSequence` over a private `AsyncStream`: the one wrapper behind the package's sequences of events
/// (`WorkerEvents`), signals (`UVSignalSequence`) and reload requests (`WorkerReloads`).
///
/// Whoever makes one chooses and documents its buffering policy (see each of those types). The sequence can keep
/// its producer alive (a signal watcher, for example) for as long as the sequence or one of its iterators exists.
/// Iterate it from one task.
public struct StreamSequence<Element: Sendable>: AsyncSequence, Sendable {
    /// Never fails.
    public typealias Failure = Never

    let stream: AsyncStream<Element>
    /// What produces the elements, kept alive with the sequence.
    let producer: (any AnyObject & Sendable)?

    /// Wraps `stream`; `producer` lives as long as the sequence or an iterator of it.
    package init(_ stream: AsyncStream<Element>, keepingAlive producer: (any AnyObject & Sendable)? = nil) {
        self.stream = stream
        self.producer = producer
    }

    /// The sequence's iterator.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<Element>.Iterator
        let producer: (any AnyObject & Sendable)?

        /// The next element, or `nil` once the sequence finished.
        public mutating func next() async -> Element? {
            await self.base.next()
        }

        /// The next element, or `nil` once the sequence finished.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> Element? {
            await self.base.next(isolation: actor)
        }
    }

    /// Makes the iterator.
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: self.stream.makeAsyncIterator(), producer: self.producer)
    }
}
