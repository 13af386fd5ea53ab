/// PostgreSQL's `max_worker_processes` slots: a fixed pool, the lowest free slot taken first, and a generation
/// per slot bumped at every reuse, so that a handle (slot, generation) outlives its worker safely (ABA-safe).
///
/// Pure data: no processes, no clocks.
struct SlotTable<Entry> {
    private var entries: [Entry?]
    private var generations: [UInt64]
    private(set) var used = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.entries = Array(repeating: nil, count: capacity)
        self.generations = Array(repeating: 0, count: capacity)
    }

    var capacity: Int { self.entries.count }

    /// Takes the lowest free slot for `make(id)`; nil when every slot is used.
    mutating func insert(_ make: (WorkerID) -> Entry) -> WorkerID? {
        guard let slot = self.entries.firstIndex(where: { $0 == nil }) else { return nil }
        self.generations[slot] &+= 1
        let id = WorkerID(slot: slot, generation: self.generations[slot])
        self.entries[slot] = make(id)
        self.used += 1
        return id
    }

    /// The entry of a live registration; nil for a freed or reused slot, or one out of range.
    subscript(id: WorkerID) -> Entry? {
        guard self.entries.indices.contains(id.slot), self.generations[id.slot] == id.generation else { return nil }
        return self.entries[id.slot]
    }

    /// Replaces the entry of a live registration (which must exist).
    mutating func update(_ id: WorkerID, _ entry: Entry) {
        precondition(self[id] != nil, "no live registration \(id)")
        self.entries[id.slot] = entry
    }

    /// Frees the slot of a live registration.
    mutating func remove(_ id: WorkerID) {
        guard self[id] != nil else { return }
        self.entries[id.slot] = nil
        self.used -= 1
    }

    /// Every live entry, in slot order. Lazy: a scan allocates nothing. The view works on a copy, so entries may
    /// be changed while iterating it.
    var all: some Sequence<Entry> {
        self.entries.lazy.compactMap { $0 }
    }
}
