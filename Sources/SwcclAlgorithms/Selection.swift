import Synchronization
import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static var algorithms: [KnobInfo] {
        [algo.info, chunkBytes.info, treeChunkBytes.info, alphaMicros.info, bandwidthGBs.info, reduceGBs.info,
         shmStageBytes.info, shmStageSlots.info, streamingBytes.info]
    }
    package static let algo = Knob.string("SWCCL_ALGO", default: "",
        "force algorithms: `ring`, `allreduce:tree`, `allreduce:0-4K:recdbl;4K-inf:ring,broadcast:chain` (see docs/ENVIRONMENT.md)")
    package static let chunkBytes = Knob.int("SWCCL_CHUNK_SIZE", default: 512 << 10, "largest pipeline chunk of the ring algorithms, in bytes")
    package static let alphaMicros = Knob.double("SWCCL_MODEL_ALPHA_US", default: 0,
        "cost model: latency of one message step in microseconds (0: the transport's measured value)")
    package static let bandwidthGBs = Knob.double("SWCCL_MODEL_BW_GBS", default: 0,
        "cost model: bandwidth of one link in GB/s (0: the transport's measured value)")
    package static let reduceGBs = Knob.double("SWCCL_MODEL_REDUCE_GBS", default: 0,
        "cost model: reduction kernel throughput in GB/s of output (0: the built-in measured value)")
}

/// The collectives that have a choice of algorithm.
public enum CollectiveKind: String, CaseIterable, Sendable {
    case allreduce, allgather, reducescatter, broadcast, reduce, alltoall

    /// Accepts the library's and swccl-perf's spellings (`allreduce`, `all_reduce`).
    public init?(name: String) { self.init(rawValue: name.lowercased().replacingDashes) }

    /// nccl-tests' bus bandwidth factor: busbw = algbw × factor.
    public func busFactor(_ n: Int) -> Double {
        let N = Double(n)
        switch self {
        case .allreduce: return n > 1 ? 2 * (N - 1) / N : 0
        case .allgather, .reducescatter, .alltoall: return (N - 1) / N
        case .broadcast, .reduce: return 1
        }
    }

    /// Its position among the cases (a switch: no array per call on the collective path).
    package var index: Int {
        switch self {
        case .allreduce: 0
        case .allgather: 1
        case .reducescatter: 2
        case .broadcast: 3
        case .reduce: 4
        case .alltoall: 5
        }
    }

    /// The algorithms implemented for this collective, in the order tables show them.
    public var algorithms: [Algorithm] {
        switch self {
        case .allreduce: [.ring, .tree, .recdbl, .rabenseifner, .oneshot, .staged]
        case .allgather: [.ring, .recdbl, .staged]
        case .reducescatter: [.ring, .halving, .staged]
        case .broadcast: [.chain, .binomial, .staged]
        case .reduce: [.chain, .binomial]
        case .alltoall: [.pairwise]
        }
    }
}

/// Algorithm names, as `SWCCL_ALGO`, `swccl-perf -a` and the INFO table spell them.
public enum Algorithm: String, CaseIterable, Sendable {
    /// Pipelined ring (allreduce: reduce-scatter then all-gather, four lanes in both directions).
    case ring
    /// Double binary tree (allreduce), each half of the data reduced up and broadcast down one tree.
    case tree
    /// Recursive doubling (allreduce: whole-buffer exchanges; all-gather: Bruck's algorithm when the
    /// rank count is not a power of two).
    case recdbl
    /// Recursive-halving reduce-scatter then recursive-doubling all-gather (allreduce).
    case rabenseifner
    /// Recursive halving (reduce-scatter).
    case halving
    /// Pipelined chain (broadcast, reduce).
    case chain
    /// Binomial tree (broadcast, reduce).
    case binomial
    /// Pairwise exchange (all-to-all).
    case pairwise
    /// One-shot allreduce through shared input areas (shared-memory transport, small messages).
    case oneshot
    /// Pipelined through shared staging slots that every rank reads directly (shared-memory transport):
    /// allreduce, all-gather, reduce-scatter, broadcast.
    case staged

    /// Parses a name or an alias (`bruck`, `rhd`, `rechalving`, `pipeline`).
    public init?(name: String) {
        switch name {
        case "bruck": self = .recdbl
        case "rhd", "rabenseifner": self = .rabenseifner
        case "rechalving", "halving", "rechalv": self = .halving
        case "pipeline", "chain": self = .chain
        case "shared", "direct": self = .staged
        default: self.init(rawValue: name)
        }
    }

