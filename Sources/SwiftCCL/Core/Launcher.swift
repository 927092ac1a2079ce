extension Knobs {
    static let rank = Knob.int("SWCCL_RANK", default: -1, "this process' rank, for swcclCommInitFromEnv (else RANK, OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID)")
    static let size = Knob.int("SWCCL_SIZE", default: -1, "number of ranks, for swcclCommInitFromEnv (else WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS)")
}

/// Where a process learns its rank, the number of ranks and the rendezvous address when a launcher
/// started it (torchrun, Slurm, Open MPI, PMI) or from `SWCCL_RANK`/`SWCCL_SIZE`/`SWCCL_COMM_ID`.
public struct LaunchEnvironment: Sendable, Equatable {
    public var rank: Int
    public var size: Int
    /// `host:port` of the bootstrap root.
    public var rendezvous: String
    /// Which launcher's variables were used.
    public var source: String

    public init(rank: Int, size: Int, rendezvous: String, source: String) {
        self.rank = rank; self.size = size; self.rendezvous = rendezvous; self.source = source
    }

    static let sources: [(name: String, rank: String, size: String)] = [
        ("SWCCL", "SWCCL_RANK", "SWCCL_SIZE"),
        ("torchrun", "RANK", "WORLD_SIZE"),
        ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI", "PMI_RANK", "PMI_SIZE"),
        ("Slurm", "SLURM_PROCID", "SLURM_NTASKS"),
    ]

    /// True when some launcher's rank variables are present.
    public static var isLaunched: Bool {
        sources.contains { Sys.environment($0.rank) != nil && Sys.environment($0.size) != nil }
    }

    /// Reads the environment given as a lookup function (the process environment by default).
    public static func detect() throws(CCLError) -> LaunchEnvironment {
        try detect { Sys.environment($0) }
    }

    public static func detect(_ env: (String) -> String?) throws(CCLError) -> LaunchEnvironment {
        for s in sources {
            if s.name == "SWCCL", (env(s.rank) == nil) != (env(s.size) == nil) {
                throw CCLError.invalidUsage("SWCCL_RANK and SWCCL_SIZE must be set together (only \(env(s.rank) == nil ? "SWCCL_SIZE" : "SWCCL_RANK") is)")
            }
            guard let rt = env(s.rank), let st = env(s.size) else { continue }
            guard let r = Int(rt.trimmingSpaces), let n = Int(st.trimmingSpaces), n > 0, r >= 0, r < n else {
                throw CCLError.invalidUsage("\(s.rank)=\(rt) and \(s.size)=\(st) are not a valid rank and size")
            }
            if let id = env("SWCCL_COMM_ID"), !id.isEmpty {
                return LaunchEnvironment(rank: r, size: n, rendezvous: id, source: s.name)
            }
            if let host = env("MASTER_ADDR"), let pt = env("MASTER_PORT"), let port = Int(pt), port > 0, port < 65535 {
                // torchrun's own store listens on MASTER_PORT; the SwiftCCL root takes the next port.
                let h = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
                return LaunchEnvironment(rank: r, size: n, rendezvous: "\(h):\(port + 1)", source: s.name)
            }
            if n == 1 { return LaunchEnvironment(rank: 0, size: 1, rendezvous: "127.0.0.1:0", source: s.name) }
            throw CCLError.invalidUsage("\(s.name) gave rank \(r) of \(n) but no rendezvous address: set SWCCL_COMM_ID=host:port (or MASTER_ADDR and MASTER_PORT)")
        }
        throw CCLError.invalidUsage("no launcher environment found: set SWCCL_RANK, SWCCL_SIZE and SWCCL_COMM_ID, or run under torchrun, srun, mpirun or a PMI launcher")
    }
}
