import XCTest
import SwiftCCLTesting

/// The pieces of algorithm selection that need no ranks: tree construction, SWCCL_ALGO parsing and
/// the cost model's shape.
final class SelectionTests: XCTestCase {
    /// Both trees of the double binary tree are trees over all ranks (one root, consistent parent and
    /// child links, at most two children, every rank reached), as deep as `depth` says; with an even
    /// rank count every rank is a leaf in at least one of them.
    func testDoubleTreeShape() {
        for n in 1...300 {
            let nodes = (0..<n).map { DoubleTree.trees(rank: $0, size: n) }
            for t in 0..<2 {
                let tree = nodes.map { t == 0 ? $0.0 : $0.1 }
                let roots = (0..<n).filter { tree[$0].parent < 0 }
                XCTAssertEqual(roots.count, 1, "n \(n) tree \(t): roots \(roots)")
                var deepest = 0
                for r in 0..<n {
                    for k in tree[r].kids {
                        XCTAssertTrue(k >= 0 && k < n && k != r, "n \(n) tree \(t): rank \(r) has child \(k)")
                        XCTAssertEqual(tree[k].parent, r, "n \(n) tree \(t): child \(k) of \(r) names parent \(tree[k].parent)")
                    }
                    if tree[r].parent >= 0 { XCTAssertTrue(tree[tree[r].parent].kids.contains(r), "n \(n) tree \(t): \(r) missing from its parent") }
                    var d = 0, x = r
                    while tree[x].parent >= 0 && d <= n { x = tree[x].parent; d += 1 }
                    XCTAssertEqual(x, roots.first, "n \(n) tree \(t): rank \(r) does not reach the root")
                    deepest = max(deepest, d)
                }
                XCTAssertEqual(deepest, DoubleTree.depth(n), "n \(n) tree \(t) depth")
            }
            if n % 2 == 0 && n > 2 {
                for r in 0..<n { XCTAssertTrue(nodes[r].0.kids.isEmpty || nodes[r].1.kids.isEmpty, "n \(n): rank \(r) interior in both trees") }
            }
        }
    }

    func testAlgorithmRules() {
        let ranged = AlgorithmRules("allreduce:0-4K:recdbl;4K-inf:ring")
        XCTAssertEqual(ranged.problems, [])
        XCTAssertEqual(ranged.forced(.allreduce, bytes: 0), .recdbl)
        XCTAssertEqual(ranged.forced(.allreduce, bytes: 4095), .recdbl)
        XCTAssertEqual(ranged.forced(.allreduce, bytes: 4096), .ring)
        XCTAssertEqual(ranged.forced(.allreduce, bytes: 1 << 40), .ring)
        XCTAssertNil(ranged.forced(.allgather, bytes: 100), "rules of one collective leave the others to the model")

        let bare = AlgorithmRules("ring")
        for k in [CollectiveKind.allreduce, .allgather, .reducescatter] { XCTAssertEqual(bare.forced(k, bytes: 8), .ring) }
        XCTAssertNil(bare.forced(.broadcast, bytes: 8), "broadcast has no ring")

        let several = AlgorithmRules("allreduce:tree, broadcast:binomial; reduce_scatter:rechalving,all-gather:bruck")
        XCTAssertEqual(several.problems, [])
        XCTAssertEqual(several.forced(.allreduce, bytes: 1), .tree)
        XCTAssertEqual(several.forced(.broadcast, bytes: 1), .binomial)
        XCTAssertEqual(several.forced(.reducescatter, bytes: 1), .halving)
        XCTAssertEqual(several.forced(.allgather, bytes: 1), .recdbl)

        let bad = AlgorithmRules("allgather:tree,allreduce:1K-0:ring,allreduce:warp,allreduce:x-2:ring")
        XCTAssertEqual(bad.rules, [])
        XCTAssertEqual(bad.problems.count, 4, "\(bad.problems)")
        XCTAssertTrue(bad.problems[0].contains("allgather has no tree"), bad.problems[0])
    }

