import Glibc
import SwcclSystem
import SwcclCore

extension Knobs {
    package static var bootstrap: [KnobInfo] { [commID.info, jobSecretInfo] }
    package static let commID = Knob.string("SWCCL_COMM_ID", default: "",
        "host:port of the bootstrap root; rank 0 then runs the root itself (used by swcclCommInitFromEnv and swcclGetUniqueId)")
    package static let jobSecret = Knob.string("SWCCL_JOB_SECRET", default: "",
        "a secret every process of the job shares (any text, e.g. 32 random hex digits): with SWCCL_COMM_ID or MASTER_ADDR, only processes that know it can join; never printed")
    /// As `Knobs.all` lists it: whether it is set, never its value.
    package static var jobSecretInfo: KnobInfo {
        KnobInfo(name: jobSecret.name, defaultText: "", help: jobSecret.help, currentText: jobSecret.isSet ? "(set, not shown)" : "")
    }
}

/// Where the secret of an id that every rank derives from `host:port` (SWCCL_COMM_ID, MASTER_ADDR)
/// comes from, strongest first. docs/RELIABILITY.md, "Who can join a job", says what each protects
/// against.
package enum SecretSource: Sendable, Equatable {
    /// `SWCCL_JOB_SECRET`: only processes given it can join.
    case explicit
    /// A random key the launcher put in the environment of the job's processes only (Open MPI's
    /// mpirun: `OMPI_MCA_orte_precondition_transports`).
    case launcherKey(String)
    /// Only job identifiers (Slurm job and step, Open MPI / PMIx job, torchrun run id, SWCCL_JOB_ID):
    /// two jobs never join each other by mistake, but anyone who can list the jobs can compute it.
    case jobIdentifiers([String])
    /// Nothing but `host:port`: anyone who can reach the address can compute the secret.
    case none

    /// One line for the INFO log.
    package var summary: String {
        switch self {
        case .explicit: return "secret from SWCCL_JOB_SECRET: only processes given it can join"
        case .launcherKey(let v): return "secret from the launcher's random key \(v): only processes of this job (and its user) can join"
        case .jobIdentifiers(let vs): return "no job secret: the secret is derived from host:port and the job identifiers \(vs.joined(separator: ", ")), which others can learn or guess; this only keeps two jobs apart. Set SWCCL_JOB_SECRET to keep strangers out"
        case .none: return "no job secret available: the secret is derived from host:port alone, so anyone who can reach that address can join. Set SWCCL_JOB_SECRET to keep strangers out"
        }
    }
}

/// The 128 bytes every rank of a new communicator must share: where the bootstrap root listens and a
/// random 128-bit secret that authenticates every connection of the communicator.
///
/// Layout: magic "SWID" (4), version (1), flags (1: bit 0 = rank 0 runs the root, bit 1 = the secret
/// was derived without a job secret, so strangers may know it), reserved (2),
/// root address (19: family, port, address), secret (16), zero padding to 128.
public struct UniqueID: Sendable, Equatable {
    public static let byteCount = 128
    package static let magic: [UInt8] = Array("SWID".utf8)
    package static let version: UInt8 = 1

    public var bytes: [UInt8]

    public init(bytes: [UInt8]) throws(CCLError) {
        guard bytes.count == Self.byteCount else { throw CCLError.invalidArgument("a unique id has \(Self.byteCount) bytes, not \(bytes.count)") }
        self.bytes = bytes
        _ = try parsed()
    }

    package init(root: SocketAddress, secret: [UInt8], rankZeroRunsRoot: Bool, weakSecret: Bool = false) {
        var b = [UInt8](repeating: 0, count: Self.byteCount)
        b[0..<4] = ArraySlice(Self.magic)
        b[4] = Self.version
        b[5] = (rankZeroRunsRoot ? 1 : 0) | (weakSecret ? 2 : 0)
        b.withUnsafeMutableBytes { root.encode(into: $0.baseAddress! + 8) }
        b[27..<43] = ArraySlice(secret)
        bytes = b
    }

