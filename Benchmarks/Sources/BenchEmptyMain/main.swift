// An empty Swift program: the start cost every Swift worker pays before any runtime of ours.
