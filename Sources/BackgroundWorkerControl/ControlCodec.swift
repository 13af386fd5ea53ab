import FoundationEssentials

/// A request as the server reads it: its id, method and parameters still as JSON (decoded per method with
/// ``params(as:)``).
public struct ControlRequest: Sendable, Hashable {
    /// The request's id, echoed in its reply.
    public let id: Int64
    /// The method.
    public let method: ControlMethod
    /// The whole message, from which the parameters are decoded (numbers keep their full 64 bits).
    let message: Data
    /// Whether the message had parameters.
    let hasParams: Bool

    private struct Wrapper<Params: Decodable>: Decodable { var params: Params }

    /// Decodes the parameters, naming the field that is wrong.
    /// - Throws: ``ControlError`` with ``ControlError/Code/invalidParams``.
    public func params<Params: Decodable>(as type: Params.Type) throws(ControlError) -> Params {
        do {
            if !self.hasParams { return try JSONDecoder().decode(Params.self, from: Data("{}".utf8)) }
            return try JSONDecoder().decode(Wrapper<Params>.self, from: self.message).params
        } catch let error as DecodingError {
            throw ControlError(.invalidParams, "\(self.method): \(ControlCodec.explain(error))")
        } catch {
            throw ControlError(.invalidParams, "\(self.method): \(error)")
        }
    }
}

/// Reads requests and writes replies and events, one line each.
public enum ControlCodec {
    /// Why a line is not a request, and the id to reply to (nil when none could be read: JSON-RPC replies
    /// with `"id": null` then).
    public struct RequestFailure: Error, Sendable, Hashable {
        /// The id to reply to.
        public let id: Int64?
        /// The error to reply with.
        public let error: ControlError
    }

    /// Reads one line (without its newline) as a request.
    public static func decodeRequest(_ line: some Collection<UInt8>) -> Result<ControlRequest, RequestFailure> {
        func fail(_ id: Int64?, _ code: ControlError.Code, _ message: String) -> Result<ControlRequest, RequestFailure> {
            .failure(RequestFailure(id: id, error: ControlError(code, message)))
        }
        guard line.count <= ControlProtocol.maxMessageLength else {
            return fail(nil, .messageTooLong, "a message of \(line.count) bytes is longer than the limit of \(ControlProtocol.maxMessageLength)")
        }
        let data = Data(line)
        let envelope: RequestEnvelope
        do {
            envelope = try JSONDecoder().decode(RequestEnvelope.self, from: data)
        } catch DecodingError.typeMismatch {
            return fail(nil, .invalidRequest, "a message must be a JSON object")
        } catch {
            return fail(nil, .parseError, "the message is not JSON")
        }
        guard let id = envelope.id else {
            return fail(nil, .invalidRequest, "the request has no integer id; every request needs one to be answered")
        }
        guard envelope.jsonrpc == ControlProtocol.jsonRPC else {
            return fail(id, .invalidRequest, "jsonrpc must be \"2.0\"")
        }
        guard let name = envelope.method else {
            return fail(id, .invalidRequest, "the request has no method string")
        }
        guard let method = ControlMethod(rawValue: name) else {
            let known = ControlMethod.allCases.map(\.rawValue).joined(separator: ", ")
            return fail(id, .methodNotFound, "no method '\(name.prefix(100))'; the methods are \(known)")
        }
        switch envelope.params {
        case .absent:
            return .success(ControlRequest(id: id, method: method, message: data, hasParams: false))
        case .object:
            return .success(ControlRequest(id: id, method: method, message: data, hasParams: true))
        case .other:
            return fail(id, .invalidParams, "\(method): params must be an object")
        }
    }

    /// A request's members as far as `decodeRequest` checks them, read in one pass without decoding the
    /// parameters (each member that is missing or of another type is nil; nothing throws for them).
    private struct RequestEnvelope: Decodable {
        enum Params { case absent, object, other }
        var id: Int64?
        var jsonrpc: String?
        var method: String?
        var params: Params

