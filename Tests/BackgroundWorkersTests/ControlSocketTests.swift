import BackgroundWorkerControl
@testable import BackgroundWorkers
import TestSupport
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// A supervisor serving a control socket in a fresh folder, and the socket's path.
func withServedSupervisor(
    slots: Int = 8,
    control: (inout ControlSocketConfiguration) -> Void = { _ in },
    _ body: (WorkerSupervisor, String) async throws -> Void
) async throws {
    try await withTemporaryFolder { folder in
        let path = "\(folder)/control.sock"
        try await withSupervisor(slots: slots) { supervisor in
            var configuration = ControlSocketConfiguration(path: path)
            control(&configuration)
            try await supervisor.serveControlSocket(configuration)
            try await body(supervisor, path)
        }
    }
}

extension WorkerSupervisor {
    /// Open control connections.
    var controlConnections: Int { self.controlServer?.sessions.count ?? 0 }

    /// Requests of control clients still being answered (waits, registrations waiting for a slot).
    var controlRequestsInProgress: Int {
        self.controlServer?.sessions.values.reduce(0) { $0 + $1.requestTasks.count } ?? 0
    }

    /// The notify pid the rules hold for a remote handle's worker.
    func notifyPID(of handle: RemoteWorkerHandle) -> Int32? {
        self.machine.worker(WorkerID(slot: handle.slot, generation: handle.generation))?.notifyPID
    }
}

/// Code written once against the common handle API.
func startThenTerminate(_ handle: some WorkerHandleProtocol) async throws -> (pid: Int32, end: WorkerStatusDetail) {
    let pid = try await handle.waitForStartup()
    #expect(try await handle.status == .started(pid: pid))
    try await handle.terminate()
    #expect(try await handle.waitForShutdown() == .stopped)
    return (pid, try await handle.detail)
}

extension SupervisorTests {
    @Suite("The control socket: remote registration, waits and handles (issue 12)")
    struct ControlSocketTests {
        @Test("a remote handle behaves as a local one: the same generic code, the same answers")
        func remoteLikeLocal() async throws {
            try await withServedSupervisor { supervisor, path in
                let client = try await SupervisorClient.connect(path: path)
                let remote = try await client.register(shellWorker("remote", Script.sleepForever))
                let local = try await supervisor.register(shellWorker("local", Script.sleepForever))
                let remoteRun = try await startThenTerminate(remote)
                let localRun = try await startThenTerminate(local)
                #expect(remoteRun.pid != localRun.pid && remoteRun.pid > 0)
                #expect(remoteRun.end == localRun.end)
                #expect(remoteRun.end == .unregistered(.terminated, lastExit: .signaled(.terminate)))
                // A stale remote handle stays its own: terminate does nothing, status stays stopped.
                let reuse = try await client.register(shellWorker("reuse", Script.sleepForever))
                #expect(reuse.slot == remote.slot || reuse.slot == local.slot)
                try await remote.terminate()
                #expect(try await remote.status == .stopped)
                #expect(try await reuse.waitForStartup() > 0)
                #expect(try await reuse.status != .stopped)
                // Readiness and the error of a wait that cannot end.
                let ready = try await client.register({
                    var worker = shellWorker("ready", Script.readyThenSleep)
                    worker.reportsReadiness = true
                    return worker
                }())
                #expect(try await ready.waitForReady() > 0)
                await #expect(throws: SupervisorError.self) { _ = try await reuse.waitForReady() }
                let once = try await client.register(shellWorker("once", Script.exit(0)))
                #expect(try await once.waitForShutdown() == .stopped)
                #expect(try await once.detail == .unregistered(.completed, lastExit: .exited(0)))
                // The error of a wait that cannot end says how the worker stopped, as a local one does.
                let localOnce = try await supervisor.register(shellWorker("local-once", Script.exit(0)))
                #expect(try await localOnce.waitForShutdown() == .stopped)
                let localError = await #expect(throws: SupervisorError.self) { _ = try await localOnce.waitForStartup() }
                let remoteError = await #expect(throws: SupervisorError.self) { _ = try await once.waitForStartup() }
                #expect(remoteError?.code == .workerStopped && remoteError?.code == localError?.code)
                #expect(remoteError?.detail == .unregistered(.completed, lastExit: .exited(0)))
                #expect(remoteError?.detail == localError?.detail)
                await client.close()
            }
        }

