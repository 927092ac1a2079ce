import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The collectives that have a choice of algorithm.
public enum CollectiveKind: String, CaseIterable, Sendable {
    case allreduce, allgather, reducescatter, broadcast, reduce, alltoall

    /// Accepts the library's and swccl-perf's spellings (`allreduce`, `all_reduce`).
    public init?(name: String) { self.init(rawValue: name.lowercased().replacingDashes) }

    /// nccl-tests' bus bandwidth factor: busbw = algbw × factor.
    package func busFactor(_ n: Int) -> Double {
        let N = Double(n)
        switch self {
        case .allreduce: return n > 1 ? 2 * (N - 1) / N : 0
        case .allgather, .reducescatter, .alltoall: return (N - 1) / N
        case .broadcast, .reduce: return 1
        }
    }

    /// Its position among the cases (a switch: no array per call on the collective path).
    @inlinable package var index: Int {
        switch self {
        case .allreduce: 0
        case .allgather: 1
        case .reducescatter: 2
        case .broadcast: 3
        case .reduce: 4
        case .alltoall: 5
        }
    }

    /// The algorithms implemented for this collective, in the order tables show them (the order of
    /// `Algorithm.specs`; the cost model breaks ties towards the earlier one).
    public var algorithms: [Algorithm] { AlgorithmSpec.algorithmsByKind[index] }

    /// Runs this collective's part on this rank with `algorithm` (its entry in `Algorithm.specs`; an
    /// algorithm that does not implement it runs the collective's first one).
    @inline(__always)
    package func run(_ algorithm: Algorithm, _ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        do { try AlgorithmSpec.runners[index &* Algorithm.count &+ algorithm.code](ctx, o) } catch let e as CCLError { throw e } catch {
            throw CCLError(.internalError, "\(error)")  // never: every algorithm throws CCLError
        }
    }
}

/// Algorithm names, as `SWCCL_ALGO`, `swccl-perf -a` and the INFO table spell them. What each one
/// is — its aliases, the collectives it implements, their costs and implementations — is its entry
/// in `Algorithm.specs`.
public enum Algorithm: String, CaseIterable, Sendable {
    case ring, tree, recdbl, rabenseifner, halving, chain, binomial, pairwise, oneshot, staged

    /// Parses a name or an alias (`bruck`, `rhd`, `rechalving`, `pipeline`, …: the table's).
    public init?(name: String) {
        guard let s = Algorithm.specs.first(where: { $0.algorithm.rawValue == name || $0.aliases.contains(name) }) else { return nil }
        self = s.algorithm
    }

