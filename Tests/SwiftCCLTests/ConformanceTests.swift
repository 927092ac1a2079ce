import XCTest
import SwiftCCL

/// The transport conformance suite: each case is written once against the `Transport` protocol and
/// runs against every backend in `TransportRegistry`, ranks as real processes.
final class ConformanceTests: XCTestCase {
    let timeoutMs = 3000

    func forEachBackend(_ scenario: String, ranks: Int, limitS: Double = 120, straggler: Int? = nil,
                        check: (String, RankRun) -> Void = { _, _ in }, beforeSpawn: ((UniqueID) -> Void)? = nil) throws {
        for backend in TransportRegistry.names {
            let r = try Ranks.run(scenario, ranks: ranks, backend: backend, timeoutMs: timeoutMs, limitS: limitS,
                                  straggler: straggler, beforeSpawn: beforeSpawn)
            check(backend, r)
        }
    }

    func expectPass(_ scenario: String, ranks: Int, beforeSpawn: ((UniqueID) -> Void)? = nil) throws {
        try forEachBackend(scenario, ranks: ranks, check: { backend, r in
            XCTAssertTrue(r.allPassed, "\(backend): \(r.summary)")
            for out in r.outputs { XCTAssertTrue(out.contains("PASS \(scenario)"), "\(backend): \(out)") }
        }, beforeSpawn: beforeSpawn)
    }

    /// Handshake and secret check: strangers at the bootstrap root and at the transport listeners
    /// (HTTP garbage, a short write, a valid hello with a wrong secret, a silent connect) are rejected
    /// and the ranks still connect and exchange data.
    func testHandshakeRejectsStrangers() throws {
        try expectPass("handshake", ranks: 3, beforeSpawn: { id in
            if let root = id.rootAddress {
                RawSocket.sendAndClose(to: root, [UInt8](repeating: 0x41, count: 100))
                RawSocket.sendAndClose(to: root, [12, 0, 0, 0] + [UInt8](repeating: 0, count: 12))
            }
        })
    }

    func testPerTagOrdering() throws { try expectPass("ordering", ranks: 2) }
    func testSizesZeroToTwoHundredFiftySixMiB() throws { try expectPass("sizes", ranks: 2) }
    func testSizesThreeRanks() throws { try expectPass("misaligned", ranks: 3) }
    func testManyOutstandingBothDirections() throws { try expectPass("many", ranks: 3) }
    func testPeerThatCloses() throws { try expectPass("close", ranks: 3) }

    /// A peer killed mid-transfer: the others get an error naming it within twice the timeout.
    func testPeerKilledMidTransfer() throws {
        try forEachBackend("kill", ranks: 3, check: { backend, r in
            XCTAssertEqual(r.codes[1], 128 + 9, "\(backend): rank 1 should die of SIGKILL\n\(r.summary)")
            XCTAssertEqual(r.codes[0], 0, "\(backend): \(r.summary)")
            XCTAssertEqual(r.codes[2], 0, "\(backend): \(r.summary)")
            XCTAssertTrue(r.outputs[0].contains("rank 1"), r.outputs[0])
        })
    }

    /// A peer stopped with SIGSTOP: a timeout error naming it.
    func testPeerStopped() throws {
        try forEachBackend("stop", ranks: 3, limitS: 30, straggler: 1, check: { backend, r in
            XCTAssertEqual(r.codes[0], 0, "\(backend): \(r.summary)")
            XCTAssertTrue(r.outputs[0].contains("timeout"), r.outputs[0])
            XCTAssertTrue(r.outputs[2].contains("PASS stop"), r.outputs[2])
        })
    }
}
