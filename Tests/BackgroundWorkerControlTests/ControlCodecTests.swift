import BackgroundWorkerContract
import BackgroundWorkerControl
import Testing

@Suite("The control protocol's codec")
struct ControlCodecTests {
    func request(_ text: String) -> Result<ControlRequest, ControlCodec.RequestFailure> {
        ControlCodec.decodeRequest(Array(text.utf8))
    }

    func failure(_ text: String) -> ControlCodec.RequestFailure? {
        if case .failure(let failure) = self.request(text) { return failure }
        return nil
    }

    @Test("a register request round-trips, keeping every field and 64-bit numbers")
    func registerRoundTrip() throws {
        var worker = BackgroundWorker(name: "indexer", entryPoint: .executable("/bin/sleep", arguments: ["10"]))
        worker.mainArgument = UInt64.max
        worker.extra = [0, 1, 254, 255]
        worker.restartInterval = .seconds(5)
        let params = RegisterParams(worker: worker, notify: true, linked: true, waitForSlot: 2.5)
        let line = try ControlCodec.encodeRequest(id: Int64.max, method: .register, params: params)
        #expect(line.last == UInt8(ascii: "\n"))
        let request = try self.request(String(decoding: line.dropLast(), as: UTF8.self)).get()
        #expect(request.id == Int64.max)
        #expect(request.method == .register)
        #expect(try request.params(as: RegisterParams.self) == params)
    }