        @Test("refusals keep their codes and messages across the socket; nothing is registered")
        func refusals() async throws {
            try await withServedSupervisor(slots: 1) { supervisor, path in
                let client = try await SupervisorClient.connect(path: path)
                await #expect { try await client.register(BackgroundWorker(name: "", entryPoint: .executable("/bin/true"))) } throws: {
                    ($0 as? SupervisorError)?.code == .invalidRegistration
                }
                var named = shellWorker("named", Script.sleepForever)
                named.notifyPID = getpid()
                await #expect { try await client.register(named) } throws: { error in
                    guard let error = error as? SupervisorError else { return false }
                    return error.code == .notifyPIDRefused && error.message.contains("client's own (pid \(getpid()))")
                }
                #expect(await supervisor.slotsInUse == 0)
                _ = try await client.register(shellWorker("full", Script.sleepForever))
                await #expect { try await client.register(shellWorker("more", Script.sleepForever)) } throws: {
                    ($0 as? SupervisorError)?.code == .noFreeSlot
                }
                // Waiting for a slot over the socket.
                let waiting = Task { try await client.register(shellWorker("waits", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                while await supervisor.waitingForSlots < 1 { await Task.yield() }
                try await client.terminate(WorkerReference(name: "full"))
                let handle = try await waiting.value
                #expect(try await handle.waitForStartup() > 0)
                await #expect { try await client.info(WorkerReference(name: "nobody")) } throws: { error in
                    ((error as? SupervisorError)?.underlying as? ControlError)?.code == .unknownWorker
                }
                // A wait with a deadline that passes.
                await #expect {
                    try await client.wait(for: handle.reference, until: .stopped, timeout: .milliseconds(200))
                } throws: { error in
                    ((error as? SupervisorError)?.underlying as? ControlError)?.code == .timedOut
                }
                await client.close()
            }
        }

        @Test("notify: SIGUSR1 reaches the client, which re-reads and publishes each change; without saying it handles SIGUSR1, refused")
        func notifications() async throws {
            try await withServedSupervisor { supervisor, path in
                let plain = try await SupervisorClient.connect(path: path, notifications: false)
                await #expect { try await plain.register(shellWorker("x", Script.sleepForever), notify: true) } throws: { _ in true }
                // Without saying, such a client registers without notification.
                let quiet = try await plain.register(shellWorker("quiet", Script.exit(0)))
                _ = try await quiet.waitForShutdown()

                let client = try await SupervisorClient.connect(path: path)
                let changes = client.statusChanges()
                var iterator = changes.makeAsyncIterator()
                let handle = try await client.register(shellWorker("watched", Script.sleepForever), notify: true)
                let first = await iterator.next()
                #expect(first?.state.kind == .running, "\(String(describing: first))")
                let wakeUps = await client.wakeUps
                try await handle.terminate()
                var seen: [WorkerStateInfo.Kind] = []
                while let info = await iterator.next() {
                    seen.append(info.state.kind)
                    if info.state.kind == .unregistered { break }
                }
                // SIGUSR1 at the exit made the client read the end (a stopping state may come first).
                #expect(seen.last == .unregistered, "\(seen)")
                #expect(await client.wakeUps > wakeUps)
                // The machine names this process as the notify pid only while it is connected.
                let second = try await client.register(shellWorker("second", Script.sleepForever), notify: true)
                let sentinel = try await client.register(shellWorker("sentinel", Script.sleepForever), linked: true)
                #expect(await supervisor.notifyPID(of: second) == getpid())
                let probe = try await SupervisorClient.connect(path: path, notifications: false)
                await client.close()
                await plain.close()
                // The server handles a disconnect in one step: once the linked worker is gone, the connection's
                // end was seen. This process is the supervisor too, so its pid stays a valid notify pid here; the
                // clearing for another process is in the end-to-end tests and the rules' tests.
                _ = try await probe.handle(slot: sentinel.slot, generation: sentinel.generation).waitForShutdown()
                #expect(await supervisor.notifyPID(of: second) == getpid())
                #expect(try await probe.info(second.reference).pid != nil)
                await probe.close()
            }
        }

        @Test("cancelling a remote registration that waits for a slot: cancelled on the server, nothing registered; a cancelled wait too")
        func cancellation() async throws {
            try await withServedSupervisor(slots: 1) { supervisor, path in
                let client = try await SupervisorClient.connect(path: path)
                let full = try await client.register(shellWorker("full", Script.sleepForever))
                let waiting = Task { try await client.register(shellWorker("late", Script.sleepForever), waitingForSlotUpTo: .seconds(60)) }
                while await supervisor.waitingForSlots < 1 { await Task.yield() }
                waiting.cancel()
                await #expect(throws: CancellationError.self) { _ = try await waiting.value }
                #expect(await supervisor.waitingForSlots == 0)
                let wait = Task { try await full.waitForShutdown() }
                while await supervisor.controlRequestsInProgress < 1 { await Task.yield() }
                wait.cancel()
                await #expect(throws: CancellationError.self) { _ = try await wait.value }
                // The freed slot goes to nobody: the cancelled registration is not served later.
                try await full.terminate()
                _ = try await client.handle(slot: full.slot, generation: full.generation).waitForShutdown()
                #expect(try await client.list().isEmpty)
                #expect(await supervisor.controlRequestsInProgress == 0)
                await client.close()
            }
        }

        @Test("a client that goes away: its linked workers are terminated, the others untouched")
        func linkedWorkers() async throws {
            try await withServedSupervisor { supervisor, path in
                let client = try await SupervisorClient.connect(path: path)
                let linked = try await client.register(shellWorker("linked", Script.sleepForever), linked: true)
                let free = try await client.register(shellWorker("free", Script.sleepForever))
                let linkedPID = try await linked.waitForStartup()
                let freePID = try await free.waitForStartup()
                let observer = try await SupervisorClient.connect(path: path, notifications: false)
                let watched = observer.handle(slot: linked.slot, generation: linked.generation)
                await client.close()
                #expect(try await watched.waitForShutdown() == .stopped)
                #expect(try await watched.detail == .unregistered(.terminated, lastExit: .signaled(.terminate)))
                #expect(kill(linkedPID, 0) != 0)
                let remaining = try await observer.list()
                #expect(remaining.map(\.name) == ["free"] && remaining.first?.pid == freePID)
                await #expect { try await linked.status } throws: { ($0 as? SupervisorError)?.code == .controlFailed }
                await observer.close()
                _ = supervisor
            }
        }

        @Test("events over the socket, in order")
        func events() async throws {
            try await withServedSupervisor { _, path in
                let client = try await SupervisorClient.connect(path: path)
                let events = try await client.events()
                let handle = try await client.register(shellWorker("evented", Script.exit(0)))
                var kinds: [String] = []
                for await event in events where event.worker == handle.reference {
                    kinds.append(event.kind)
                    if event.kind == "unregistered" { break }
                }
                #expect(kinds == ["registered", "started", "exited", "unregistered"], "\(kinds)")
                await client.close()
            }
        }

        @Test("limits: connections and registrations per client, each error naming its limit")
        func limits() async throws {
            try await withServedSupervisor(control: { $0.maxConnections = 2; $0.maxRegistrationsPerClient = 1 }) { supervisor, path in
                let first = try await SupervisorClient.connect(path: path)
                let second = try await SupervisorClient.connect(path: path)
                await #expect { try await SupervisorClient.connect(path: path) } throws: { error in
                    guard let error = error as? SupervisorError else { return false }
                    return error.code == .controlFailed && error.message.contains("maxConnections")
                }
                _ = try await first.register(shellWorker("one", Script.sleepForever))
                await #expect { try await first.register(shellWorker("two", Script.sleepForever)) } throws: { error in
                    let control = (error as? SupervisorError)?.underlying as? ControlError
                    return control?.code == .limitReached && control!.message.contains("maxRegistrationsPerClient 1")
                }
                _ = try await second.register(shellWorker("other", Script.sleepForever))
                #expect(await supervisor.slotsInUse == 2)
                await second.close()
                // The server sees the end on its own loop: once it has, the freed connection can be taken.
                while await supervisor.controlConnections > 1 { await Task.yield() }
                let third = try await SupervisorClient.connect(path: path)
                await third.close()
                await first.close()
            }
        }

        @Test("malformed, oversized, unknown-version and half-sent messages: an error reply where possible, the connection closed, nothing else harmed")
        func badInput() async throws {
            try await withServedSupervisor { supervisor, path in
                let keeper = try await supervisor.register(shellWorker("keeper", Script.sleepForever))
                let pid = try await keeper.waitForStartup()
                let hello = #"{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":1}}"#
                /// Sends, then expects the first error reply to have `code` and the server to close.
                func expectRefused(_ lines: [String], _ code: ControlError.Code, raw: [UInt8] = []) throws {
                    let connection = try RawUnixConnection(path: path)
                    for line in lines { connection.send(line: line) }
                    connection.send(raw)
                    var error: ControlError?
                    while error == nil, let reply = connection.readLine() {
                        error = try ControlCodec.decodeReply(Array(reply.utf8)).error
                    }
                    #expect(error?.code == code, "\(lines.map { $0.prefix(80) }): \(String(describing: error))")
                    #expect(connection.closedByPeer(), "still open after \(lines.map { $0.prefix(80) })")
                }
                try expectRefused(["this is not json"], .parseError)
                try expectRefused([#"{"jsonrpc":"2.0","id":1,"method":"list"}"#], .invalidRequest)  // no hello first
                try expectRefused([#"{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":2}}"#], .unsupportedVersion)
                try expectRefused([hello, #"{"jsonrpc":"2.0","id":2,"method":"reboot"}"#], .methodNotFound)
                try expectRefused([hello, #"{"jsonrpc":"2.0","method":"list"}"#], .invalidRequest)
                try expectRefused([hello], .messageTooLong, raw: Array(repeating: UInt8(ascii: "x"), count: ControlProtocol.maxMessageLength + 10) + [10])
                // Bad parameters of a well-formed request: an error, and the connection stays.
                let open = try RawUnixConnection(path: path)
                open.send(line: hello)
                _ = open.readLine()
                open.send(line: #"{"jsonrpc":"2.0","id":2,"method":"status","params":{"worker":{"slot":"zero"}}}"#)
                let reply = try #require(open.readLine())
                #expect(try ControlCodec.decodeReply(Array(reply.utf8)).error?.code == .invalidParams, "\(reply)")
                open.send(line: #"{"jsonrpc":"2.0","id":3,"method":"list"}"#)
                #expect(open.readLine()?.contains("keeper") == true)
                // Half a message, then the peer goes away: nothing to answer, nothing harmed.
                do {
                    let half = try RawUnixConnection(path: path)
                    half.send(line: hello)
                    half.send(Array(#"{"jsonrpc":"2.0","id":2,"method":"regi"#.utf8))
                }
                let client = try await SupervisorClient.connect(path: path)
                let list = try await client.list()
                #expect(list.map(\.name) == ["keeper"] && list.first?.pid == pid)
                await client.close()
            }
        }

        @Test("half a message left waiting, or no hello: timedOut after messageTimeout and closed; whole messages in parts and idle clients untouched")
        func messageTimeout() async throws {
            try await withServedSupervisor(control: { $0.messageTimeout = .milliseconds(300) }) { supervisor, path in
                let hello = #"{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":1}}"#
                let list = #"{"jsonrpc":"2.0","id":2,"method":"list"}"#
                func expectTimedOut(_ connection: RawUnixConnection, saying words: String) throws {
                    let reply = try #require(connection.readLine(), "no reply before the close")
                    let error = try ControlCodec.decodeReply(Array(reply.utf8)).error
                    #expect(error?.code == .timedOut && error?.message.contains(words) == true, "\(reply)")
                    #expect(connection.closedByPeer())
                }
                // A client greeted first and then idle between messages: never timed out.
                let idle = try RawUnixConnection(path: path)
                idle.send(line: hello)
                #expect(idle.readLine()?.contains("result") == true)
                // Half a message, and the peer stays connected.
                let half = try RawUnixConnection(path: path)
                half.send(line: hello)
                #expect(half.readLine()?.contains("result") == true)
                half.send(Array(#"{"jsonrpc":"2.0","id":2,"method":"li"#.utf8))
                try expectTimedOut(half, saying: "incomplete for 0.3 seconds (36 bytes without a newline)")
                // Connected, and nothing said at all.
                let silent = try RawUnixConnection(path: path)
                try expectTimedOut(silent, saying: "no hello within 0.3 seconds")
                // A whole message that arrives in parts is answered.
                let parts = try RawUnixConnection(path: path)
                parts.send(Array(hello.utf8.prefix(20)))
                parts.send(Array(hello.utf8.dropFirst(20)) + [10])
                #expect(parts.readLine()?.contains("result") == true)
                // The idle client outlived both timeouts and is still served.
                idle.send(line: list)
                #expect(idle.readLine()?.contains("result") == true)
                #expect(await supervisor.controlConnections == 2)
            }
        }

        @Test("fuzz: thousands of random, truncated and oversized messages while workers run; none is lost")
        func fuzz() async throws {
            try await withServedSupervisor { supervisor, path in
                var pids: [Int32] = []
                for index in 0..<4 {
                    pids.append(try await supervisor.register(shellWorker("steady-\(index)", Script.sleepForever)).waitForStartup())
                }
                var generator = SystemRandomNumberGenerator()
                let hello = #"{"jsonrpc":"2.0","id":1,"method":"hello","params":{"protocol":1}}"#
                let fragments = [
                    "{", "}", "[", "]", "\"", ":", ",", "jsonrpc", "2.0", "id", "method", "params", "register", "terminate",
                    "shutdown", "worker", "slot", "generation", "name", "null", "true", "-1", "1e999", "\\u0000", "\u{00FF}",
                    "mode", "immediate", "notify", "linked", "waitForSlot", "entryPoint", "\n",
                ]
                var messages = 0
                for round in 0..<250 {
                    let connection = try RawUnixConnection(path: path)
                    if round % 3 != 0 { connection.send(line: hello) }
                    for _ in 0..<Int.random(in: 1...12, using: &generator) {
                        messages += 1
                        switch Int.random(in: 0..<5, using: &generator) {
                        case 0:  // random bytes
                            connection.send((0..<Int.random(in: 1...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) } + [10])
                        case 1:  // a soup of protocol words
                            connection.send(line: (0..<Int.random(in: 1...40, using: &generator)).map { _ in fragments.randomElement(using: &generator)! }.joined())
                        case 2:  // a valid request, truncated
                            let line = #"{"jsonrpc":"2.0","id":7,"method":"terminate","params":{"worker":{"name":"steady-0"}}}"#
                            connection.send(line: String(line.prefix(Int.random(in: 1..<line.count, using: &generator))))
                        case 3:  // oversized
                            connection.send(Array(repeating: UInt8(ascii: "{"), count: ControlProtocol.maxMessageLength + Int.random(in: 1...5000, using: &generator)) + [10])
                        default:  // harmless valid requests
                            connection.send(line: #"{"jsonrpc":"2.0","id":9,"method":"list"}"#)
                        }
                    }
                    if round % 2 == 0 { _ = connection.readLine(timeout: 0.05) }
                }
                #expect(messages > 1000)
                let client = try await SupervisorClient.connect(path: path)
                let list = try await client.list()
                #expect(list.map(\.pid) == pids, "\(list)")
                #expect(list.allSatisfy { $0.restarts == 0 })
                await client.close()
            }
        }
    }
}
