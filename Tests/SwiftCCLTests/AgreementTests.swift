import XCTest
import SwiftCCLTesting

/// Arguments that must agree across ranks (docs/RELIABILITY.md, "Argument agreement"): ranks that
/// pass different roots, counts (0 against 1000 too), types, ops, pre-multiplied sums, algorithms,
/// collectives or group orders get an invalidUsage error naming the disagreeing rank (and the
/// argument, on the rank that saw it) — never success with wrong data, never the timeout. Every
/// collective and algorithm, over TCP and shared memory, 2 to 5 ranks (the `disagree` scenario of
/// swccl-test-rank; a timeout of 10 s makes a detection that waited for the timeout fail the case).
final class AgreementTests: XCTestCase {
    func run(_ n: Int, transport: String, cases: String? = nil) throws {
        let r = try Ranks.run("disagree", ranks: n, timeoutMs: 10_000, limitS: 600,
                              env: ["SWCCL_TRANSPORTS": transport, "SWCCL_TEST_CASES": cases])
        XCTAssertTrue(r.allPassed, r.summary)
        for out in r.outputs { XCTAssertTrue(out.contains("PASS disagree"), out) }
        print("disagreement cases, \(n) ranks over \(transport): \(String(format: "%.1f", r.seconds)) s")
    }

    func testTwoRanksTCP() throws { try run(2, transport: "tcp") }
    func testThreeRanksTCP() throws { try run(3, transport: "tcp") }
    func testFiveRanksTCP() throws { try run(5, transport: "tcp") }
    func testTwoRanksSHM() throws { try run(2, transport: "shm") }
    func testFourRanksSHM() throws { try run(4, transport: "shm") }
    func testFiveRanksSHM() throws { try run(5, transport: "shm") }
}