    /// The algorithm's wire code: it goes into every collective's argument fingerprint, which travels
    /// in the tags, so ranks of different builds must agree on it. Explicit and stable — independent
    /// of the order of the cases; a new algorithm takes the next unused number, and no number is ever
    /// reused. (A switch: `allCases.firstIndex` built an array on every collective call.)
    @inlinable package var code: Int {
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

    /// Number of codes (the largest + 1).
    package static let count = 10

    /// Its entry in the table.
    package var spec: AlgorithmSpec { Algorithm.specs[code] }
}

/// The buffers and arguments of one collective call as an algorithm's `run` receives them, checked
/// by the communicator: the count is positive and the buffers this rank's part uses are there.
package struct Operands {
    package var send: UnsafeRawPointer?
    package var recv: UnsafeMutableRawPointer?
    /// Elements of one rank's block: the whole buffer for allreduce, broadcast and reduce; the send
    /// count for all-gather and gather; the receive count for reduce-scatter and scatter; one block of
    /// all-to-all.
    package var count: Int
    package var type: DataType
    package var op: ReduceOp
    package var root: Int

    @inlinable
    package init(send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer?, count: Int, type: DataType, op: ReduceOp, root: Int) {
        self.send = send; self.recv = recv; self.count = count; self.type = type; self.op = op; self.root = root
    }

    /// Bytes of one block.
    @inline(__always) package var bytes: Int { count &* type.size }
    /// `send`, where this rank's part reads one.
    @inline(__always) package var input: UnsafeRawPointer { send.unsafelyUnwrapped }
    /// `recv`, where this rank's part writes one.
    @inline(__always) package var output: UnsafeMutableRawPointer { recv.unsafelyUnwrapped }
}

/// One algorithm: its names, and for each collective it implements the cost model's formula and the
/// implementation. `Algorithm.specs` is the one list: the selection (`CostModel.predict`, `best`),
/// `SWCCL_ALGO` parsing, `CollectiveKind.algorithms`, the dispatch of every collective and
/// swccl-perf's `-a` and algo column all read it (docs/ARCHITECTURE.md, "Extending").
package struct AlgorithmSpec: Sendable {
    /// Predicted seconds for the collective (`x.kind`) of `x.bytes` on `x.ranks` ranks (at least 2),
    /// or nil where the transport cannot run it.
    package typealias Cost = @Sendable (_ x: CostInputs) -> Double?
    /// This rank's part of the collective.
    /// (Untyped `throws` here: a typed-throws function value is called through a reabstraction thunk.)
    package typealias Run = @Sendable (CollectiveContext, Operands) throws -> Void

    package struct Use: Sendable {
        package let kind: CollectiveKind
        package let cost: Cost
        package let run: Run
        package init(_ kind: CollectiveKind, cost: @escaping Cost, run: @escaping Run) { self.kind = kind; self.cost = cost; self.run = run }
    }

    package let algorithm: Algorithm
    /// Other names `SWCCL_ALGO` and `swccl-perf -a` accept.
    package let aliases: [String]
    /// The collectives it implements.
    package let uses: [Use]

    package init(_ algorithm: Algorithm, aliases: [String] = [], _ uses: [Use]) {
        self.algorithm = algorithm; self.aliases = aliases; self.uses = uses
    }

    package func use(_ kind: CollectiveKind) -> Use? { uses.first { $0.kind == kind } }

    /// Per collective, the algorithms that implement it, in table order.
    package static let algorithmsByKind: [[Algorithm]] = CollectiveKind.allCases.map { k in
        Algorithm.specs.filter { $0.use(k) != nil }.map(\.algorithm)
    }

    /// `run` of every (collective, algorithm code); the collective's first algorithm where the
    /// algorithm does not implement it (never chosen: the selector picks among the collective's own).
    package static let runners: [Run] = CollectiveKind.allCases.flatMap { k in
        (0..<Algorithm.count).map { code in (Algorithm(code: code).spec.use(k) ?? Algorithm.specs.first { $0.use(k) != nil }!.use(k)!).run }
    }
}

extension Algorithm {
    /// Every algorithm, in `code` order. Formulas: Hockney's α + b·β per message step of b bytes, b·γ
    /// per reduced byte, b·μ for a reduced block that does not stay in cache (`CostInputs`); the
    /// fitted factors are from forced runs (docs/PERFORMANCE.md, "Algorithm choice").
    package static let specs: [AlgorithmSpec] = [
        AlgorithmSpec(.ring, [
            // 2(n−1) steps of S/n each; every chunk round of a lane costs its own α (4 lanes).
            .init(.allreduce, cost: { x in
                let seg = x.S / x.N
                let chunks = max(1, ceil(seg / Double(x.model.chunkBytes)))
                return 2 * (x.N - 1) * x.a * max(1, chunks / 4) + x.pipelined(2 * (x.N - 1) * seg * x.b, (x.N - 1) * seg * x.g)
            }, run: { (ctx, o) in try AllReduce.ring(ctx, o) }),
            .init(.allgather, cost: { x in (x.N - 1) * (x.a + x.S / x.N * x.b) }, run: { (ctx, o) in try AllGather.ring(ctx, o) }),
            .init(.reducescatter, cost: { x in (x.N - 1) * (x.a + x.S / x.N * (x.b + x.g)) }, run: { (ctx, o) in try ReduceScatter.ring(ctx, o) }),
        ]),
        AlgorithmSpec(.tree, [
            // Two trees, each carrying S/2 in chunks; a chunk climbs and descends the depth, and the
            // busiest rank (interior in one tree, leaf in the other) moves 2S each way.
            .init(.allreduce, cost: { x in
                let depth = Double(DoubleTree.depth(x.n))
                let half = x.S / 2
                let c = min(max(half, 1), Double(x.model.treeChunkBytes))
                let chunks = max(1, ceil(half / c))
                return 2 * depth * (x.a + c * (x.b + x.g)) + chunks * x.a + x.pipelined(2 * x.S * x.b, x.S * x.g)
            }, run: { (ctx, o) in try AllReduce.tree(ctx, o) }),
        ]),
        AlgorithmSpec(.recdbl, aliases: ["bruck"], [
            .init(.allreduce, cost: { x in x.logP * (x.a + x.S * x.b + x.S * x.g + x.spill(x.S)) + x.fold(true) },
                  run: { (ctx, o) in try AllReduce.recursiveDoubling(ctx, o) }),
            // ⌈log₂ n⌉ steps with doubling blocks; Bruck's variant also rotates the result once.
            .init(.allgather, cost: { x in x.logN * x.a + (x.N - 1) / x.N * x.S * x.b + (x.p == x.n ? 0 : x.S * x.b / 4) },
                  run: { (ctx, o) in try AllGather.recursiveDoubling(ctx, o) }),
        ]),
        AlgorithmSpec(.rabenseifner, aliases: ["rhd"], [
            .init(.allreduce, cost: { x in
                2 * x.logP * x.a + 2 * (x.P - 1) / x.P * x.S * x.b + (x.P - 1) / x.P * x.S * x.g + 2 * x.halvingSpill + x.fold(true)
            }, run: { (ctx, o) in try AllReduce.rabenseifner(ctx, o) }),
        ]),
        AlgorithmSpec(.halving, aliases: ["rechalving", "rechalv"], [
            .init(.reducescatter, cost: { x in x.logP * x.a + (x.P - 1) / x.P * x.S * (x.b + x.g) + x.halvingSpill + x.fold(true) },
                  run: { (ctx, o) in try ReduceScatter.halving(ctx, o) }),
        ]),
        AlgorithmSpec(.chain, aliases: ["pipeline"], [
            .init(.broadcast, cost: { x in x.chain(reduces: false) }, run: { (ctx, o) in try Broadcast.chain(ctx, o) }),
            .init(.reduce, cost: { x in x.chain(reduces: true) }, run: { (ctx, o) in try Reduce.chain(ctx, o) }),
        ]),
        AlgorithmSpec(.binomial, [
            .init(.broadcast, cost: { x in x.logN * (x.a + x.S * x.b) }, run: { (ctx, o) in try Broadcast.binomial(ctx, o) }),
            .init(.reduce, cost: { x in x.logN * (x.a + x.S * (x.b + x.g) + x.spill(x.S)) }, run: { (ctx, o) in try Reduce.binomial(ctx, o) }),
        ]),
        AlgorithmSpec(.pairwise, [
            .init(.alltoall, cost: { x in (x.N - 1) * (x.a + x.S / x.N * x.b) }, run: { (ctx, o) in try AllToAll.pairwise(ctx, o) }),
        ]),
        AlgorithmSpec(.oneshot, [
            // One flag round trip (cheaper than a message step: no matching, no FIFO), then every rank
            // reads all n inputs, in cache at these sizes. Only up to the size the window's areas hold.
            .init(.allreduce, cost: { x in x.bytes <= x.model.arenaBytes ? 0.5 * x.a + x.N * x.S * x.b / 4 : nil },
                  run: { (ctx, o) in try AllReduce.oneShot(ctx, o) }),
        ]),
        // Steps of one staging slot; each waits for its peers a few times (flag round trips, cheaper
        // than message steps), and every byte is copied through the slots once and read or reduced
        // from them once, concurrently on all ranks. The factors below 1 are fitted to forced runs over
        // shm (2 and 4 ranks, 4 KiB–64 MiB: the staged all-gather, reduce-scatter and broadcast were as
        // fast as or faster than the FIFO algorithms at every size, 0.6–0.8× their time at 64 MiB;
        // Benchmarks/algorithms.sh with TRANSPORT=shm). Only with a symmetric window.
        AlgorithmSpec(.staged, aliases: ["shared", "direct"], [
            .init(.allreduce, cost: { x in
                x.stagedSteps.map { $0 * 1.5 * x.a + x.S * x.b * (2 * x.N - 1) / (2 * x.N) + (x.N - 1) / x.N * x.S * x.g }
            }, run: { (ctx, o) in try AllReduce.staged(ctx, o) }),
            .init(.allgather, cost: { x in x.stagedSteps.map { $0 * 0.5 * x.a + 0.7 * (x.N - 1) / x.N * x.S * x.b } },
                  run: { (ctx, o) in try AllGather.staged(ctx, o) }),
            .init(.reducescatter, cost: { x in x.stagedSteps.map { $0 * 0.5 * x.a + 0.8 * (x.N - 1) / x.N * x.S * (x.b + x.g) } },
                  run: { (ctx, o) in try ReduceScatter.staged(ctx, o) }),
            .init(.broadcast, cost: { x in x.stagedSteps.map { $0 * 0.5 * x.a + 0.8 * x.S * x.b } }, run: { (ctx, o) in try Broadcast.staged(ctx, o) }),
        ]),
    ]
}
