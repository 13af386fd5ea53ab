import CWorkerSupport

/// The two descriptors of a pipe: bytes written to ``writeEnd`` are read from ``readEnd``.
///
/// The caller owns both descriptors and closes them (``close()``, or ``UVEventLoop/readLines(from:maxLineLength:incompleteLineTimeout:onLine:onEnd:)``
/// takes over the read end). To give an end to a child, name it in ``UVSpawnOptions/descriptors``: the child's
/// copy is made without close-on-exec, while this process's stays close-on-exec, so no other child inherits it.
public struct UVPipePair: Sendable, Hashable {
    /// The descriptor to read from.
    public let readEnd: Int32
    /// The descriptor to write to.
    public let writeEnd: Int32

    /// Creates a pipe.
    ///
    /// Both ends are created close-on-exec atomically (`pipe2(O_CLOEXEC)`); an end is made inheritable only if
    /// asked, which lets *every* child spawned meanwhile, by any thread, inherit it. Prefer the default and
    /// pass ends to children through ``UVSpawnOptions/descriptors``.
    /// - Parameters:
    ///   - readEndCloseOnExec: Keep close-on-exec on the read end (the default).
    ///   - writeEndCloseOnExec: Keep close-on-exec on the write end (the default).
    ///   - nonBlocking: Make both ends non-blocking.
    /// - Throws: ``UVError`` with ``UVError/Code/pipeFailed`` (EMFILE, ENFILE).
    public init(
        readEndCloseOnExec: Bool = true,
        writeEndCloseOnExec: Bool = true,
        nonBlocking: Bool = false
    ) throws(UVError) {
        var fds: (Int32, Int32) = (-1, -1)
        let status = withUnsafeMutablePointer(to: &fds) { pointer in
            pointer.withMemoryRebound(to: Int32.self, capacity: 2) { fds in
                cws_pipe(fds, readEndCloseOnExec ? 1 : 0, writeEndCloseOnExec ? 1 : 0, nonBlocking ? 1 : 0)
            }
        }
        guard status == 0 else {
            throw UVError(.pipeFailed, errno: status, context: "creating a pipe")
        }
        self.readEnd = fds.0
        self.writeEnd = fds.1
    }

    /// Closes both ends. Only for ends not handed to a reader.
    public func close() {
        _ = cws_close(self.readEnd)
        _ = cws_close(self.writeEnd)
    }

    /// Closes the read end only (for example once a child holds its copy).
    public func closeReadEnd() {
        _ = cws_close(self.readEnd)
    }

    /// Closes the write end only (for example once a child holds its copy, so that end of file comes when the
    /// child's copy closes).
    public func closeWriteEnd() {
        _ = cws_close(self.writeEnd)
    }
}
