extension BackgroundWorker {
    private enum CodingKeys: String, CodingKey {
        case name, type, flags, startTime, restartInterval, entryPoint, mainArgument, extra, notifyPID
        case stopGracePeriod, restartBackoff, restartThrottle, restartBudget, reportsReadiness, user, group
    }

    /// Decodes a registration. Fields left out take the defaults of ``init(name:entryPoint:)``; in particular a
    /// missing `restartThrottle` is ``RestartThrottle/default``, and only an explicit `null` turns it off.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try container.decode(String.self, forKey: .name),
            entryPoint: try container.decode(EntryPoint.self, forKey: .entryPoint)
        )
        self.type = try container.decodeIfPresent(String.self, forKey: .type)
        self.flags = try container.decodeIfPresent(Flags.self, forKey: .flags) ?? self.flags
        self.startTime = try container.decodeIfPresent(StartTime.self, forKey: .startTime) ?? self.startTime
        self.restartInterval = try container.decodeIfPresent(RestartInterval.self, forKey: .restartInterval) ?? self.restartInterval
        self.mainArgument = try container.decodeIfPresent(UInt64.self, forKey: .mainArgument) ?? self.mainArgument
        self.extra = try container.decodeIfPresent([UInt8].self, forKey: .extra) ?? self.extra
        self.notifyPID = try container.decodeIfPresent(Int32.self, forKey: .notifyPID)
        self.stopGracePeriod = try container.decodeIfPresent(Duration.self, forKey: .stopGracePeriod) ?? self.stopGracePeriod
        self.restartBackoff = try container.decodeIfPresent(RestartBackoff.self, forKey: .restartBackoff)
        if container.contains(.restartThrottle) {
            self.restartThrottle = try container.decodeIfPresent(RestartThrottle.self, forKey: .restartThrottle)
        }
        self.restartBudget = try container.decodeIfPresent(RestartBudget.self, forKey: .restartBudget)
        self.reportsReadiness = try container.decodeIfPresent(Bool.self, forKey: .reportsReadiness) ?? self.reportsReadiness
        self.user = try container.decodeIfPresent(String.self, forKey: .user)
        self.group = try container.decodeIfPresent(String.self, forKey: .group)
    }

    /// Encodes a registration; a turned-off ``restartThrottle`` is written as an explicit `null`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.name, forKey: .name)
        try container.encodeIfPresent(self.type, forKey: .type)
        try container.encode(self.flags, forKey: .flags)
        try container.encode(self.startTime, forKey: .startTime)
        try container.encode(self.restartInterval, forKey: .restartInterval)
        try container.encode(self.entryPoint, forKey: .entryPoint)
        try container.encode(self.mainArgument, forKey: .mainArgument)
        try container.encode(self.extra, forKey: .extra)
        try container.encodeIfPresent(self.notifyPID, forKey: .notifyPID)
        try container.encode(self.stopGracePeriod, forKey: .stopGracePeriod)
        try container.encodeIfPresent(self.restartBackoff, forKey: .restartBackoff)
        try container.encode(self.restartThrottle, forKey: .restartThrottle)
        try container.encodeIfPresent(self.restartBudget, forKey: .restartBudget)
        try container.encode(self.reportsReadiness, forKey: .reportsReadiness)
        try container.encodeIfPresent(self.user, forKey: .user)
        try container.encodeIfPresent(self.group, forKey: .group)
    }
}
