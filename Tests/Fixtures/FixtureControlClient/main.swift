import BackgroundWorkers

#if canImport(Glibc)
import Glibc
#endif

// A control client in a process of its own, for the end-to-end tests: connects to the socket in argv[1]
// with notifications, registers three sleeping workers with notify (one linked), prints one line per
// registration, then one line per status change it read after a SIGUSR1, until killed.

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
}

let path = CommandLine.arguments[1]
let client = try await SupervisorClient.connect(path: path)
let changes = client.statusChanges()
for (name, linked) in [("notified-linked", true), ("notified-free", false), ("notified-kept", false)] {
    var worker = BackgroundWorker(name: name, entryPoint: .executable("/bin/sleep", arguments: ["1000"]))
    worker.restartInterval = .never
    let handle = try await client.register(worker, notify: true, linked: linked)
    say("registered \(name) \(handle.slot)/\(handle.generation) pid \(try await handle.waitForStartup())")
}
say("client pid \(getpid())")
for await info in changes {
    say("change \(info.name) \(info.state.kind.rawValue) wakeups \(await client.wakeUps)")
}