    package struct Parts { package var root: SocketAddress; package var secret: [UInt8]; package var rankZeroRunsRoot: Bool; package var weakSecret: Bool
        package init(root: SocketAddress, secret: [UInt8], rankZeroRunsRoot: Bool, weakSecret: Bool) { self.root = root; self.secret = secret; self.rankZeroRunsRoot = rankZeroRunsRoot; self.weakSecret = weakSecret }
    }

    package func parsed() throws(CCLError) -> Parts {
        guard Array(bytes[0..<4]) == Self.magic, bytes[4] == Self.version,
              let root = bytes.withUnsafeBytes({ SocketAddress.decode(from: $0.baseAddress! + 8) }) else {
            throw CCLError.invalidArgument("the unique id is not one made by swcclGetUniqueId of this version (was it copied whole to every rank?)")
        }
        return Parts(root: root, secret: Array(bytes[27..<43]), rankZeroRunsRoot: bytes[5] & 1 != 0, weakSecret: bytes[5] & 2 != 0)
    }

    /// A new id. With `SWCCL_COMM_ID=host:port` the id names that address and rank 0 will run the root;
    /// otherwise this process starts the root now, listening on the chosen interface.
    public static func make() throws(CCLError) -> UniqueID {
        if !Knobs.commID.value.isEmpty { return try fromCommID(Knobs.commID.value) }
        return try makeRandom()
    }

    /// A new id with a random secret and a root started now in this process, whatever SWCCL_COMM_ID
    /// says (for communicators made from others, e.g. by split).
    package static func makeRandom() throws(CCLError) -> UniqueID {
        var secret = [UInt8](repeating: 0, count: 16)
        do throws(Errno) { try secret.withUnsafeMutableBytes { b in catching { () throws(Errno) in try Sys.randomBytes(b.baseAddress!, 16) } }.get() }
        catch { throw CCLError.system("getrandom", error) }
        let iface = try InterfaceChoice.local()
        let l = try SocketIO.listen(on: iface.address.withAnyPort)
        try BootstrapRoot.start(listenFD: l.fd, secret: secret)
        Log.info(.bootstrap, "bootstrap root listening on \(iface.name) \(l.address)")
        return UniqueID(root: l.address, secret: secret, rankZeroRunsRoot: false)
    }

    /// The id every rank derives from the same `host:port`. Its secret is derived from the address and
    /// from what the job's processes share (`secretMaterial`): an explicit SWCCL_JOB_SECRET, else a
    /// random key of the launcher, else job identifiers, else nothing; which one is logged at INFO.
    public static func fromCommID(_ text: String) throws(CCLError) -> UniqueID {
        try fromCommID(text) { name in
            name == Knobs.jobSecret.name ? (Knobs.jobSecret.isSet ? Knobs.jobSecret.value : nil) : Sys.environment(name)
        }
    }

    /// The same, reading the environment through `env` (tests).
    package static func fromCommID(_ text: String, env: (String) -> String?) throws(CCLError) -> UniqueID {
        guard let addr = SocketAddress.parse(text.trimmingSpaces) else {
            throw CCLError.invalidArgument("SWCCL_COMM_ID=\(text) is not host:port (IPv6: [addr]:port) or does not resolve")
        }
        let (material, source) = secretMaterial(env)
        Log.info(.bootstrap, "bootstrap id for \(text.trimmingSpaces): \(source.summary)")
        let weak: Bool
        switch source { case .explicit, .launcherKey: weak = false; case .jobIdentifiers, .none: weak = true }
        return UniqueID(root: addr, secret: derivedSecret(Array((text.trimmingSpaces + material).utf8)), rankZeroRunsRoot: true, weakSecret: weak)
    }

