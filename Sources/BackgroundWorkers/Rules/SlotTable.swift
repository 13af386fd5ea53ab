/// PostgreSQL's `max_worker_processes` slots: a fixed pool, the lowest free slot taken first, and a generation
/// per slot bumped at every reuse, so that a handle (slot, generation) outlives its worker safely (ABA-safe).
///
/// Pure data: no processes, no clocks. The supervisor keeps one and is its only user.
struct SlotTable<Entry> {
    private var entries: [Entry?]
    private var generations: [UInt64]
    /// For each slot, how the most recent generation ended, so its handle can still say why.
    private var lastOutcomes: [(generation: UInt64, detail: WorkerStatusDetail)?]
    private(set) var used = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.entries = Array(repeating: nil, count: capacity)
        self.generations = Array(repeating: 0, count: capacity)
        self.lastOutcomes = Array(repeating: nil, count: capacity)
    }

    var capacity: Int { self.entries.count }

    /// Takes the lowest free slot for `make(slot, generation)`; nil when every slot is used.
    mutating func insert(_ make: (Int, UInt64) -> Entry) -> (slot: Int, generation: UInt64)? {
        guard let slot = self.entries.firstIndex(where: { $0 == nil }) else { return nil }
        self.generations[slot] &+= 1
        let generation = self.generations[slot]
        self.entries[slot] = make(slot, generation)
        self.lastOutcomes[slot] = nil
        self.used += 1
        return (slot, generation)
    }

    /// The entry of a handle, or nil when the handle is stale or out of range.
    func entry(slot: Int, generation: UInt64) -> Entry? {
        guard self.entries.indices.contains(slot), self.generations[slot] == generation else { return nil }
        return self.entries[slot]
    }

    /// Frees a slot and remembers how its generation ended.
    mutating func remove(slot: Int, outcome: WorkerStatusDetail) {
        guard self.entries[slot] != nil else { return }
        self.entries[slot] = nil
        self.lastOutcomes[slot] = (self.generations[slot], outcome)
        self.used -= 1
    }

    /// How a freed handle's worker ended: known for the slot's latest generation, `.replaced` for older ones.
    func outcome(slot: Int, generation: UInt64) -> WorkerStatusDetail {
        guard self.entries.indices.contains(slot), let last = self.lastOutcomes[slot], last.generation == generation else {
            return .unregistered(.replaced, lastExit: nil)
        }
        return last.detail
    }

    /// Every live entry, in slot order. Lazy: scanning the table on every exit allocates nothing. The view
    /// works on a copy, so entries may be removed while iterating it.
    var all: some Sequence<Entry> {
        self.entries.lazy.compactMap { $0 }
    }
}
