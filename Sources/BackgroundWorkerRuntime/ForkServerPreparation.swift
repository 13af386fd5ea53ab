import BackgroundWorkerContract

/// Called once by the fork server (`ForkServer.c`) before it serves, on its one thread: makes the Swift runtime
/// instantiate the type metadata that every worker's start asks for, so that each forked worker finds it made.
/// A type's metadata is made at its first use in a process, by name (demangled, looked up, laid out) and, for a
/// standard-library generic, after registering its prespecialisations: 100 µs of a worker's start that a fork
/// otherwise pays again in every worker. The metadata caches live in memory the fork copies, and the call sites
/// below are the ones a worker's start runs, so their per-site caches are filled too.
///
/// What it must not do, because the server forks after it: start a thread or a task (a fork copies one thread,
/// and a lock another held stays held in the child; the server counts its threads after this and refuses to
/// serve with more than one), open a descriptor, or read anything of this process that a worker reads as its own
/// (the environment, `CommandLine.arguments`, `BackgroundWorker.current`), whose lazily made value the worker
/// would inherit instead of reading its own.
@_cdecl("bgw_fork_server_prepare_runtime")
func prepareForkServerRuntime() {
    // The identity, parsed by the code a worker's start runs, from sample values (not from this environment).
    let sample = [
        WorkerProcessContract.Variable.name: "fork-server", WorkerProcessContract.Variable.type: "fork-server",
        WorkerProcessContract.Variable.slot: "0", WorkerProcessContract.Variable.generation: "1",
        WorkerProcessContract.Variable.mainArgument: "0", WorkerProcessContract.Variable.extra: "",
        WorkerProcessContract.Variable.flags: "0", WorkerProcessContract.Variable.supervisorPID: "1",
        WorkerProcessContract.Variable.aliveDescriptor: "3", WorkerProcessContract.Variable.readinessDescriptor: "4",
    ]
    guard let identity = try? WorkerProcessContract.Identity(variable: { sample[$0] }) else { return }
    // The context a body gets, and the reload and notification sequences a body iterates; no watcher thread.
    let context = WorkerContext(
        identity: identity,
        reloads: SignalRequests(),
        notifications: SignalRequests(),
        signals: SignalGate(onTerminate: {}, onReload: {}),
        hooks: ContextHooks()
    )
    for requests in [context.reloadRequests, context.notificationRequests] {
        var iterator = requests.sequence().makeAsyncIterator()
        requests.finish()
        withExtendedLifetime(iterator) {}
        iterator = requests.sequence().makeAsyncIterator()
    }
    _ = BodyTask()
    // A status line's bytes, as `writeStatusLine` builds them.
    withExtendedLifetime(Array((WorkerProcessContract.readyLine + "\n").utf8)) {}
}