    /// The algorithm's wire code: it goes into every collective's argument fingerprint, which travels
    /// in the tags, so ranks of different builds must agree on it. Explicit and stable — independent
    /// of the order of the cases; a new algorithm takes the next unused number, and no number is ever
    /// reused. (A switch: `allCases.firstIndex` built an array on every collective call.)
    package var code: Int {
        switch self {
        case .ring: 0
        case .tree: 1
        case .recdbl: 2
        case .rabenseifner: 3
        case .halving: 4
        case .chain: 5
        case .binomial: 6
        case .pairwise: 7
        case .oneshot: 8
        case .staged: 9
        }
    }

    /// The algorithm of a `code`.
    package init(code: Int) {
        switch code {
        case 0: self = .ring
        case 1: self = .tree
        case 2: self = .recdbl
        case 3: self = .rabenseifner
        case 4: self = .halving
        case 5: self = .chain
        case 6: self = .binomial
        case 7: self = .pairwise
        case 8: self = .oneshot
        default: self = .staged
        }
    }
}

/// The latency/bandwidth cost model (Hockney: a step that moves `b` bytes costs α + b·β, a reduction
/// of `b` bytes costs b·γ) and the rule that picks an algorithm from it. Every rank evaluates the same
/// model on the same inputs, so every rank picks the same algorithm; forced choices come first.
public struct CostModel: Sendable, CustomStringConvertible {
    /// Seconds per message step (latency plus per-message overhead).
    public var alpha: Double
    /// Seconds per byte on one link.
    public var beta: Double
    /// Seconds per byte of reduction output.
    public var gamma: Double
    /// Pipeline chunk of the ring and chain algorithms, bytes.
    public var chunkBytes: Int
    /// Pipeline chunk of the tree algorithm, bytes.
    public var treeChunkBytes: Int
    /// Blocks up to this size stay in cache between a step's transfer and its reduction.
    public var cacheBytes: Int
    /// Seconds per byte of a reduction whose block did not stay in cache (read back from memory).
    /// Pipelined algorithms (ring, tree, chain) reduce chunk by chunk and never pay it.
    public var memoryBeta: Double
    /// Input area each rank can read from every other (shared memory), 0 if none: bounds `oneshot`.
    public var arenaBytes = 0
    /// Bytes of one step of the staged pipelines (shared memory), 0 if the transport has none.
    public var stageBytes = 0
    /// Whether pipelined algorithms overlap transfers with reductions (a NIC or DMA engine moves the
    /// data) rather than share the cores with them (TCP, copy-based shared memory).
    public var overlapsReduction: Bool

    public init(alpha: Double, beta: Double, gamma: Double, chunkBytes: Int = 512 << 10, treeChunkBytes: Int = 128 << 10,
                cacheBytes: Int = 1 << 20, memoryBeta: Double = 0.5e-9, overlapsReduction: Bool = false) {
        self.alpha = alpha; self.beta = beta; self.gamma = gamma
        self.chunkBytes = chunkBytes; self.treeChunkBytes = treeChunkBytes
        self.cacheBytes = cacheBytes; self.memoryBeta = memoryBeta; self.overlapsReduction = overlapsReduction
    }

    /// The reduction throughput measured for float sum with the library's kernels on the reference
    /// machine (docs/PERFORMANCE.md), used when nothing better is known.
    public static let defaultGamma = 1.0 / 4.0e9

    /// The model for a transport: its advertised α and β, overridden by the `SWCCL_MODEL_*` knobs;
    /// with a symmetric window, the one-shot and staged algorithms' sizes from their own layout.
    public static func forTransport(_ caps: TransportCapabilities, ranks: Int) -> CostModel {
        let a = Knobs.alphaMicros.value > 0 ? Knobs.alphaMicros.value * 1e-6 : caps.alphaNanos * 1e-9
        let b = Knobs.bandwidthGBs.value > 0 ? 1 / (Knobs.bandwidthGBs.value * 1e9) : caps.betaNanosPerByte * 1e-9
        let g = Knobs.reduceGBs.value > 0 ? 1 / (Knobs.reduceGBs.value * 1e9) : defaultGamma
        var m = CostModel(alpha: a, beta: b, gamma: g, chunkBytes: Knobs.chunkBytes.value, treeChunkBytes: Knobs.treeChunkBytes.value)
        if caps.windowBytes >= SharedArenaLayout.request(ranks: ranks).bytes {
            m.arenaBytes = SharedArenaLayout.areaBytes
            m.stageBytes = SharedArenaLayout.stageBytes(ranks: ranks)
        }
        return m
    }

