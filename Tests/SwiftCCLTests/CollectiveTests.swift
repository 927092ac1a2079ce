import XCTest
import SwiftCCLTesting

/// Multi-process tests of every collective besides allreduce (see `collectivesScenario`).
final class CollectiveTests: XCTestCase {
    func runCollectives(_ n: Int, transport: String? = nil, env: [String: String?] = [:]) throws {
        let r = try Ranks.run("collectives", ranks: n, env: env.merging(["SWCCL_TRANSPORTS": transport]) { a, _ in a })
        XCTAssertTrue(r.allPassed, r.summary)
        for out in r.outputs { XCTAssertTrue(out.contains("PASS collectives"), out) }
        let checked = r.outputs[0].split(separator: "\n").first { $0.contains("checked") } ?? "?"
        print("collectives with \(n) ranks\(transport.map { " over \($0)" } ?? ""): \(checked), \(String(format: "%.1f", r.seconds)) s")
    }

    func testOneRank() throws { try runCollectives(1) }
    func testTwoRanks() throws { try runCollectives(2) }
    func testThreeRanks() throws { try runCollectives(3) }
    func testFourRanks() throws { try runCollectives(4) }
    func testFiveRanks() throws { try runCollectives(5) }
    func testSevenRanks() throws { try runCollectives(7) }
    func testEightRanks() throws { try runCollectives(8) }
    func testThirteenRanksOversubscribed() throws { try runCollectives(13) }
    // The default transport here is shared memory; these run TCP.
    /// One-page staging slots, two per rank: the staged collectives wrap around their slots often.
    func testThreeRanksTinyStagingSlots() throws {
        try runCollectives(3, env: ["SWCCL_SHM_STAGE_BYTES": "4096", "SWCCL_SHM_STAGE_SLOTS": "2",
                                    "SWCCL_TEST_ALGO": "allgather:staged,reducescatter:staged,broadcast:staged"])
    }

    func testThreeRanksOverTCP() throws { try runCollectives(3, transport: "tcp") }
    func testFiveRanksOverTCP() throws { try runCollectives(5, transport: "tcp") }

    func testSplit() throws {
        for n in [1, 2, 5] {
            let r = try Ranks.run("split", ranks: n)
            XCTAssertTrue(r.allPassed, "\(n) ranks: \(r.summary)")
        }
    }

    /// Streams and two communicators in use at once.
    func testStreams() throws {
        for n in [1, 2, 3] {
            let r = try Ranks.run("streams", ranks: n, timeoutMs: 1500)
            XCTAssertTrue(r.allPassed, "\(n) ranks: \(r.summary)")
        }
    }
}
