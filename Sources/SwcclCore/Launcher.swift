import SwcclSystem
extension Knobs {
    package static let rank = Knob.int("SWCCL_RANK", default: -1, "this process' rank, for swcclCommInitFromEnv (else RANK, OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID)")
    package static let size = Knob.int("SWCCL_SIZE", default: -1, "number of ranks, for swcclCommInitFromEnv (else WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS)")
}

/// Where a process learns its rank, the number of ranks and the rendezvous address when a launcher
/// started it (torchrun, Slurm's srun, Open MPI's mpirun, a PMIx or PMI launcher) or from
/// `SWCCL_RANK`/`SWCCL_SIZE`/`SWCCL_COMM_ID`. docs/ENVIRONMENT.md, "Launchers", lists every variable.
///
/// The rendezvous is, first that applies: `SWCCL_COMM_ID`; `MASTER_ADDR` and `MASTER_PORT + 1`;
/// what the launcher says of the job's first host — Open MPI: mpirun's host (`OMPI_MCA_orte_hnp_uri`
/// before 5.0, the host in `PMIX_NAMESPACE` (`prterun-HOST-PID@N`) from 5.0), Slurm (and PMI/PMIx
/// launchers inside an srun step): the first host of `SLURM_STEP_NODELIST` — with a port derived from
/// the job's identifiers (`derivedPort`). Rank 0 runs the bootstrap root there, so it must run on
/// that host (srun's and mpirun's default placement put it there).
package struct LaunchEnvironment: Sendable, Equatable {
    package var rank: Int
    package var size: Int
    /// `host:port` of the bootstrap root.
    package var rendezvous: String
    /// Which launcher's variables gave the rank and size ("SWCCL", "torchrun", "Open MPI", "PMIx", "PMI", "Slurm").
    package var source: String
    /// Where the rendezvous address came from, for logs and errors: "SWCCL_COMM_ID", "MASTER_ADDR and
    /// MASTER_PORT + 1", "the first host of SLURM_STEP_NODELIST=… and a port from SLURM_JOB_ID=… SLURM_STEP_ID=…".
    package var origin: String
    /// The rank among the job's processes on this host, where the launcher says (LOCAL_RANK,
    /// OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID).
    package var localRank: Int?

    package init(rank: Int, size: Int, rendezvous: String, source: String, origin: String = "", localRank: Int? = nil) {
        self.rank = rank; self.size = size; self.rendezvous = rendezvous; self.source = source
        self.origin = origin; self.localRank = localRank
    }

    /// A launcher's rank variables. `size` is read in order (PMIx puts no size in the environment).
    package struct Source {
        package let name: String
        package let rank: String
        package let size: [String]
        package let local: String?
    }

    package static let sources: [Source] = [
        Source(name: "SWCCL", rank: "SWCCL_RANK", size: ["SWCCL_SIZE"], local: nil),
        Source(name: "torchrun", rank: "RANK", size: ["WORLD_SIZE"], local: "LOCAL_RANK"),
        Source(name: "Open MPI", rank: "OMPI_COMM_WORLD_RANK", size: ["OMPI_COMM_WORLD_SIZE"], local: "OMPI_COMM_WORLD_LOCAL_RANK"),
        Source(name: "PMIx", rank: "PMIX_RANK", size: ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"], local: "SLURM_LOCALID"),
        Source(name: "PMI", rank: "PMI_RANK", size: ["PMI_SIZE"], local: "MPI_LOCALRANKID"),
        Source(name: "Slurm", rank: "SLURM_PROCID", size: ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"], local: "SLURM_LOCALID"),
    ]

    /// True when some launcher's rank variables are present (and, for Slurm, the process is a task
    /// of an srun step rather than the batch script, where Slurm also sets SLURM_PROCID=0).
    package static var isLaunched: Bool { isLaunched { Sys.environment($0) } }

    package static func isLaunched(_ env: (String) -> String?) -> Bool {
        sources.contains { s in
            guard env(s.rank) != nil else { return false }
            if s.name == "Slurm" || s.name == "PMIx" { return slurmStep(env) != nil || (s.name == "PMIx" && env("SWCCL_SIZE") != nil) }
            return s.size.contains { env($0) != nil }
        }
    }

    /// The number of the srun step this process is a task of; nil outside one (the batch script, an
    /// salloc shell, the extern step).
    package static func slurmStep(_ env: (String) -> String?) -> String? {
        guard env("SLURM_JOB_ID") != nil || env("SLURM_JOBID") != nil,
              let step = env("SLURM_STEP_ID") ?? env("SLURM_STEPID"), let n = UInt64(step.trimmingSpaces) else { return nil }
        return n < 0xFFFF_FFF0 ? String(n) : nil  // batch, extern and interactive steps have ids near 2³²
    }

    /// Reads the environment given as a lookup function (the process environment by default).
    package static func detect() throws(CCLError) -> LaunchEnvironment {
        try detect { Sys.environment($0) }
    }

    package static func detect(_ lookup: (String) -> String?) throws(CCLError) -> LaunchEnvironment {
        try withoutActuallyEscaping(lookup) { (lookup) throws(CCLError) -> LaunchEnvironment in
            // Empty values count as unset; surrounding spaces are dropped.
            try detectTrimmed { name in
                guard let v = lookup(name)?.trimmingSpaces, !v.isEmpty else { return nil }
                return v
            }
        }
    }

    package static func detectTrimmed(_ env: (String) -> String?) throws(CCLError) -> LaunchEnvironment {
        if (env("SWCCL_RANK") == nil) != (env("SWCCL_SIZE") == nil) {
            // PMIx keeps the number of ranks in its server: SWCCL_SIZE may complete PMIX_RANK.
            if !(env("SWCCL_SIZE") != nil && env("PMIX_RANK") != nil) {
                throw CCLError.invalidUsage("SWCCL_RANK and SWCCL_SIZE must be set together (only \(env("SWCCL_RANK") == nil ? "SWCCL_SIZE" : "SWCCL_RANK") is)")
            }
        }
        for s in sources {
            guard let rt = env(s.rank) else { continue }
            var sizeName: String?
            if s.name == "Slurm" || s.name == "PMIx" {
                if slurmStep(env) != nil { sizeName = s.size.first { env($0) != nil } }
                if s.name == "PMIx" && env("SWCCL_SIZE") != nil { sizeName = "SWCCL_SIZE" }
                if sizeName == nil {
                    if s.name == "Slurm" { continue }  // the batch script itself: not one of several ranks
                    throw CCLError.invalidUsage("PMIx gave rank \(rt) (PMIX_RANK) but keeps the number of ranks in its server, not in the environment: set SWCCL_SIZE (or SWCCL_RANK and SWCCL_SIZE)")
                }
            } else {
                sizeName = s.size.first { env($0) != nil }
                guard sizeName != nil else { continue }
            }
            let st = env(sizeName!)!
            guard let r = Int(rt), let n = Int(st), n > 0, r >= 0, r < n else {
                throw CCLError.invalidUsage("\(s.rank)=\(rt) and \(sizeName!)=\(st) are not a valid rank and number of ranks")
            }
            let local = s.local.flatMap { env($0) }.flatMap { Int($0) }
            let (address, origin) = try rendezvous(source: s.name, rank: r, size: n, env)
            return LaunchEnvironment(rank: r, size: n, rendezvous: address, source: s.name, origin: origin, localRank: local)
        }
        let inBatch = env("SLURM_JOB_ID") != nil ? " (this process is inside Slurm job \(env("SLURM_JOB_ID")!) but not a task of an srun step: start the ranks with srun)" : ""
        throw CCLError.invalidUsage("no launcher environment found\(inBatch): run under torchrun, srun, mpirun or a PMI launcher, or set SWCCL_RANK, SWCCL_SIZE and SWCCL_COMM_ID=host:port in every rank's environment")
    }

    /// The rendezvous address and where it came from, for a process that is rank `r` of `n`.
    package static func rendezvous(source: String, rank r: Int, size n: Int, _ env: (String) -> String?) throws(CCLError) -> (String, String) {
        if let id = env("SWCCL_COMM_ID") { return (id, "SWCCL_COMM_ID") }
        let addr = env("MASTER_ADDR"), portText = env("MASTER_PORT")
        if addr != nil || portText != nil {
            guard let host = addr else {
                throw CCLError.invalidUsage("MASTER_PORT=\(portText!) is set but MASTER_ADDR is not: set MASTER_ADDR to rank 0's host (or SWCCL_COMM_ID=host:port)")
            }
            guard let pt = portText, let port = Int(pt), port > 0, port < 65535 else {
                throw CCLError.invalidUsage("MASTER_ADDR=\(host) is set but MASTER_PORT is \(portText.map { "\"\($0)\", not a port below 65535" } ?? "not"): set MASTER_PORT (SwiftCCL's root listens on MASTER_PORT + 1), or SWCCL_COMM_ID=host:port")
            }
            // torchrun's own store listens on MASTER_PORT; the SwiftCCL root takes the next port.
            return ("\(bracketed(host)):\(port + 1)", "MASTER_ADDR and MASTER_PORT + 1")
        }
        if n == 1 { return ("127.0.0.1:0", "a job of one rank") }
        if source == "Open MPI" || source == "PMIx" {
            if let found = try openMPIRendezvous(env) { return found }
        }
        if source == "Open MPI" || source == "PMIx" || source == "PMI" || source == "Slurm" {
            if let found = try slurmRendezvous(rank: r, env) { return found }
        }
        let hint: String
        switch source {
        case "torchrun": hint = " (torchrun sets MASTER_ADDR and MASTER_PORT itself: were RANK and WORLD_SIZE set by hand?)"
        case "PMI": hint = " (MPICH's and Intel MPI's mpiexec do not say where rank 0 runs; e.g. mpiexec -genv SWCCL_COMM_ID $(hostname):29500 …)"
        case "Open MPI": hint = " (neither OMPI_MCA_orte_hnp_uri nor a PMIX_NAMESPACE of the form prterun-HOST-PID@N names mpirun's host)"
        default: hint = ""
        }
        throw CCLError.invalidUsage("\(source) gave rank \(r) of \(n) but no rendezvous address\(hint): set SWCCL_COMM_ID=host:port (rank 0's host and a free port), or MASTER_ADDR and MASTER_PORT, in every rank's environment")
    }

    package static func bracketed(_ host: String) -> String { host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host }

    /// Under Open MPI's mpirun: mpirun's host (where its default placement puts rank 0) and a port
    /// from the job id. Before 5.0 the host is the first IPv4 address other than loopback in
    /// `OMPI_MCA_orte_hnp_uri` (`JOBID.0;tcp://10.0.0.1,192.168.1.1:PORT`); from 5.0 (PRRTE) it is the
    /// host named in `PMIX_NAMESPACE` (`prterun-HOST-PID@N`).
    package static func openMPIRendezvous(_ env: (String) -> String?) throws(CCLError) -> (String, String)? {
        if let uri = env("OMPI_MCA_orte_hnp_uri"), let host = hnpHost(uri) {
            let (idName, id) = env("OMPI_MCA_ess_base_jobid").map { ("OMPI_MCA_ess_base_jobid", $0) }
                ?? env("OMPI_MCA_orte_ess_jobid").map { ("OMPI_MCA_orte_ess_jobid", $0) }
                ?? ("OMPI_MCA_orte_hnp_uri", String(uri.prefix { $0 != ";" }))
            let port = derivedPort(hashing: id)
            return ("\(bracketed(host)):\(port)", "mpirun's host \(host) from OMPI_MCA_orte_hnp_uri and port \(port) from \(idName)=\(id)")
        }
        if let ns = env("PMIX_NAMESPACE"), let host = prrteHost(ns) {
            let port = derivedPort(hashing: ns)
            return ("\(bracketed(host)):\(port)", "mpirun's host \(host) from PMIX_NAMESPACE=\(ns) and a port from it (\(port))")
        }
        return nil
    }

    /// The first IPv4 address other than loopback in an ORTE contact URI (else its first address).
    package static func hnpHost(_ uri: String) -> String? {
        var addresses: [String] = []
        for part in uri.split(separator: ";").dropFirst() {
            let pieces = part.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
            guard pieces.count == 3, pieces[0].hasSuffix(":"), pieces[1].isEmpty else { continue }  // scheme://rest
            let kind = pieces[0].dropLast()
            var rest = pieces[2]
            if kind == "tcp6" {
                // [a]:port or a,b:port with bracketed addresses
                guard let close = rest.lastIndex(of: "]") else { continue }
                rest = rest[...close]
                for a in rest.split(separator: ",") { addresses.append(String(a.filter { $0 != "[" && $0 != "]" })) }
            } else if kind == "tcp" {
                guard let colon = rest.lastIndex(of: ":") else { continue }
                for a in rest[..<colon].split(separator: ",") { addresses.append(String(a)) }
            }
        }
        let v4 = addresses.filter { !$0.contains(":") }
        return v4.first { !$0.hasPrefix("127.") } ?? v4.first ?? addresses.first { $0 != "::1" } ?? addresses.first
    }

    /// The host in a PRRTE namespace `TOOL-HOST-PID@JOB` (Open MPI 5's mpirun, prterun).
    package static func prrteHost(_ ns: String) -> String? {
        guard let at = ns.lastIndex(of: "@") else { return nil }
        let base = ns[..<at]
        guard let first = base.firstIndex(of: "-"), let last = base.lastIndex(of: "-"), first < last,
              base[base.index(after: last)...].allSatisfy(\.isNumber), base.index(after: last) < base.endIndex else { return nil }
        let host = base[base.index(after: first)..<last]
        return host.isEmpty ? nil : String(host)
    }

    /// Inside an srun step: the first host of the step's node list (srun's default placement puts
    /// task 0 there) and a port from the job and step ids. Rank 0 checks it is on that host
    /// (`SLURMD_NODENAME`) and says so at once if not.
    package static func slurmRendezvous(rank r: Int, _ env: (String) -> String?) throws(CCLError) -> (String, String)? {
        guard let step = slurmStep(env), let job = env("SLURM_JOB_ID") ?? env("SLURM_JOBID") else { return nil }
        guard let listName = ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"].first(where: { env($0) != nil }) else { return nil }
        let list = env(listName)!
        let host: String
        do throws(CCLError) {
            guard let h = try SlurmHostlist.expand(list, limit: 1).first else { return nil }
            host = h
        } catch { throw CCLError.invalidUsage("\(listName)=\(list): \(error.cause); set SWCCL_COMM_ID=host:port") }
        let port = slurmPort(job: job, step: step)
        let origin = "the first host of \(listName)=\(list) and port \(port) from SLURM_JOB_ID=\(job), SLURM_STEP_ID=\(step)"
        if r == 0, let me = env("SLURMD_NODENAME"), me != host {
            throw CCLError.invalidUsage("rank 0 runs on \(me) (SLURMD_NODENAME), not on \(host), the first host of \(listName), where every rank looks for the bootstrap root (port \(port) from SLURM_JOB_ID=\(job), SLURM_STEP_ID=\(step)): set SWCCL_COMM_ID=\(me):\(port) in every rank's environment (or keep srun's default block placement)")
        }
        return ("\(bracketed(host)):\(port)", origin)
    }

    /// Ports for derived rendezvous addresses lie in 20000–29999, below Linux's ephemeral range.
    package static let derivedPortBase = 20000

    /// Slurm: 20000 + 16 × (job id mod 625) + (step id mod 16), so the steps of one job (up to 16)
    /// and jobs with nearby ids never share a port.
    package static func slurmPort(job: String, step: String) -> Int {
        let j = UInt64(job.prefix { $0.isNumber }).map { Int($0 % 625) } ?? (derivedPort(hashing: job) - derivedPortBase) % 625
        let s = UInt64(step).map { Int($0 % 16) } ?? 0
        return derivedPortBase + 16 * j + s
    }

    /// Other job identifiers: 20000 + (FNV-1a of the text mod 10000).
    package static func derivedPort(hashing text: String) -> Int {
        var h: UInt32 = 0x811c_9dc5
        for b in text.utf8 { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        return derivedPortBase + Int(h % 10000)
    }
}

/// Slurm's compressed host lists: `node[01-04,07],gpu3,rack[1-2]-n[1-2]` → node01 … node04, node07,
/// gpu3, rack1-n1, rack1-n2, rack2-n1, rack2-n2 (ranges keep the width of their zero-padded lower end).
package enum SlurmHostlist {
    /// At most `limit` hosts, in order.
    package static func expand(_ list: String, limit: Int = 1 << 20) throws(CCLError) -> [String] {
        var out: [String] = []
        var item = "", depth = 0
        var items: [String] = []
        for c in list {
            if c == "[" { depth += 1 } else if c == "]" { depth -= 1 }
            guard depth >= 0, depth <= 1 else { throw CCLError.invalidArgument("unbalanced brackets in the host list") }
            if c == "," && depth == 0 { items.append(item); item = "" } else { item.append(c) }
        }
        guard depth == 0 else { throw CCLError.invalidArgument("unbalanced brackets in the host list") }
        items.append(item)
        for it in items where !it.trimmingSpaces.isEmpty {
            try expandItem(Substring(it.trimmingSpaces), prefix: "", into: &out, limit: limit)
            if out.count >= limit { break }
        }
        guard !out.isEmpty else { throw CCLError.invalidArgument("the host list is empty") }
        return out
    }

    private static func expandItem(_ s: Substring, prefix: String, into out: inout [String], limit: Int) throws(CCLError) {
        guard let open = s.firstIndex(of: "[") else { out.append(prefix + s); return }
        guard let close = s[open...].firstIndex(of: "]") else { throw CCLError.invalidArgument("unbalanced brackets in the host list") }
        let head = prefix + s[..<open]
        let tail = s[s.index(after: close)...]
        for range in s[s.index(after: open)..<close].split(separator: ",", omittingEmptySubsequences: false) {
            let ends = range.split(separator: "-", omittingEmptySubsequences: false)
            guard ends.count == 1 || ends.count == 2, ends.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }),
                  let lo = Int(ends[0]), let hi = Int(ends[ends.count - 1]), lo <= hi else {
                throw CCLError.invalidArgument("\"[\(s[s.index(after: open)..<close])]\" is not a list of numbers and ranges like [01-04,07]")
            }
            let width = ends[0].count
            for v in lo...hi {
                let digits = String(v)
                let padded = String(repeating: "0", count: max(0, width - digits.count)) + digits
                try expandItem(tail, prefix: head + padded, into: &out, limit: limit)
                if out.count >= limit { return }
            }
        }
    }
}
