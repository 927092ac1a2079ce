import XCTest
import Foundation
import SwiftCCLTesting
import SwcclVerify

/// The transport conformance suite: each case is written once against the `Transport` protocol
/// (`TransportConformance` in SwiftCCLTesting) and runs against every transport of the test registry
/// (`TestTransports`: each backend of `TransportRegistry` and its variants, ranks as real processes;
/// the in-process `loopback`, ranks as threads).
final class ConformanceTests: XCTestCase {
    /// 3 s; `SWCCL_TEST_CONFORMANCE_TIMEOUT_MS` raises it where the transport is emulated (Soft-RoCE in a VM
    /// moves ≈50 MB/s, so a 256 MiB message needs several seconds).
    let timeoutMs = Int(ProcessInfo.processInfo.environment["SWCCL_TEST_CONFORMANCE_TIMEOUT_MS"] ?? "") ?? 3000

    /// The transports to run: every one in the test registry, or those listed in
    /// `SWCCL_TEST_CONFORMANCE_BACKENDS`. One this machine cannot run (no RDMA device for `ib`) is
    /// skipped with a message naming the reason; `scripts/test.sh` runs the suite for `ib` inside a
    /// Soft-RoCE VM instead.
    static var selected: [TestTransport] {
        let only = (ProcessInfo.processInfo.environment["SWCCL_TEST_CONFORMANCE_BACKENDS"] ?? "").split(separator: ",").map(String.init)
        return TestTransports.all.filter { only.isEmpty || only.contains($0.name) }
    }

    func forEachBackend(_ scenario: String, ranks: Int, limitS: Double = 120, straggler: Int? = nil,
                        check: (String, RankRun) -> Void = { _, _ in }, beforeSpawn: ((UniqueID) -> Void)? = nil) throws {
        for t in Self.selected {
            if let why = t.unavailable {
                print("SKIP conformance \(scenario) on \(t.name): \(why)")
                continue
            }
            let r: RankRun
            if t.ranksAreThreads {
                let t0 = Clock.nanos()
                let run = try InProcessRanks.run(scenario, ranks: ranks, transport: t.name, timeoutMs: timeoutMs, beforeStart: beforeSpawn)
                r = RankRun(codes: run.codes, outputs: run.outputs, seconds: Double(Clock.nanos() - t0) / 1e9)
            } else {
                r = try Ranks.run(scenario, ranks: ranks, backend: t.name, timeoutMs: timeoutMs, limitS: max(limitS, Double(timeoutMs) * 10 / 1000),
                                  straggler: straggler, beforeSpawn: beforeSpawn)
            }
            check(t.name, r)
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
    /// Registered buffers reused, deregistered and freed; then fresh unregistered ones.
    func testRegisteredAndReusedBuffers() throws { try expectPass("register", ranks: 2) }
    /// Bounded buffering: a peer that sends far more than the receiver has asked for fills at most
    /// the unexpected budget, then waits; every message still arrives, in order.
    func testFloodOfUnexpectedMessagesIsBounded() throws { try expectPass("flood", ranks: 2) }

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