    /// What the processes of one job share and strangers should not know, as text to hash, and how
    /// strong it is. Every variable found goes in (so two jobs that differ in any never meet).
    package static func secretMaterial(_ env: (String) -> String?) -> (material: String, source: SecretSource) {
        var material = ""
        func add(_ name: String) -> Bool {
            guard let v = env(name), !v.isEmpty else { return false }
            material += "|\(name)=\(v)"
            return true
        }
        let explicit = add("SWCCL_JOB_SECRET")
        // Open MPI's mpirun (and PMIx's pnet) draws this key from /dev/urandom for PSM/OFI; under srun
        // direct launch it is made from the job and step ids instead (then it is no secret).
        let keyName = "OMPI_MCA_orte_precondition_transports"
        let key = add(keyName) && looksRandom(env(keyName)!)
        var ids: [String] = []
        // Under mpirun inside a Slurm job, the ranks mpirun starts itself keep the batch script's
        // Slurm variables while those its daemons start (through srun) see the daemons' step: Slurm's
        // step id differs between ranks of one job there, so Open MPI's own ids stand in for it.
        let underMpirun = env("OMPI_COMM_WORLD_SIZE") != nil
        for v in ["SLURM_JOB_ID", "SLURM_STEP_ID", "OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "TORCHELASTIC_RUN_ID", "SWCCL_JOB_ID"]
            where !(underMpirun && v == "SLURM_STEP_ID") && add(v) {
            ids.append(v)
        }
        let source: SecretSource = explicit ? .explicit : key ? .launcherKey(keyName) : ids.isEmpty ? .none : .jobIdentifiers(ids)
        return (material, source)
    }

    /// A launcher key that is not made of job ids: two different halves of 16 hex digits, neither with
    /// a run of six zeros (ids are small numbers padded with zeros, e.g. `012cc14200000000-012cc14200000000`).
    package static func looksRandom(_ v: String) -> Bool {
        let halves = v.split(separator: "-")
        guard halves.count == 2, halves[0] != halves[1] else { return false }
        return halves.allSatisfy { $0.count >= 12 && !$0.contains("000000") }
    }

    /// A 16-byte secret every rank computes alike from the same material: two FNV-1a lanes (different
    /// offsets and primes folded in), each finished with splitmix64. For ids that ranks derive instead of
    /// receiving (`SWCCL_COMM_ID`, shrink). Not a cryptographic hash: what it protects is the material's
    /// secrecy (docs/RELIABILITY.md).
    package static func derivedSecret(_ material: [UInt8], salt: UInt64 = 0) -> [UInt8] {
        var secret: [UInt8] = []
        var lanes: [UInt64] = [0xcbf2_9ce4_8422_2325, 0x8422_2325_cbf2_9ce4 ^ 0x9e37_79b9_7f4a_7c15]
        for (k, b) in material.enumerated() {
            lanes[0] = (lanes[0] ^ UInt64(b)) &* 0x100_0000_01b3
            lanes[1] = (lanes[1] ^ UInt64(b) ^ (UInt64(k & 0xff) << 8)) &* 0x100_0000_01b3
            lanes[1] = lanes[1] ^ (lanes[1] >> 29)
        }
        for k in 0..<2 {
            var x = lanes[k] &+ (UInt64(k) &+ salt) &* 0x9e37_79b9_7f4a_7c15
            x = (x ^ (x >> 30)) &* 0xbf58_476d_1ce4_e5b9
            x = (x ^ (x >> 27)) &* 0x94d0_49bb_1331_11eb
            x ^= x >> 31
            for i in 0..<8 { secret.append(UInt8(truncatingIfNeeded: x >> (8 * UInt64(i)))) }
        }
        return secret
    }

    /// Hex text, for passing an id through the environment or a command line.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public init(hex: String) throws(CCLError) {
        let u = Array(hex.utf8)
        guard u.count == Self.byteCount * 2 else { throw CCLError.invalidArgument("a unique id in hex has \(Self.byteCount * 2) digits") }
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var b: [UInt8] = []
        for i in stride(from: 0, to: u.count, by: 2) {
            guard let h = nib(u[i]), let l = nib(u[i + 1]) else { throw CCLError.invalidArgument("bad hex digit in unique id") }
            b.append(h << 4 | l)
        }
        try self.init(bytes: b)
    }
}
