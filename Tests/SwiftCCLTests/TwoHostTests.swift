import XCTest
import SwiftCCLTesting

/// Ranks on two "hosts" (the second a mount namespace with its own /dev/shm, see `SecondHost`): each
/// pair of ranks gets its own transport — shared memory between ranks of one host, verbs across where
/// the host has an RDMA device (in the Soft-RoCE VM: scripts/verbs-tests.sh), else TCP — and every
/// collective stays exact.
final class TwoHostTests: XCTestCase {
    /// What ranks on different hosts use, and ranks on one host: read from the registry (verbs where
    /// there is an RDMA port, else TCP; shared memory).
    let across = TestTransports.betweenHosts.name
    let within = TestTransports.withinHost.name

    func run(_ scenario: String, ranks n: Int, onSecondHost: Set<Int>, expect: String) throws {
        guard let host = SecondHost() else { throw XCTSkip("cannot make a second /dev/shm here (needs root or user namespaces, unshare and nsenter)") }
        let r = try Ranks.run(scenario, ranks: n, launcher: { onSecondHost.contains($0) ? host.launcher : [] })
        XCTAssertTrue(r.allPassed, r.summary)
        for (rank, out) in r.outputs.enumerated() {
            XCTAssertTrue(out.contains("transport \(expect)"), "rank \(rank): \(out)")
        }
        print("\(scenario), \(n) ranks, ranks \(onSecondHost.sorted()) on the second host: \(String(format: "%.1f", r.seconds)) s")
    }

    /// Ranks 0, 1 on this host, 2, 3 on the other: every rank mixes shared memory and TCP.
    func testAllReduceAcrossTwoHosts() throws {
        try run("allreduce", ranks: 4, onSecondHost: [2, 3], expect: "\(within)+\(across)")
    }

    func testCollectivesAcrossTwoHosts() throws {
        try run("collectives", ranks: 5, onSecondHost: [1, 3], expect: "\(within)+\(across)")
    }

    /// Every rank on its own host: TCP (or verbs) only (shared memory is never tried across hosts).
    func testOneRankPerHostIsTCP() throws {
        try run("allreduce", ranks: 2, onSecondHost: [1], expect: across)
    }
}