        enum CodingKeys: String, CodingKey { case id, jsonrpc, method, params }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.id = (try? container.decodeIfPresent(Int64.self, forKey: .id)) ?? nil
            self.jsonrpc = (try? container.decodeIfPresent(String.self, forKey: .jsonrpc)) ?? nil
            self.method = (try? container.decodeIfPresent(String.self, forKey: .method)) ?? nil
            if !container.contains(.params) || (try? container.decodeNil(forKey: .params)) == true {
                self.params = .absent
            } else if (try? container.nestedContainer(keyedBy: AnyKey.self, forKey: .params)) != nil {
                self.params = .object
            } else {
                self.params = .other
            }
        }
    }

    /// Any member name.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// A request's line (with its newline), for clients.
    public static func encodeRequest<Params: Encodable>(id: Int64, method: ControlMethod, params: Params) throws -> [UInt8] {
        try Self.line(RequestMessage(jsonrpc: ControlProtocol.jsonRPC, id: id, method: method, params: params))
    }

    /// A result reply's line (with its newline).
    public static func encodeResult<Result: Encodable>(id: Int64, _ result: Result) throws -> [UInt8] {
        try Self.line(ResultMessage(jsonrpc: ControlProtocol.jsonRPC, id: id, result: result))
    }

    /// An error reply's line (with its newline); `id` nil writes `"id": null`.
    public static func encodeError(id: Int64?, _ error: ControlError) -> [UInt8] {
        let message = ErrorMessage(
            jsonrpc: ControlProtocol.jsonRPC,
            id: id,
            error: .init(code: error.code.number, message: error.message, data: .init(name: error.code.name, worker: error.worker))
        )
        // Only strings and numbers: cannot fail.
        return (try? Self.line(message)) ?? Array("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"internal error\"}}\n".utf8)
    }

    /// An event's line (with its newline).
    public static func encodeEvent(_ event: ControlEvent) throws -> [UInt8] {
        try Self.line(EventMessage(jsonrpc: ControlProtocol.jsonRPC, method: "event", params: event))
    }

    /// A reply, as a client reads it: its id, and the result (decode it with `decodeResult`) or the error.
    public static func decodeReply(_ line: some Collection<UInt8>) throws(ControlError) -> (id: Int64?, error: ControlError?) {
        let reply = try Self.reply(line, as: Skipped.self)
        switch reply.outcome {
        case .failure(let error): return (reply.id, error)
        case .success: return (reply.id, nil)
        }
    }

    /// A reply's id and its result (decoded as `Value`) or its error, in one pass over the line.
    /// - Throws: ``ControlError`` when the line is not a reply, or its result is not a `Value` (naming the field).
    public static func decodeResponse<Value: Decodable>(
        _ line: some Collection<UInt8>,
        as type: Value.Type
    ) throws(ControlError) -> (id: Int64?, outcome: Result<Value, ControlError>) {
        let reply = try Self.reply(line, as: Value.self)
        return (reply.id, reply.outcome)
    }

    private static func reply<Value: Decodable>(_ line: some Collection<UInt8>, as type: Value.Type) throws(ControlError) -> Reply<Value> {
        do {
            return try JSONDecoder().decode(Reply<Value>.self, from: Data(line))
        } catch let error as ControlError {
            throw error
        } catch let error as DecodingError {
            if case .typeMismatch(_, let context) = error, context.codingPath.isEmpty {
                throw ControlError(.parseError, "the reply is not a JSON object")
            }
            if case .dataCorrupted(let context) = error, context.codingPath.isEmpty {
                throw ControlError(.parseError, "the reply is not a JSON object")
            }
            throw ControlError(.invalidParams, "the reply's \(Self.explain(error))")
        } catch {
            throw ControlError(.parseError, "the reply is not a JSON object")
        }
    }

    /// A result that is only checked for presence.
    private struct Skipped: Decodable {
        init(from decoder: any Decoder) throws {}
    }

    /// A reply: its id, and its error or its result decoded as `Value`.
    private struct Reply<Value: Decodable>: Decodable {
        var id: Int64?
        var outcome: Result<Value, ControlError>

        enum CodingKeys: String, CodingKey { case id, result, error }
        enum ErrorKeys: String, CodingKey { case code, message, data }
        enum DataKeys: String, CodingKey { case worker }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.id = (try? container.decodeIfPresent(Int64.self, forKey: .id)) ?? nil
            if let error = try? container.nestedContainer(keyedBy: ErrorKeys.self, forKey: .error) {
                guard let number = try? error.decode(Int64.self, forKey: .code), let code = Code(number: Int(number)) else {
                    throw ControlError(.invalidRequest, "the reply's error has no known code")
                }
                let message = (try? error.decodeIfPresent(String.self, forKey: .message)) ?? nil
                let data = try? error.nestedContainer(keyedBy: DataKeys.self, forKey: .data)
                let worker = (try? data?.decodeIfPresent(WorkerInfo.self, forKey: .worker)) ?? nil
                self.outcome = .failure(ControlError(code, message ?? "no message", worker: worker))
                return
            }
            guard container.contains(.result) else { throw ControlError(.invalidRequest, "the reply has neither result nor error") }
            self.outcome = .success(try container.decode(Value.self, forKey: .result))
        }
    }

    /// An event message's event, or nil when the line is not one.
    public static func decodeEvent(_ line: some Collection<UInt8>) -> ControlEvent? {
        guard let message = try? JSONDecoder().decode(IncomingEvent.self, from: Data(line)), message.method == "event" else { return nil }
        return message.params
    }

    private struct IncomingEvent: Decodable {
        var method: String
        var params: ControlEvent
    }

    /// The result of a reply `decodeReply` found no error in.
    public static func decodeResult<Value: Decodable>(_ line: some Collection<UInt8>, as type: Value.Type) throws(ControlError) -> Value {
        switch try Self.reply(line, as: Value.self).outcome {
        case .success(let value): return value
        case .failure(let error): throw ControlError(.invalidParams, "the reply has an error, not a result: \(error)")
        }
    }

    private typealias Code = ControlError.Code

    private struct RequestMessage<Params: Encodable>: Encodable {
        var jsonrpc: String
        var id: Int64
        var method: ControlMethod
        var params: Params
    }

    private struct ResultMessage<Value: Encodable>: Encodable {
        var jsonrpc: String
        var id: Int64
        var result: Value
    }

    private struct ErrorMessage: Encodable {
        struct Body: Encodable {
            struct Details: Encodable {
                var name: String
                var worker: WorkerInfo?
            }
            var code: Int
            var message: String
            var data: Details
        }

        var jsonrpc: String
        var id: Int64?
        var error: Body

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(self.jsonrpc, forKey: .jsonrpc)
            try container.encode(self.id, forKey: .id)  // null when nil, as JSON-RPC asks
            try container.encode(self.error, forKey: .error)
        }

        enum CodingKeys: String, CodingKey { case jsonrpc, id, error }
    }

    private struct EventMessage: Encodable {
        var jsonrpc: String
        var method: String
        var params: ControlEvent
    }

    private static func line(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value)) + [UInt8(ascii: "\n")]
    }

    /// A decoding error as a sentence naming the field.
    static func explain(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let names = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return names.isEmpty ? "the message" : names.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = context.codingPath.isEmpty ? "" : path(context) + "."
            return "\(parent)\(key.stringValue) is missing"
        case .typeMismatch(let type, let context):
            return "\(path(context)) is not a \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context)) is null, not a \(type)"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