    /// The model for a backend of the registry, from the figures it declares (no knobs applied); the
    /// one-shot and staged sizes as for one rank when it provides a symmetric window.
    public static func forBackend(_ backend: TransportBackend) -> CostModel {
        var m = CostModel(alpha: backend.alphaNanos * 1e-9, beta: backend.betaNanosPerByte * 1e-9,
                          gamma: defaultGamma, chunkBytes: Knobs.chunkBytes.value, treeChunkBytes: Knobs.treeChunkBytes.value)
        if backend.providesWindow {
            m.arenaBytes = SharedArenaLayout.areaBytes
            m.stageBytes = SharedArenaLayout.stageBytes(ranks: 1)
        }
        return m
    }

    public var description: String {
        "α \(fixed(alpha * 1e6, 1)) µs, β \(fixed(1 / beta / 1e9, 2)) GB/s, γ \(fixed(1 / gamma / 1e9, 2)) GB/s, "
            + "blocks above \(formatBytes(cacheBytes)) reduced at \(fixed(1 / memoryBeta / 1e9, 2)) GB/s"
            + (overlapsReduction ? ", transfers overlap reductions" : "")
    }

    /// Predicted seconds for `kind` with `algorithm` moving `bytes` (the collective's size as
    /// swccl-perf counts it) over `n` ranks; nil if the algorithm does not implement `kind`.
    public func predict(_ kind: CollectiveKind, _ algorithm: Algorithm, bytes: Int, ranks n: Int) -> Double? {
        guard kind.algorithms.contains(algorithm) else { return nil }
        if n <= 1 { return 0 }
        let S = Double(bytes), N = Double(n)
        let p = 1 << (Int.bitWidth - 1 - n.leadingZeroBitCount)  // largest power of two <= n
        let P = Double(p), logP = Double(p.trailingZeroBitCount)
        let logN = ceil(log2(N))
        let folded = p != n
        let a = alpha, b = beta, g = gamma
        // Transfers and reductions of a pipeline: serial when the transport's copies use the same
        // cores as the reductions (TCP), concurrent when a NIC or DMA engine moves the data.
        func pipelined(_ transfer: Double, _ reduce: Double) -> Double { overlapsReduction ? max(transfer, reduce) : transfer + reduce }
        // A reduction of a block too large for the cache reads it back from memory.
        func spill(_ block: Double) -> Double { block > Double(cacheBytes) ? block * memoryBeta : 0 }
        // Recursive halving then doubling: blocks S/2, S/4, … S/p, reduced on the way down.
        var halvingSpill = 0.0
        var blk = S / 2
        for _ in 0..<Int(logP) { halvingSpill += spill(blk); blk /= 2 }
        // Fold and unfold of the ranks beyond the power of two: the whole buffer there and back.
        func fold(_ reduces: Bool) -> Double { folded ? 2 * (a + S * b) + (reduces ? S * g + spill(S) : 0) : 0 }
        switch (kind, algorithm) {
        case (.allreduce, .ring):
            // 2(n−1) steps of S/n each; every chunk round of a lane costs its own α (4 lanes).
            let seg = S / N
            let chunks = max(1, ceil(seg / Double(chunkBytes)))
            return 2 * (N - 1) * a * max(1, chunks / 4) + pipelined(2 * (N - 1) * seg * b, (N - 1) * seg * g)
        case (.allreduce, .tree):
            // Two trees, each carrying S/2 in chunks; a chunk climbs and descends the depth, and the
            // busiest rank (interior in one tree, leaf in the other) moves 2S each way.
            let depth = Double(DoubleTree.depth(n))
            let half = S / 2
            let c = min(max(half, 1), Double(treeChunkBytes))
            let chunks = max(1, ceil(half / c))
            return 2 * depth * (a + c * (b + g)) + chunks * a + pipelined(2 * S * b, S * g)
        case (.allreduce, .recdbl):
            return logP * (a + S * b + S * g + spill(S)) + fold(true)
        case (.allreduce, .rabenseifner):
            return 2 * logP * a + 2 * (P - 1) / P * S * b + (P - 1) / P * S * g + 2 * halvingSpill + fold(true)
        case (.allgather, .ring):
            return (N - 1) * (a + S / N * b)
        case (.allgather, .recdbl):
            // ⌈log₂ n⌉ steps with doubling blocks; Bruck's variant also rotates the result once.
            return logN * a + (N - 1) / N * S * b + (p == n ? 0 : S * b / 4)
        case (.reducescatter, .ring):
            return (N - 1) * (a + S / N * (b + g))
        case (.reducescatter, .halving):
            return logP * a + (P - 1) / P * S * (b + g) + halvingSpill + fold(true)
        case (.broadcast, .chain), (.reduce, .chain):
            let c = min(max(S, 1), Double(chunkBytes))
            let chunks = max(1, ceil(S / c))
            let red = kind == .reduce ? g : 0
            return (N - 1) * (a + c * (b + red)) + (chunks - 1) * a + pipelined((chunks - 1) * c * b, (chunks - 1) * c * red)
        case (.broadcast, .binomial), (.reduce, .binomial):
            let red = kind == .reduce ? g : 0
            return logN * (a + S * (b + red) + (kind == .reduce ? spill(S) : 0))
        case (.alltoall, .pairwise):
            return (N - 1) * (a + S / N * b)
        case (.allreduce, .oneshot):
            // One flag round trip (cheaper than a message step: no matching, no FIFO), then every rank
            // reads all n inputs, in cache at these sizes (the factors are fitted to forced runs:
            // docs/PERFORMANCE.md, "Algorithm choice").
            guard bytes <= arenaBytes else { return nil }
            return 0.5 * a + N * S * b / 4
        case (.allreduce, .staged), (.allgather, .staged), (.reducescatter, .staged), (.broadcast, .staged):
            // Steps of one staging slot; each waits for its peers a few times (flag round trips,
            // cheaper than message steps), and every byte is copied through the slots once and read
            // or reduced from them once, concurrently on all ranks. The factors below 1 are fitted to
            // forced runs over shm (2 and 4 ranks, 4 KiB–64 MiB: the staged all-gather, reduce-scatter
            // and broadcast were as fast as or faster than the FIFO algorithms at every size,
            // 0.6–0.8× their time at 64 MiB; Benchmarks/algorithms.sh with TRANSPORT=shm).
            guard stageBytes > 0 else { return nil }
            let perRank = kind == .allgather ? S / N : S
            let steps = max(1, ceil(perRank / Double(stageBytes)))
            switch kind {
            case .allreduce: return steps * 1.5 * a + S * b * (2 * N - 1) / (2 * N) + (N - 1) / N * S * g
            case .allgather: return steps * 0.5 * a + 0.7 * (N - 1) / N * S * b
            case .reducescatter: return steps * 0.5 * a + 0.8 * (N - 1) / N * S * (b + g)
            default: return steps * 0.5 * a + 0.8 * S * b
            }
        default:
            return nil
        }
    }

