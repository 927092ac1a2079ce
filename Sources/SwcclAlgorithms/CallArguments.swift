import Synchronization
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The arguments of one collective call that every rank must pass alike (docs/RELIABILITY.md,
/// "Argument agreement"), and their 32-bit fingerprint. The fingerprint travels in every message's
/// tag and every shared-memory signature word of the operation, so ranks that disagree never match
/// each other's data; arguments a collective does not have are absent (nil), not zero.
package struct CallArguments: Sendable, Equatable {
    /// The collectives. The raw value is the collective's wire code: it goes into the fingerprint,
    /// so it is explicit and stable (a new collective takes the next unused number).
    package enum Collective: Int, CaseIterable, Sendable {
        case allreduce = 1
        case barrier = 2
        case allgather = 3
        case reducescatter = 4
        case broadcast = 5
        case reduce = 6
        case alltoall = 7
        case gather = 8
        case scatter = 9

        /// As operations are labelled in errors (`allreduce #17 on comm 'dp'`).
        @inlinable package var name: String {
            switch self {
            case .allreduce: "allreduce"
            case .barrier: "barrier"
            case .allgather: "allgather"
            case .reducescatter: "reducescatter"
            case .broadcast: "broadcast"
            case .reduce: "reduce"
            case .alltoall: "alltoall"
            case .gather: "gather"
            case .scatter: "scatter"
            }
        }

        /// The kind whose algorithm the selector chooses (nil: one algorithm only).
        @inlinable package var kind: CollectiveKind? {
            switch self {
            case .allreduce: .allreduce
            case .allgather: .allgather
            case .reducescatter: .reducescatter
            case .broadcast: .broadcast
            case .reduce: .reduce
            case .barrier, .alltoall, .gather, .scatter: nil
            }
        }
        package var hasOp: Bool { self == .allreduce || self == .reducescatter || self == .reduce }
        package var hasRoot: Bool { self == .broadcast || self == .reduce || self == .gather || self == .scatter }
        /// Bytes the selector sees for `count` elements of `size` bytes on `ranks` ranks.
        @inlinable package func selectorBytes(_ count: Int, _ size: Int, ranks: Int) -> Int {
            self == .allgather || self == .reducescatter ? count &* ranks &* size : count &* size
        }

        /// Runs this rank's part with `algorithm` (the selector's choice; nil for a collective without
        /// one): the algorithm's entry in `Algorithm.specs`.
        package func run(_ algorithm: Algorithm?, _ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
            if let kind { return try kind.run(algorithm ?? kind.algorithms[0], ctx, o) }
            switch self {
            case .alltoall: try CollectiveKind.alltoall.run(.pairwise, ctx, o)
            case .gather: try Gather.run(ctx, o)
            case .scatter: try Scatter.run(ctx, o)
            default: try Barrier.dissemination(ctx)
            }
        }
    }

    package var collective: Collective
    package var count = 0
    package var type: DataType?
    package var op: ReduceOp?
    package var root: Int?
    package var preMulSum = false
    package var algorithm: Algorithm?

    @inline(__always)
    package init(collective: Collective, count: Int = 0, type: DataType? = nil, op: ReduceOp? = nil, root: Int? = nil,
                 preMulSum: Bool = false, algorithm: Algorithm? = nil) {
        self.collective = collective; self.count = count; self.type = type; self.op = op; self.root = root
        self.preMulSum = preMulSum; self.algorithm = algorithm
    }

    /// A 32-bit hash of the values (+1 each, so an absent argument differs from the first value).
    /// Computed on every call: the small arguments are packed into one word (collective 4 bits, type
    /// 5, op 4, pre-multiplied 1, algorithm 5, root + 1 the rest), so the hash mixes two words.
    @inline(__always) package var fingerprint: UInt32 {
        var packed = UInt64(truncatingIfNeeded: collective.rawValue)
        packed |= UInt64(type.map { UInt64($0.rawValue) + 1 } ?? 0) << 4
        packed |= UInt64(op.map { UInt64($0.rawValue) + 1 } ?? 0) << 9
        packed |= (preMulSum ? 1 : 0) << 13
        packed |= UInt64(algorithm.map { $0.code + 1 } ?? 0) << 14
        packed |= UInt64(truncatingIfNeeded: root.map { $0 + 1 } ?? 0) << 19
        return Tag.fingerprint(Int(bitPattern: UInt(packed)), count)
    }

    /// "broadcast of 1000 × float32, root 0, algorithm binomial"
    package var summary: String {
        var s = collective.name
        if let type { s += " of \(count) × \(type)" } else if collective != .barrier { s += " of \(count) elements" }
        if let op { s += ", op \(preMulSum ? "pre-multiplied sum" : op.description)" }
        if let root { s += ", root \(root)" }
        if let algorithm { s += ", algorithm \(algorithm.rawValue)" }
        return s
    }

    /// Which argument a peer whose fingerprint is `theirs` passed differently: searched among the
    /// calls that differ from this one in one argument (the algorithm re-chosen as the peer would for
    /// its size). Nil when none matches (the count, or several arguments, differ).
    package func explain(_ theirs: UInt32, ranks: Int, choose: (CollectiveKind, Int) -> Algorithm) -> String? {
        func rechosen(_ a: CallArguments) -> CallArguments {
            var a = a
            if let kind = a.collective.kind, let t = a.type { a.algorithm = choose(kind, a.collective.selectorBytes(a.count, t.size, ranks: ranks)) }
            return a
        }
        if collective.hasRoot, let root {
            for r in 0..<min(ranks, 1 << 16) where r != root {
                var a = self; a.root = r
                if a.fingerprint == theirs { return "root \(r) there, \(root) here" }
                let b = rechosen(a)
                if b.fingerprint == theirs { return "root \(r) there, \(root) here" }
            }
        }
        if let type {
            for t in DataType.allCases where t != type {
                var a = self; a.type = t
                if a.fingerprint == theirs || rechosen(a).fingerprint == theirs { return "type \(t) there, \(type) here" }
            }
        }
        if let op {
            for o in ReduceOp.allCases {
                for pm in [false, true] where (o != op || pm != preMulSum) && !(pm && o != .sum) {
                    var a = self; a.op = o; a.preMulSum = pm
                    if a.fingerprint == theirs {
                        let what = { (o: ReduceOp, pm: Bool) in pm ? "a pre-multiplied sum" : "op \(o)" }
                        return "\(what(o, pm)) there, \(what(op, preMulSum)) here"
                    }
                }
            }
        }
        if let kind = collective.kind, let algorithm {
            for g in kind.algorithms where g != algorithm {
                var a = self; a.algorithm = g
                if a.fingerprint == theirs {
                    return "algorithm \(g.rawValue) there, \(algorithm.rawValue) here (SWCCL_ALGO or CommConfig.algorithm differ between the ranks)"
                }
            }
        }
        if count != 0 {
            var a = self; a.count = 0
            if a.fingerprint == theirs || rechosen(a).fingerprint == theirs { return "count 0 there, \(count) here" }
        } else {
            // The peer's count is unknown; any other collective of count 0 is found below.
        }
        for c in Collective.allCases where c != collective {
            var a = CallArguments(collective: c, count: c == .barrier ? 0 : count)
            if c != .barrier { a.type = type ?? .float32 }
            if c.hasOp { a.op = op ?? .sum; a.preMulSum = preMulSum && op != nil }
            let roots = c.hasRoot ? (root.map { [$0] } ?? []) + Array(0..<min(ranks, 1 << 12)) : [nil]
            for r in roots {
                a.root = r
                if rechosen(a).fingerprint == theirs || a.fingerprint == theirs {
                    return "\(c.name)\(r.map { " (root \($0))" } ?? "") there, \(collective.name) here"
                }
                var z = a; z.count = 0
                if c != .barrier, rechosen(z).fingerprint == theirs { return "\(c.name) of count 0 there, \(collective.name) here" }
            }
        }
        return nil
    }
}

/// The communicator-wide part of argument checks: explains a mismatch with the selector every rank
/// uses, and remembers the disagreement an operation found, so that the communicator can tell every
/// peer about it (`CollectiveContext.notifyDisagreement`).
package final class ArgumentCheck: Sendable {
    package let ranks: Int
    package let selector: AlgorithmSelector
    /// 0, or bit 63 | disagreeing rank << 32 | its fingerprint.
    private let found = Atomic<UInt64>(0)
    package init(ranks: Int, selector: AlgorithmSelector) { self.ranks = ranks; self.selector = selector }

    package func note(peer: Int, theirs: UInt32) {
        found.store(1 << 63 | UInt64(peer & 0xffff) << 32 | UInt64(theirs), ordering: .relaxed)
    }

    /// The disagreement noted since the last call, if any.
    package func take() -> (peer: Int, theirs: UInt32)? {
        let w = found.exchange(0, ordering: .relaxed)
        return w == 0 ? nil : (Int((w >> 32) & 0xffff), UInt32(truncatingIfNeeded: w))
    }
}
