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
    /// Pipeline chunk of the chains (broadcast, reduce).
    package static var chainChunkBytes: Int { max(4096, chunkBytes.value) }
    package static let alphaMicros = Knob.double("SWCCL_MODEL_ALPHA_US", default: 0,
        "cost model: latency of one message step in microseconds (0: the transport's measured value)")
    package static let bandwidthGBs = Knob.double("SWCCL_MODEL_BW_GBS", default: 0,
        "cost model: bandwidth of one link in GB/s (0: the transport's measured value)")
    package static let reduceGBs = Knob.double("SWCCL_MODEL_REDUCE_GBS", default: 0,
        "cost model: reduction kernel throughput in GB/s of output (0: the built-in measured value)")
}

/// A parsed `SWCCL_ALGO`: entries `[collective:][lo-hi:]algorithm`, separated by `,` or `;`. An entry
/// without a collective but after one with a collective continues it (`allreduce:0-4K:recdbl;4K-inf:ring`);
/// a bare algorithm applies to every collective that has it (`ring`). Ranges are in bytes, half-open
/// [lo, hi), with K/M/G suffixes (powers of 1024) and `inf`.
package struct AlgorithmRules: Sendable, Equatable {
    package struct Rule: Sendable, Equatable {
        package var kind: CollectiveKind?
        package var lo: Int
        package var hi: Int
        package var algorithm: Algorithm
    }
    package var rules: [Rule] = []
    package var problems: [String] = []

    package init(_ text: String) {
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
    package func forced(_ kind: CollectiveKind, bytes: Int) -> Algorithm? {
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