    /// The algorithm with the lowest predicted time (ties go to the earlier one in `kind.algorithms`).
    public func best(_ kind: CollectiveKind, bytes: Int, ranks n: Int) -> Algorithm {
        var best = kind.algorithms[0], bestTime = Double.infinity
        for a in kind.algorithms {
            if let t = predict(kind, a, bytes: bytes, ranks: n), t < bestTime { best = a; bestTime = t }
        }
        return best
    }
}

/// A parsed `SWCCL_ALGO`: entries `[collective:][lo-hi:]algorithm`, separated by `,` or `;`. An entry
/// without a collective but after one with a collective continues it (`allreduce:0-4K:recdbl;4K-inf:ring`);
/// a bare algorithm applies to every collective that has it (`ring`). Ranges are in bytes, half-open
/// [lo, hi), with K/M/G suffixes (powers of 1024) and `inf`.
public struct AlgorithmRules: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var kind: CollectiveKind?
        public var lo: Int
        public var hi: Int
        public var algorithm: Algorithm
    }
    public var rules: [Rule] = []
    public var problems: [String] = []

    public init(_ text: String) {
        var current: CollectiveKind?
        for raw in text.split(whereSeparator: { $0 == "," || $0 == ";" }) {
            let item = String(raw).trimmingSpaces.lowercased()
            if item.isEmpty { continue }
            var parts = item.split(separator: ":").map(String.init)
            var kind: CollectiveKind?
            if let k = CollectiveKind(rawValue: parts[0].replacingDashes) {
                kind = k; parts.removeFirst()
                current = k
            } else if parts.count > 1 || item.contains("-") {
                kind = current
            }
            var lo = 0, hi = Int.max
            if parts.count == 2 {
                guard let r = AlgorithmRules.range(parts[0]) else { problems.append("\"\(item)\": cannot read the size range \"\(parts[0])\""); continue }
                (lo, hi) = r
                parts.removeFirst()
            }
            guard parts.count == 1, let a = Algorithm(name: parts[0]) else {
                problems.append("\"\(item)\": unknown algorithm (known: \(Algorithm.allCases.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            if let kind, !kind.algorithms.contains(a) {
                problems.append("\"\(item)\": \(kind.rawValue) has no \(a.rawValue) algorithm (it has \(kind.algorithms.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            rules.append(Rule(kind: kind, lo: lo, hi: hi, algorithm: a))
        }
    }

    /// The forced algorithm for `kind` at `bytes`, if a rule covers it.
    public func forced(_ kind: CollectiveKind, bytes: Int) -> Algorithm? {
        for r in rules where (r.kind == nil || r.kind == kind) && bytes >= r.lo && bytes < r.hi && kind.algorithms.contains(r.algorithm) {
            return r.algorithm
        }
        return nil
    }

    package static func range(_ s: String) -> (Int, Int)? {
        let ends = s.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard ends.count == 2, let lo = size(ends[0]), let hi = size(ends[1]), lo < hi else { return nil }
        return (lo, hi)
    }

    package static func size(_ s: String) -> Int? {
        if s == "inf" || s == "max" { return Int.max }
        var digits = s, shift = 0
        if let last = s.last, let k = ["k": 10, "m": 20, "g": 30][String(last)] { shift = k; digits = String(s.dropLast()) }
        guard let v = Int(digits), v >= 0 else { return nil }
        return v << shift
    }
}

/// Per communicator: the model, the forced rules, and the choice for each call.
package struct AlgorithmSelector: Sendable {
    package let model: CostModel
    package let rules: AlgorithmRules
    package let ranks: Int
    /// The last choice per collective (size in the high bits, algorithm below): loops calling one
    /// collective with one size skip the model.
    private let last = ChoiceCache()

    package init(caps: TransportCapabilities, forced: String?, ranks: Int) {
        model = CostModel.forTransport(caps, ranks: ranks)
        rules = AlgorithmRules(forced ?? "")
        self.ranks = ranks
    }

    package func choose(_ kind: CollectiveKind, bytes: Int) -> Algorithm {
        let k = kind.index
        let key = UInt64(truncatingIfNeeded: bytes) << 8
        let hit = last.words.withLock { $0[k] }
        if hit & ~0xff == key && hit & 0xff != 0 { return Algorithm(code: Int(hit & 0xff) - 1) }
        let a = decide(kind, bytes: bytes)
        if bytes < 1 << 55 { last.words.withLock { $0[k] = key | UInt64(a.code + 1) } }
        return a
    }

    private func decide(_ kind: CollectiveKind, bytes: Int) -> Algorithm {
        if let f = rules.forced(kind, bytes: bytes), model.predict(kind, f, bytes: bytes, ranks: ranks) != nil { return f }
        return model.best(kind, bytes: bytes, ranks: ranks)
    }

    /// The table rank 0 prints at INFO: predicted time of every algorithm at sizes 8 B … 1 GiB.
    package func table(_ kind: CollectiveKind) -> String {
        let algos = kind.algorithms
        var out = "\(kind.rawValue), \(ranks) ranks, \(model):\n"
        out += pad("size", 10) + algos.map { pad($0.rawValue + " µs", 17) }.joined() + "  chosen\n"
        var bytes = 8
        while bytes <= 1 << 30 {
            out += pad(formatBytes(bytes), 10)
            for a in algos { out += pad(model.predict(kind, a, bytes: bytes, ranks: ranks).map { fixed($0 * 1e6, 1) } ?? "-", 17) }
            out += "  \(choose(kind, bytes: bytes).rawValue)\(rules.forced(kind, bytes: bytes) != nil ? " (forced)" : "")\n"
            bytes <<= 3
        }
        return out
    }
}

package final class ChoiceCache: Sendable {
    package let words = Mutex<[UInt64]>(Array(repeating: 0, count: CollectiveKind.allCases.count))
}