    @Test("replies: a result and an error round-trip with stable codes and names")
    func replies() throws {
        var state = WorkerStateInfo(kind: .running)
        state.pid = 42
        state.ready = true
        let info = WorkerInfo(
            slot: 3, generation: 7, name: "w", pid: 42, status: "started", state: state, detail: "running (pid 42)",
            restarts: 1, uptime: 2.5, lastExit: ExitInfo(code: 1), lastReportedError: nil
        )
        let result = try ControlCodec.encodeResult(id: 9, info)
        let (id, error) = try ControlCodec.decodeReply(result.dropLast())
        #expect(id == 9 && error == nil)
        #expect(try ControlCodec.decodeResult(result.dropLast(), as: WorkerInfo.self) == info)

        let refusal = ControlCodec.encodeError(id: nil, ControlError(.noFreeSlot, "no free worker slot: 8 of 8 in use"))
        let text = String(decoding: refusal, as: UTF8.self)
        #expect(text.contains("\"id\":null") && text.contains("\"code\":2") && text.contains("\"name\":\"noFreeSlot\""), "\(text)")
        let decoded = try ControlCodec.decodeReply(refusal.dropLast())
        #expect(decoded.id == nil && decoded.error == ControlError(.noFreeSlot, "no free worker slot: 8 of 8 in use"))
        #expect(Set(ControlError.Code.all.map(\.number)).count == ControlError.Code.all.count)

        // One pass: the id with the result, or with the error.
        let response = try ControlCodec.decodeResponse(result.dropLast(), as: WorkerInfo.self)
        #expect(response.id == 9 && (try? response.outcome.get()) == info)
        let refused = try ControlCodec.decodeResponse(refusal.dropLast(), as: WorkerInfo.self)
        #expect(refused.id == nil && refused.outcome == .failure(ControlError(.noFreeSlot, "no free worker slot: 8 of 8 in use")))
        // An error about a worker carries the worker's state.
        let stopped = ControlCodec.encodeError(id: 10, ControlError(.workerStopped, "worker 'w' stopped", worker: info))
        #expect(try ControlCodec.decodeResponse(stopped.dropLast(), as: WaitResult.self).outcome == .failure(ControlError(.workerStopped, "worker 'w' stopped", worker: info)))
        // A result of another shape names the field; a line that is no reply says so.
        do {
            _ = try ControlCodec.decodeResponse(Array(#"{"jsonrpc":"2.0","id":1,"result":{"slot":"x"}}"#.utf8), as: WorkerInfo.self)
            Issue.record("a string slot was accepted")
        } catch {
            #expect(error.code == .invalidParams && error.message.contains("result.slot"), "\(error)")
        }
        #expect(throws: ControlError(.parseError, "the reply is not a JSON object")) {
            _ = try ControlCodec.decodeResponse(Array("[1]".utf8), as: WorkerInfo.self)
        }
        #expect(throws: ControlError(.invalidRequest, "the reply has neither result nor error")) {
            _ = try ControlCodec.decodeReply(Array(#"{"jsonrpc":"2.0","id":1}"#.utf8))
        }
    }

    @Test("malformed messages get the error JSON-RPC names, with the id when one could be read")
    func malformed() {
        let cases: [(String, ControlError.Code, Int64?)] = [
            ("not json", .parseError, nil),
            ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"list\"", .parseError, nil),  // truncated
            ("[1,2,3]", .invalidRequest, nil),
            ("{\"jsonrpc\":\"2.0\",\"method\":\"list\"}", .invalidRequest, nil),  // a notification: no id
            ("{\"jsonrpc\":\"2.0\",\"id\":\"seven\",\"method\":\"list\"}", .invalidRequest, nil),
            ("{\"jsonrpc\":\"1.0\",\"id\":4,\"method\":\"list\"}", .invalidRequest, 4),
            ("{\"jsonrpc\":\"2.0\",\"id\":5}", .invalidRequest, 5),
            ("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"reboot\"}", .methodNotFound, 6),
            ("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"status\",\"params\":[1]}", .invalidParams, 7),
        ]
        for (text, code, id) in cases {
            let failure = self.failure(text)
            #expect(failure?.error.code == code, "\(text): \(String(describing: failure))")
            #expect(failure?.id == id, "\(text)")
        }
    }

    @Test("parameters of the wrong shape are refused naming the field")
    func invalidParams() throws {
        let missing = try self.request("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"wait\",\"params\":{\"worker\":{\"name\":\"w\"},\"timeout\":5}}").get()
        #expect(throws: ControlError(.invalidParams, "wait: params.until is missing")) { _ = try missing.params(as: WaitParams.self) }
        let wrongType = try self.request("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"wait\",\"params\":{\"worker\":{\"slot\":\"x\"},\"until\":\"ready\",\"timeout\":5}}").get()
        do {
            _ = try wrongType.params(as: WaitParams.self)
            Issue.record("accepted a string slot")
        } catch {
            #expect(error.code == .invalidParams && error.message.contains("worker.slot"), "\(error)")
        }
        let noParams = try self.request("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"list\"}").get()
        #expect(throws: ControlError.self) { _ = try noParams.params(as: WorkerParams.self) }
    }

    @Test("an oversized message is refused before it is parsed")
    func oversized() {
        let line = [UInt8](repeating: UInt8(ascii: " "), count: ControlProtocol.maxMessageLength + 1)
        #expect(ControlCodec.decodeRequest(line).failure?.error.code == .messageTooLong)
    }

    @Test("thousands of random, truncated and mutated messages: each is a request or an error, never a crash")
    func fuzz() throws {
        var generator = SystemRandomNumberGenerator()
        let valid = Array(try ControlCodec.encodeRequest(id: 1, method: .register, params: RegisterParams(worker: BackgroundWorker(name: "w", entryPoint: .executable("/bin/true")))).dropLast())
        var outcomes = (requests: 0, errors: 0)
        for round in 0..<5000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0: bytes = (0..<Int.random(in: 0..<200, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            case 1: bytes = Array(valid.prefix(Int.random(in: 0...valid.count, using: &generator)))
            default:
                bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 32...126, using: &generator)
                }
            }
            switch ControlCodec.decodeRequest(bytes) {
            case .success(let request):
                outcomes.requests += 1
                _ = try? request.params(as: RegisterParams.self)
            case .failure(let failure):
                outcomes.errors += 1
                #expect(!failure.error.message.isEmpty)
                #expect(ControlCodec.encodeError(id: failure.id, failure.error).last == UInt8(ascii: "\n"))
            }
        }
        #expect(outcomes.requests + outcomes.errors == 5000)
        #expect(outcomes.errors > 3000)  // random bytes and truncations are almost never requests
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}
