import Glibc
import XCTest
import SwiftCCL

/// Shared-memory specifics beyond the conformance suite: NUMA placement and settings that must agree.
final class SHMTests: XCTestCase {
    /// The segment's pages carry a bind policy to the node the rank runs on (one node here, but the
    /// code path is the one a multi-node host takes), as /proc/self/numa_maps shows.
    func testSegmentPagesBoundToTheRanksNode() throws {
        var secret = [UInt8](repeating: 0, count: 32)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        let t = try SHMTransport(rank: 0, nranks: 1, secret: secret)
        defer { t.close() }
        guard let node = t.numaNode else {
            throw XCTSkip("no NUMA placement on this machine (libnuma.so.1 missing or no NUMA support)")
        }
        let hex = secret.prefix(4).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        guard let f = fopen("/proc/self/numa_maps", "r") else { throw XCTSkip("no /proc/self/numa_maps") }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 8192)
        var found: String?
        while fgets(&line, 8192, f) != nil {
            let l = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if l.contains("swccl-\(hex)") { found = l }
        }
        let mapping = try XCTUnwrap(found, "segment not in numa_maps")
        XCTAssertTrue(mapping.contains("bind:\(node)"), mapping)
    }

    /// Cross-memory attach really carries large messages (one copy, from the sender's buffer) on the
    /// backend that enables it, and not on the one that does not.
    func testCrossMemoryAttachCarriesLargeMessages() throws {
        for (backend, expected) in [("shm-cma", 4 << 20), ("shm", 0)] {
            let r = try Ranks.run("pull", ranks: 2, backend: backend, timeoutMs: 3000, limitS: 30)
            XCTAssertTrue(r.allPassed, "\(backend): \(r.summary)")
            XCTAssertTrue(r.outputs[1].contains("pulled \(expected) bytes"), "\(backend): \(r.outputs[1])")
        }
    }

    /// Ranks with different staging settings cannot share a layout: init fails on every rank, with an
    /// error naming the settings, instead of reading past a peer's segment.
    func testDifferentStagingSettingsAreReported() throws {
        let r = try Ranks.run("allreduce", ranks: 2, timeoutMs: 3000, limitS: 30, env: ["SWCCL_TRANSPORTS": "shm"],
                              perRankEnv: { ["SWCCL_SHM_STAGE_SLOTS": $0 == 0 ? "4" : "2"] })
        // Every rank fails init; the first to look names the settings (the other may then find its
        // peer gone already).
        for (rank, code) in r.codes.enumerated() { XCTAssertNotEqual(code, 0, "rank \(rank): \(r.summary)") }
        XCTAssertTrue(r.outputs.contains { $0.contains("SWCCL_SHM") }, r.summary)
        print(r.outputs.joined(), terminator: "")
    }
}
