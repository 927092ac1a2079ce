import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The latency/bandwidth cost model (Hockney: a step that moves `b` bytes costs α + b·β, a reduction
/// of `b` bytes costs b·γ) and the rule that picks an algorithm from it. Every rank evaluates the same
/// model on the same inputs, so every rank picks the same algorithm; forced choices come first.
package struct CostModel: Sendable, CustomStringConvertible {
    /// Seconds per message step (latency plus per-message overhead).
    package var alpha: Double
    /// Seconds per byte on one link.
    package var beta: Double
    /// Seconds per byte of reduction output.
    package var gamma: Double
    /// Pipeline chunk of the ring and chain algorithms, bytes.
    package var chunkBytes: Int
    /// Pipeline chunk of the tree algorithm, bytes.
    package var treeChunkBytes: Int
    /// Blocks up to this size stay in cache between a step's transfer and its reduction.
    package var cacheBytes: Int
    /// Seconds per byte of a reduction whose block did not stay in cache (read back from memory).
    /// Pipelined algorithms (ring, tree, chain) reduce chunk by chunk and never pay it.
    package var memoryBeta: Double
    /// Input area each rank can read from every other (shared memory), 0 if none: bounds `oneshot`.
    package var arenaBytes = 0
    /// Bytes of one step of the staged pipelines (shared memory), 0 if the transport has none.
    package var stageBytes = 0
    /// Whether pipelined algorithms overlap transfers with reductions (a NIC or DMA engine moves the
    /// data) rather than share the cores with them (TCP, copy-based shared memory).
    package var overlapsReduction: Bool

    package init(alpha: Double, beta: Double, gamma: Double, chunkBytes: Int = 512 << 10, treeChunkBytes: Int = 128 << 10,
                cacheBytes: Int = 1 << 20, memoryBeta: Double = 0.5e-9, overlapsReduction: Bool = false) {
        self.alpha = alpha; self.beta = beta; self.gamma = gamma
        self.chunkBytes = chunkBytes; self.treeChunkBytes = treeChunkBytes
        self.cacheBytes = cacheBytes; self.memoryBeta = memoryBeta; self.overlapsReduction = overlapsReduction
    }

    /// The reduction throughput measured for float sum with the library's kernels on the reference
    /// machine (docs/PERFORMANCE.md), used when nothing better is known.
    package static let defaultGamma = 1.0 / 4.0e9

    /// The model for a transport: its advertised α and β, overridden by the `SWCCL_MODEL_*` knobs;
    /// with a symmetric window, the one-shot and staged algorithms' sizes from their own layout.
    package static func forTransport(_ caps: TransportCapabilities, ranks: Int) -> CostModel {
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
    package static func forBackend(_ backend: TransportBackend) -> CostModel {
        var m = CostModel(alpha: backend.alphaNanos * 1e-9, beta: backend.betaNanosPerByte * 1e-9,
                          gamma: defaultGamma, chunkBytes: Knobs.chunkBytes.value, treeChunkBytes: Knobs.treeChunkBytes.value)
        if backend.providesWindow {
            m.arenaBytes = SharedArenaLayout.areaBytes
            m.stageBytes = SharedArenaLayout.stageBytes(ranks: 1)
        }
        return m
    }

    package var description: String {
        "α \(fixed(alpha * 1e6, 1)) µs, β \(fixed(1 / beta / 1e9, 2)) GB/s, γ \(fixed(1 / gamma / 1e9, 2)) GB/s, "
            + "blocks above \(formatBytes(cacheBytes)) reduced at \(fixed(1 / memoryBeta / 1e9, 2)) GB/s"
            + (overlapsReduction ? ", transfers overlap reductions" : "")
    }

    /// Predicted seconds for `kind` with `algorithm` moving `bytes` (the collective's size as
    /// swccl-perf counts it) over `n` ranks; nil if the algorithm does not implement `kind` or the
    /// transport cannot run it. The formula is the algorithm's in `Algorithm.specs`.
    package func predict(_ kind: CollectiveKind, _ algorithm: Algorithm, bytes: Int, ranks n: Int) -> Double? {
        guard let use = algorithm.spec.use(kind) else { return nil }
        if n <= 1 { return 0 }
        return use.cost(CostInputs(model: self, kind: kind, bytes: bytes, ranks: n))
    }

    /// The algorithm with the lowest predicted time (ties go to the earlier one in `kind.algorithms`).
    package func best(_ kind: CollectiveKind, bytes: Int, ranks n: Int) -> Algorithm {
        var best = kind.algorithms[0], bestTime = Double.infinity
        for a in kind.algorithms {
            if let t = predict(kind, a, bytes: bytes, ranks: n), t < bestTime { best = a; bestTime = t }
        }
        return best
    }
}


/// What the cost formulas of `Algorithm.specs` read: the model's figures (`a` α, `b` β, `g` γ), the
/// collective's size `S` in bytes and rank count `N`, the largest power of two `p` ≤ n (`P`, `logP`),
/// ⌈log₂ n⌉, and the terms several formulas share.
package struct CostInputs {
    package let model: CostModel
    package let kind: CollectiveKind
    package let bytes: Int
    package let n: Int
    /// The largest power of two <= n.
    package let p: Int
    package let S: Double, N: Double, P: Double, logP: Double, logN: Double
    package let a: Double, b: Double, g: Double

    init(model: CostModel, kind: CollectiveKind, bytes: Int, ranks n: Int) {
        self.model = model; self.kind = kind; self.bytes = bytes; self.n = n
        S = Double(bytes); N = Double(n)
        p = 1 << (Int.bitWidth - 1 - n.leadingZeroBitCount)
        P = Double(p); logP = Double(p.trailingZeroBitCount)
        logN = ceil(log2(N))
        a = model.alpha; b = model.beta; g = model.gamma
    }

    /// Whether n is folded onto p (not a power of two).
    package var folded: Bool { p != n }

    /// Transfers and reductions of a pipeline: serial when the transport's copies use the same
    /// cores as the reductions (TCP), concurrent when a NIC or DMA engine moves the data.
    package func pipelined(_ transfer: Double, _ reduce: Double) -> Double { model.overlapsReduction ? max(transfer, reduce) : transfer + reduce }

    /// A reduction of a block too large for the cache reads it back from memory.
    package func spill(_ block: Double) -> Double { block > Double(model.cacheBytes) ? block * model.memoryBeta : 0 }

    /// Recursive halving then doubling: blocks S/2, S/4, … S/p, reduced on the way down.
    package var halvingSpill: Double {
        var total = 0.0
        var blk = S / 2
        for _ in 0..<Int(logP) { total += spill(blk); blk /= 2 }
        return total
    }

    /// Fold and unfold of the ranks beyond the power of two: the whole buffer there and back.
    package func fold(_ reduces: Bool) -> Double { folded ? 2 * (a + S * b) + (reduces ? S * g + spill(S) : 0) : 0 }

    /// A chain pipelined in chunks (broadcast, reduce).
    package func chain(reduces: Bool) -> Double {
        let c = min(max(S, 1), Double(model.chunkBytes))
        let chunks = max(1, ceil(S / c))
        let red = reduces ? g : 0
        return (N - 1) * (a + c * (b + red)) + (chunks - 1) * a + pipelined((chunks - 1) * c * b, (chunks - 1) * c * red)
    }

    /// Steps of one staging slot for the staged algorithms (each rank stages its block for all-gather,
    /// the whole buffer otherwise); nil when the transport has no symmetric window.
    package var stagedSteps: Double? {
        guard model.stageBytes > 0 else { return nil }
        let perRank = kind == .allgather ? S / N : S
        return max(1, ceil(perRank / Double(model.stageBytes)))
    }
}
