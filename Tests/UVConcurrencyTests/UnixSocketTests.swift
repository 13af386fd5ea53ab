import CWorkerSupport
import Synchronization
import Testing
import UVConcurrency

#if canImport(Glibc)
import Glibc
#endif

/// A blocking client socket connected to `path`.
private func connectClient(_ path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw UVError(.pipeFailed, errno: errno, context: "socket") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes.prefix(raw.count - 1))
    }
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard result == 0 else {
        let error = errno
        close(fd)
        throw UVError(.pipeFailed, errno: error, context: "connect")
    }
    return fd
}

private func send(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}

/// Reads until a newline or end of file (blocking; the server answers at once).
private func receiveLine(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while read(fd, &byte, 1) == 1 {
        if byte == UInt8(ascii: "\n") { break }
        bytes.append(byte)
    }
    return String(decoding: bytes, as: UTF8.self)
}

@Suite("Unix domain sockets on the loop")
struct UnixSocketTests {
    func temporaryDirectory() -> String {
        var template = Array("/tmp/bgw-sock-XXXXXX".utf8CString)
        let made = mkdtemp(&template)!
        return String(cString: made)
    }

    @Test("a connection carries the peer's credentials, lines in and replies out; mode 0600; close removes the file")
    func echo() async throws {
        let directory = self.temporaryDirectory()
        defer { rmdir(directory) }
        let path = directory + "/control.sock"
        let loop = try UVEventLoop(name: "socket-test")
        let peers = Mutex<[UVPeerCredentials]>([])
        let ends = Mutex<[UVLineReader.EndReason]>([])
        let listener = try await loop.submit {
            try loop.listenUnix(path: path) { connection in
                peers.withLock { $0.append(connection.peer) }
                try? connection.readLines(maxLineLength: 64) { line in
                    connection.write(Array("echo: \(line)\n".utf8))
                } onEnd: { reason in
                    ends.withLock { $0.append(reason) }
                    connection.close()
                }
            }
        }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)

        let client = try connectClient(path)
        send(client, "hello\nworld\n")
        #expect(receiveLine(client) == "echo: hello")
        #expect(receiveLine(client) == "echo: world")
        let seen = peers.withLock { $0 }
        #expect(seen.count == 1 && seen.first?.pid == getpid() && seen.first?.uid == geteuid() && seen.first?.gid == getegid(), "\(seen)")
        close(client)

        // A line over the limit ends reading; the server closes, the client sees end of file.
        let greedy = try connectClient(path)
        send(greedy, String(repeating: "x", count: 100) + "\n")
        #expect(receiveLine(greedy) == "")
        close(greedy)

        try await loop.submit { listener.close() }
        #expect(access(path, F_OK) != 0)
        let reasons = ends.withLock { $0 }
        #expect(reasons.contains(.endOfFile) && reasons.contains(.lineTooLong(limit: 64)), "\(reasons)")
        try await loop.shutdown()
    }

    @Test("an existing path is refused and left alone; the loop's shutdown closes listener and connections")
    func refusalsAndShutdown() async throws {
        let directory = self.temporaryDirectory()
        let path = directory + "/control.sock"
        defer {
            unlink(path)
            rmdir(directory)
        }
        let occupied = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        close(occupied)
        let loop = try UVEventLoop(name: "socket-test")
        await #expect(throws: UVError.self) {
            _ = try await loop.submit { try loop.listenUnix(path: path) { _ in } }
        }
        #expect(access(path, F_OK) == 0)
        unlink(path)

        let accepted = Mutex(0)
        _ = try await loop.submit {
            try loop.listenUnix(path: path) { connection in
                accepted.withLock { $0 += 1 }
                try? connection.readLines(maxLineLength: 64) { _ in } onEnd: { _ in }
            }
        }
        let client = try connectClient(path)
        send(client, "ping\n")
        // The connection is accepted on the loop; wait for it, then shut the loop down with it open.
        while accepted.withLock({ $0 }) == 0 { await Task.yield() }
        #expect(try await loop.submit { loop.openHandleCount } >= 2)
        try await loop.shutdown()
        #expect(receiveLine(client) == "")  // the server's end was closed
        close(client)
        #expect(access(path, F_OK) != 0)
    }
}
