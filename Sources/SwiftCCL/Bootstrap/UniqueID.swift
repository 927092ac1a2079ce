import Glibc

extension Knobs {
    static let commID = Knob.string("SWCCL_COMM_ID", default: "",
        "host:port of the bootstrap root; rank 0 then runs the root itself (used by swcclCommInitFromEnv and swcclGetUniqueId)")
}

/// The 128 bytes every rank of a new communicator must share: where the bootstrap root listens and a
/// random 128-bit secret that authenticates every connection of the communicator.
///
/// Layout: magic "SWID" (4), version (1), flags (1: bit 0 = rank 0 runs the root), reserved (2),
/// root address (19: family, port, address), secret (16), zero padding to 128.
public struct UniqueID: Sendable, Equatable {
    public static let byteCount = 128
    static let magic: [UInt8] = Array("SWID".utf8)
    static let version: UInt8 = 1

    public var bytes: [UInt8]

    public init(bytes: [UInt8]) throws(CCLError) {
        guard bytes.count == Self.byteCount else { throw CCLError.invalidArgument("a unique id has \(Self.byteCount) bytes, not \(bytes.count)") }
        self.bytes = bytes
        _ = try parsed()
    }

    init(root: SocketAddress, secret: [UInt8], rankZeroRunsRoot: Bool) {
        var b = [UInt8](repeating: 0, count: Self.byteCount)
        b[0..<4] = ArraySlice(Self.magic)
        b[4] = Self.version
        b[5] = rankZeroRunsRoot ? 1 : 0
        b.withUnsafeMutableBytes { root.encode(into: $0.baseAddress! + 8) }
        b[27..<43] = ArraySlice(secret)
        bytes = b
    }

    struct Parts { var root: SocketAddress; var secret: [UInt8]; var rankZeroRunsRoot: Bool }

    func parsed() throws(CCLError) -> Parts {
        guard Array(bytes[0..<4]) == Self.magic, bytes[4] == Self.version,
              let root = bytes.withUnsafeBytes({ SocketAddress.decode(from: $0.baseAddress! + 8) }) else {
            throw CCLError.invalidArgument("the unique id is not one made by swcclGetUniqueId of this version (was it copied whole to every rank?)")
        }
        return Parts(root: root, secret: Array(bytes[27..<43]), rankZeroRunsRoot: bytes[5] & 1 != 0)
    }

    /// A new id. With `SWCCL_COMM_ID=host:port` the id names that address and rank 0 will run the root;
    /// otherwise this process starts the root now, listening on the chosen interface.
    public static func make() throws(CCLError) -> UniqueID {
        if !Knobs.commID.value.isEmpty { return try fromCommID(Knobs.commID.value) }
        return try makeRandom()
    }

    /// A new id with a random secret and a root started now in this process, whatever SWCCL_COMM_ID
    /// says (for communicators made from others, e.g. by split).
    static func makeRandom() throws(CCLError) -> UniqueID {
        var secret = [UInt8](repeating: 0, count: 16)
        do throws(Errno) { try secret.withUnsafeMutableBytes { b in catching { () throws(Errno) in try Sys.randomBytes(b.baseAddress!, 16) } }.get() }
        catch { throw CCLError.system("getrandom", error) }
        let iface = try InterfaceChoice.local()
        let l = try SocketIO.listen(on: iface.address.withAnyPort)
        try BootstrapRoot.start(listenFD: l.fd, secret: secret)
        Log.info(.bootstrap, "bootstrap root listening on \(iface.name) \(l.address)")
        return UniqueID(root: l.address, secret: secret, rankZeroRunsRoot: false)
    }

    /// The id every rank derives from the same `host:port`. Its secret is a hash of the address and of
    /// the launcher's job id (TORCHELASTIC_RUN_ID, SLURM_JOB_ID, OMPI_MCA_ess_base_jobid), so that two jobs
    /// reusing one port never join each other.
    public static func fromCommID(_ text: String) throws(CCLError) -> UniqueID {
        guard let addr = SocketAddress.parse(text.trimmingSpaces) else {
            throw CCLError.invalidArgument("SWCCL_COMM_ID=\(text) is not host:port (IPv6: [addr]:port) or does not resolve")
        }
        var material = text.trimmingSpaces
        for v in ["TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "OMPI_MCA_ess_base_jobid", "SWCCL_JOB_ID"] {
            if let j = Sys.environment(v) { material += "|\(v)=\(j)" }
        }
        return UniqueID(root: addr, secret: derivedSecret(Array(material.utf8)), rankZeroRunsRoot: true)
    }

    /// A 16-byte secret every rank computes alike from the same material (FNV-1a, then two splitmix64
    /// outputs): for ids that ranks derive instead of receiving (`SWCCL_COMM_ID`, shrink).
    static func derivedSecret(_ material: [UInt8], salt: UInt64 = 0) -> [UInt8] {
        var secret: [UInt8] = []
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in material { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        for k in 0..<2 {
            var x = h &+ (UInt64(k) &+ salt) &* 0x9e37_79b9_7f4a_7c15
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
