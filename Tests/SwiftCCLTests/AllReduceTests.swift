import XCTest
import SwiftCCLTesting

/// Multi-process allreduce over TCP: every type and op, counts 0, 1, 7, 1000 and 1 Mi+1, in place and
/// out of place, misaligned buffers, exact results. Rank counts above the 2 cores check that waiting
/// does not burn CPU (the suite would crawl otherwise).
final class AllReduceTests: XCTestCase {
    func runAllReduce(_ n: Int, algo: String? = nil, transport: String? = nil, env: [String: String?] = [:]) throws {
        let r = try Ranks.run("allreduce", ranks: n, env: env.merging(["SWCCL_TEST_ALGO": algo, "SWCCL_TRANSPORTS": transport]) { a, _ in a })
        XCTAssertTrue(r.allPassed, r.summary)
        for out in r.outputs { XCTAssertTrue(out.contains("PASS allreduce"), out) }
        print("allreduce with \(n) ranks\(algo.map { " (\($0))" } ?? "")\(transport.map { " over \($0)" } ?? ""): \(String(format: "%.1f", r.seconds)) s")
        for line in r.outputs[0].split(separator: "\n") where line.contains("cases in") { print("  " + line) }
    }

    func testOneRank() throws { try runAllReduce(1) }
    func testTwoRanks() throws { try runAllReduce(2) }
    func testThreeRanks() throws { try runAllReduce(3) }
    func testFourRanks() throws { try runAllReduce(4) }
    func testFiveRanks() throws { try runAllReduce(5) }
    func testSevenRanks() throws { try runAllReduce(7) }
    func testEightRanksOversubscribed() throws { try runAllReduce(8) }
    func testThirteenRanksOversubscribed() throws { try runAllReduce(13) }
    // With every rank on this host the default transport is shared memory; these run TCP.
    func testThreeRanksOverTCP() throws { try runAllReduce(3, transport: "tcp") }
    func testFourRanksOverTCP() throws { try runAllReduce(4, transport: "tcp") }
    func testEightRanksOverTCP() throws { try runAllReduce(8, transport: "tcp") }

    /// Staging slots of one page per rank, two of them: the staged pipeline wraps around its slots
    /// many times even for small counts.
    func testThreeRanksTinyStagingSlots() throws {
        try runAllReduce(3, algo: "staged", env: ["SWCCL_SHM_STAGE_BYTES": "4096", "SWCCL_SHM_STAGE_SLOTS": "2", "SWCCL_TEST_FULL": "1"])
    }

    func testFourRanksForcedRangesFromEnvironment() throws { try runAllReduce(4, algo: "allreduce:0-8K:recdbl;8K-1M:rabenseifner;1M-inf:ring") }

    /// Ranks forced to different algorithms: the fingerprint in the tags differs, so the error names
    /// the mismatch instead of mixing the algorithms' messages.
    func testDifferentAlgorithmsFailCleanly() throws {
        let r = try Ranks.run("mismatch", ranks: 3, timeoutMs: 2000, env: ["SWCCL_TEST_COUNT": "5000", "SWCCL_TEST_MISMATCH": "algorithm"])
        XCTAssertTrue(r.allPassed, r.summary)
        XCTAssertTrue(r.outputs.joined().contains("different arguments"), r.summary)
    }

    /// A rank in another collective than its peers: an error naming the mismatch, not a hang.
    func testDifferentCollectiveFailsCleanly() throws {
        let r = try Ranks.run("mismatch", ranks: 3, timeoutMs: 2000, env: ["SWCCL_TEST_COUNT": "5000", "SWCCL_TEST_MISMATCH": "collective"])
        XCTAssertTrue(r.allPassed, r.summary)
        XCTAssertTrue(r.outputs.joined().contains("different arguments"), r.summary)
        print(r.outputs.joined(), terminator: "")
    }

    /// Ranks that disagree on the count get an error naming the mismatch, eager and rendezvous sizes.
    func testMismatchedCountsFailCleanly() throws {
        for (ranks, count) in [(2, 100), (3, 1000), (2, 1 << 20), (4, 300_000)] {
            let r = try Ranks.run("mismatch", ranks: ranks, timeoutMs: 2000, env: ["SWCCL_TEST_COUNT": String(count)])
            XCTAssertTrue(r.allPassed, "\(ranks) ranks, count \(count): \(r.summary)")
            XCTAssertTrue(r.outputs.joined().contains("different arguments") || r.outputs.joined().contains("size mismatch")
                          || r.outputs.joined().contains("another size"), r.summary)
            print(r.outputs.joined(), terminator: "")
        }
    }
}