    /// Predictions grow with size; latency-bound algorithms win small messages and bandwidth-optimal
    /// ones large messages; algorithms a collective lacks are not predicted.
    func testCostModelShape() {
        guard let m = CostModel.named("tcp") else { return XCTFail("no tcp model") }
        for k in CollectiveKind.allCases {
            for a in k.algorithms {
                var last = -1.0
                var b = 8
                while b <= 1 << 30 {
                    guard let t = m.predict(k, a, bytes: b, ranks: 16) else {
                        XCTAssertTrue(a == .oneshot || a == .staged, "only the shared-memory algorithms (\(a)) need a shared arena, TCP has none")
                        b <<= 3
                        continue
                    }
                    XCTAssertGreaterThanOrEqual(t, last, "\(k) \(a) at \(b) B")
                    last = t
                    b <<= 3
                }
            }
        }
        XCTAssertNil(m.predict(.allgather, .tree, bytes: 8, ranks: 4))
        for k in CollectiveKind.allCases { XCTAssertNil(m.predict(k, .staged, bytes: 1 << 20, ranks: 4), "\(k) staged over TCP") }
        // Shared memory: one-shot for small allreduces, the staged pipeline for large collectives.
        guard let s = CostModel.named("shm") else { return XCTFail("no shm model") }
        for n in [2, 4, 8] {
            XCTAssertEqual(s.best(.allreduce, bytes: 8, ranks: n), .oneshot, "\(n) ranks, 8 B over shm")
            XCTAssertNil(s.predict(.allreduce, .oneshot, bytes: 1 << 20, ranks: n), "one-shot above its area")
            for k in [CollectiveKind.allreduce, .allgather, .reducescatter, .broadcast] {
                XCTAssertEqual(s.best(k, bytes: 64 << 20, ranks: n), .staged, "\(n) ranks, 64 MiB \(k) over shm")
            }
        }
        for n in [4, 8, 64, 1024] {
            XCTAssertEqual(m.best(.allreduce, bytes: 8, ranks: n), .recdbl, "\(n) ranks, 8 B")
            XCTAssertNotEqual(m.best(.allreduce, bytes: 1 << 30, ranks: n), .recdbl, "\(n) ranks, 1 GiB")
            XCTAssertEqual(m.best(.broadcast, bytes: 8, ranks: n), .binomial, "\(n) ranks, 8 B broadcast")
            XCTAssertEqual(m.best(.broadcast, bytes: 1 << 30, ranks: n), .chain, "\(n) ranks, 1 GiB broadcast")
        }
    }

    /// The table of algorithms: in wire-code order, the codes stable (they go into fingerprints), each
    /// collective's algorithms in the order tables show them, every name and alias parsed back.
    func testAlgorithmTable() {
        let codes: [Algorithm: Int] = [.ring: 0, .tree: 1, .recdbl: 2, .rabenseifner: 3, .halving: 4, .chain: 5, .binomial: 6,
                                       .pairwise: 7, .oneshot: 8, .staged: 9]
        XCTAssertEqual(Algorithm.specs.count, Algorithm.count)
        for (i, spec) in Algorithm.specs.enumerated() {
            XCTAssertEqual(spec.algorithm.code, i, "\(spec.algorithm) out of code order")
            XCTAssertEqual(codes[spec.algorithm], i, "\(spec.algorithm)'s wire code changed")
            XCTAssertEqual(Algorithm(code: i), spec.algorithm)
            XCTAssertEqual(Algorithm(name: spec.algorithm.rawValue), spec.algorithm)
            for alias in spec.aliases { XCTAssertEqual(Algorithm(name: alias), spec.algorithm, alias) }
            XCTAssertFalse(spec.uses.isEmpty, "\(spec.algorithm) serves no collective")
        }
        XCTAssertEqual(Set(Algorithm.specs.map(\.algorithm)), Set(Algorithm.allCases))
        let expected: [CollectiveKind: [Algorithm]] = [
            .allreduce: [.ring, .tree, .recdbl, .rabenseifner, .oneshot, .staged], .allgather: [.ring, .recdbl, .staged],
            .reducescatter: [.ring, .halving, .staged], .broadcast: [.chain, .binomial, .staged], .reduce: [.chain, .binomial],
            .alltoall: [.pairwise],
        ]
        for k in CollectiveKind.allCases { XCTAssertEqual(k.algorithms, expected[k], "\(k)") }
        XCTAssertNil(Algorithm(name: "warp"))
    }
}
