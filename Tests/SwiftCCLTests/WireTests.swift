import XCTest
@_spi(Fuzzing) import SwiftCCL

/// The parsers of what arrives from the network, through the fuzz targets' entry points
/// (`WireFuzzing`, docs/RELIABILITY.md "Fuzzing"): the seeds (valid messages from the library's own
/// encoders) are read as such, and every input the fuzzer or a review found troublesome is refused
/// with an error rather than a trap.
final class WireTests: XCTestCase {
    func run(_ target: String, _ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { WireFuzzing.run(target, $0) }
    }

    func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    func framed(_ b: [UInt8]) -> [UInt8] { le32(UInt32(b.count)) + b }

    func testSeedsAreReadAsValidMessages() {
        for target in WireFuzzing.targets { XCTAssertFalse(WireFuzzing.seeds(target).isEmpty, target) }
        let hellos = WireFuzzing.seeds("bootstrap-hello").map { run("bootstrap-hello", $0) }
        XCTAssertTrue(hellos[0].hasPrefix("rank 0 of 4, timeout 60000 ms; admitted (out-of-band at 127.0.0.1:4242): rank 0 pid 1000 on node1"), hellos[0])
        XCTAssertTrue(hellos[0].contains("shm /swccl-0123456789abcdef0123456789abcdef-r0, tcp 10.0.0.1:5000 x1"), hellos[0])
        XCTAssertTrue(hellos[2].hasPrefix("rank 3 of 4"), hellos[2])
        let answers = WireFuzzing.seeds("rendezvous-answer").map { run("rendezvous-answer", $0) }
        XCTAssertTrue(answers[0].hasPrefix("admitted") && answers[0].contains("rank 3 pid 1003"), answers[0])
        XCTAssertTrue(answers[2].hasPrefix("refused:") && answers[2].contains("peer rank 3") && answers[2].contains("did not reach"), answers[2])
        let oob = WireFuzzing.seeds("oob").map { run("oob", $0) }
        XCTAssertEqual(oob, ["out-of-band hello from rank 1", "out-of-band hello from rank 3", "gathered [3, 0, 40]"])
        let mesh = WireFuzzing.seeds("mesh-hello").map { run("mesh-hello", $0) }
        XCTAssertEqual(Array(mesh.prefix(3)), ["connection 0 from rank 1", "connection 1 from rank 1", "connection 1 from rank 0"])
        XCTAssertTrue(mesh[3].hasSuffix("(an answer)"), mesh[3])
        for (k, seed) in WireFuzzing.seeds("notice").enumerated() {
            let out = run("notice", seed)
            XCTAssertFalse(out.contains("unreadable"), "seed \(k): \(out)")
        }
        let verbs = WireFuzzing.seeds("verbs").map { run("verbs", $0) }
        XCTAssertEqual(verbs, ["set-up: QP 17 PSN 1193046 LID 0 MTU 1024 eager 8192", "eager tag 9 length 16", "rts tag 9 length 65536",
                               "cts tag 9 length 65536", "bye tag 0 length 0"])
        let ids = WireFuzzing.seeds("unique-id").map { run("unique-id", $0) }
        XCTAssertTrue(ids[0].hasPrefix("root 127.0.0.1:29500 (rank 0 runs it: true)"), ids[0])
        XCTAssertTrue(ids[1].hasPrefix("root [::1]:29500 (rank 0 runs it: false)"), ids[1])
        XCTAssertTrue(ids[2].hasSuffix("hex accepted"), ids[2])
    }

    /// The TCP reader fed real frames through a socket pair: an eager message for a posted receive,
    /// a rendezvous whose data arrives on both connections, grants for this rank's sends, notices.
    func testTCPStreamSeeds() {
        let out = WireFuzzing.seeds("tcp-stream").map { run("tcp-stream", $0) }
        XCTAssertTrue(out[0].hasPrefix("1 done, 0 pending, 0 failed") && out[0].hasSuffix("1 unexpected"), out[0])
        // The second connection exists only with SWCCL_NSOCKS_PERTHREAD=2 (the fuzz harness sets it):
        // with one, the data for both pieces arrives on the same connection.
        XCTAssertTrue(out[1].hasPrefix("1 done, 0 pending"), out[1])
        XCTAssertTrue(out[2].hasPrefix("1 done, 0 pending, 1 failed (rank 1 rejected a message of 300000 bytes"), out[2])
        XCTAssertTrue(out[3].contains("notice abort"), out[3])
        XCTAssertTrue(out[4].hasSuffix("notice waiting; 0 unexpected"), out[4])
    }

    func tcpFrame(_ type: UInt64, tag: UInt64 = 0, a: UInt64 = 0, b: UInt64 = 0) -> [UInt8] { le64(type) + le64(tag) + le64(a) + le64(b) }

    /// Garbage after the handshake breaks the connection with a protocol error naming the peer; it
    /// never writes outside the receive's buffer.
    func testTCPStreamGarbage() {
        // One receive of 100 bytes with tag 7; the stream is the rest, all on connection 0.
        func stream(_ s: [UInt8]) -> String { run("tcp-stream", [0x01, 7, 3, 0xff, 0xff] + s) }
        XCTAssertTrue(stream(tcpFrame(99)).contains("unknown frame type 99"), stream(tcpFrame(99)))
        XCTAssertTrue(stream(tcpFrame(1, tag: 7, a: 2 << 20)).contains("eager message of 2097152 bytes exceeds"))
        XCTAssertTrue(stream(tcpFrame(2, tag: 7, a: 1 << 62, b: 1)).contains("bad rendezvous request"))
        XCTAssertTrue(stream(tcpFrame(6, a: 5000, b: 1)).contains("notice of 5000 bytes"))
        // Data for a granted message, but beyond its end.
        let rts = tcpFrame(2, tag: 7, a: 100, b: 3)
        XCTAssertTrue(stream(rts + tcpFrame(4, tag: 96, a: 8, b: 3) + [UInt8](repeating: 1, count: 8)).contains("out of bounds"))
        XCTAssertTrue(stream(rts + tcpFrame(4, tag: UInt64.max, a: 2, b: 3)).contains("out of bounds"))
        XCTAssertTrue(stream(tcpFrame(3, b: 42)).contains("grant for unknown message 42"))
        // A size mismatch fails the receive, naming it so.
        XCTAssertTrue(stream(tcpFrame(1, tag: 7, a: 5) + [1, 2, 3, 4, 5]).contains("message size mismatch: rank 1 sent 5 bytes where 100 were expected"))
    }

    /// Before the fix the root took any size below 2^32 from a hello (a stranger with the secret of a
    /// host:port id could make it wait for, and list as missing, 4 billion ranks).
    func testBootstrapHelloRankCountIsBounded() {
        func hello(rank: UInt32, size: UInt32) -> [UInt8] {
            framed(le32(0x5357_4252) + le32(2) + WireFuzzing.secret + le32(rank) + le32(size) + le32(1000) + framed(framed([]) + framed([])))
        }
        XCTAssertTrue(run("bootstrap-hello", hello(rank: 0, size: 2)).hasPrefix("rank 0 of 2"))
        XCTAssertEqual(run("bootstrap-hello", hello(rank: 0, size: UInt32.max)), "malformed: malformed hello: rank 0 of 4294967295")
        XCTAssertEqual(run("bootstrap-hello", hello(rank: 0, size: 1 << 16 + 1)), "malformed: malformed hello: rank 0 of 65537")
        XCTAssertEqual(run("bootstrap-hello", hello(rank: 2, size: 2)), "malformed: malformed hello: rank 2 of 2")
        // Strangers are dropped after the header, whatever length they announce.
        XCTAssertTrue(run("bootstrap-hello", le32(UInt32.max)).hasPrefix("dropped: not a bootstrap hello (announces 4294967295 bytes)"))
        XCTAssertTrue(run("bootstrap-hello", Array("GET / HTTP/1.1\r\n\r\n".utf8)).hasPrefix("dropped: not a bootstrap hello"))
        var wrong = hello(rank: 0, size: 2)
        wrong[12] ^= 1
        XCTAssertTrue(run("bootstrap-hello", wrong).hasPrefix("dropped: wrong secret"))
    }

    /// Rank information must carry its own rank: the communicator's set-up indexes its tables by it
    /// (a forged blob that said rank 9 in a job of 2 trapped; BootstrapTests shows it end to end).
    func testRankInformationMustCarryItsRank() {
        var answer = [UInt8(1)] + [0] + WireFuzzing.secret  // 2 ranks
        for claimed in [0, 9] as [UInt32] {
            let info = le32(claimed) + le32(77) + framed(Array("h".utf8)) + framed(Array("b".utf8)) + le64(1) + le32(0)
            answer += framed(framed([]) + framed(info))
        }
        XCTAssertTrue(run("rendezvous-answer", answer).contains("the rank information published as rank 1 says rank 9"), run("rendezvous-answer", answer))
        // A root's refusal naming a rank beyond the job names nobody.
        let refusal = [UInt8(1)] + [6] + framed(Array("nope".utf8)) + le32(1000)
        XCTAssertEqual(run("rendezvous-answer", refusal), "refused: init: rendezvous: remote error on rank 0 (\(HostIdentity.local.hostname)): the bootstrap root reports: nope")
    }

    /// A shared-memory address is only ever a name this backend makes: nothing outside /dev/shm.
    func testSharedMemoryNamesAreOurs() {
        func answer(_ name: String) -> String {
            var shm = Array(name.utf8); shm.insert(UInt8(shm.count), at: 0)
            let info = le32(0) + le32(77) + framed([]) + framed([]) + le64(1) + le32(1) + framed(Array("shm".utf8)) + framed(shm)
            return run("rendezvous-answer", [0, 0] + WireFuzzing.secret + framed(framed([]) + framed(info)))
        }
        XCTAssertTrue(answer("/swccl-0123456789abcdef0123456789abcdef-r0").hasSuffix("shm /swccl-0123456789abcdef0123456789abcdef-r0"))
        for bad in ["/../../home/x", "/swccl-0123456789abcdef0123456789abcdef-r0/..", "/swccl-0123456789ABCDEF0123456789abcdef-r0",
                    "/swccl-0123456789abcdef0123456789abcdef-r", "/swccl-0123456789abcdef0123456789abcde-r00", "swccl-0123456789abcdef0123456789abcdef-r0"] {
            XCTAssertTrue(answer(bad).hasSuffix("shm unreadable"), "\(bad): \(answer(bad))")
        }
    }

    /// A shared-memory slot header is checked before anything is copied: an eager message larger than
    /// its slot (or whose two lengths differ), data beyond a slot, an unknown kind.
    func testSharedMemorySlotHeaders() {
        func slot(_ kind: UInt32, _ len: UInt32, _ offset: UInt64, _ total: UInt64) -> String { run("shm-slot", le32(kind) + le32(len) + le64(offset) + le64(total)) }
        XCTAssertEqual(WireFuzzing.seeds("shm-slot").map { run("shm-slot", $0) }.filter { $0.hasPrefix("garbage") }, [])
        XCTAssertEqual(slot(1, 40_000, 0, 40_000), "garbage: eager message of 40000 bytes, total 40000")
        XCTAssertEqual(slot(1, 10, 0, 100), "garbage: eager message of 10 bytes, total 100")
        XCTAssertEqual(slot(4, 40_000, 0, 1 << 20), "garbage: data of 40000 bytes at 0, total 1048576")
        XCTAssertEqual(slot(4, 100, UInt64.max, 1 << 20), "garbage: data of 100 bytes at -1, total 1048576")
        XCTAssertEqual(slot(9, 0, 0, 0), "garbage: slot kind 9")
    }

    /// A verbs header's length is a count of bytes: one of 2^63 or more trapped when converted.
    func testVerbsHeaderLengthsAreBounded() {
        let rts = le64(2) + le64(9) + le64(1 << 63) + le64(0) + le64(0)
        XCTAssertEqual(run("verbs", [1] + rts), "refused: protocol error from rank 1: rendezvous request of 9223372036854775808 bytes")
        let cts = le64(3) + le64(9) + le64(0x1000) + le64(UInt64.max) + le64(0)
        XCTAssertEqual(run("verbs", [1] + cts), "refused: protocol error from rank 1: grant of 18446744073709551615 bytes")
        let eager = le64(1) + le64(9) + le64(UInt64.max) + le64(0) + le64(0)
        XCTAssertEqual(run("verbs", [1] + eager), "refused: eager message from rank 1 says 18446744073709551615 bytes but carries 0")
        XCTAssertEqual(run("verbs", [1] + Array(rts.prefix(39))), "refused: garbled message (39 bytes) from rank 1")
        XCTAssertEqual(run("verbs", [0] + [UInt8](repeating: 0, count: 40)), "malformed: garbled queue-pair set-up message")
    }

    /// Notices: what a rank relays stays one its peers accept; a notice area or control stream full of
    /// garbage gives nothing, not a crash.
    func testNoticeGarbage() {
        XCTAssertEqual(run("notice", [0, 0x4e, 1, 6] + le32(3) + le32(1) + le32(4096 + 1)), "unreadable")
        XCTAssertEqual(run("notice", [1] + le64(2) + le32(UInt32.max) + [UInt8](repeating: 0xff, count: 2000)), "version 2: unreadable")
        XCTAssertEqual(run("notice", [2] + le32(0) + [1, 2, 3]), "0 notices: ")
        XCTAssertEqual(run("notice", [2] + le32(2000)), "0 notices: ")
    }

    /// A unique id handed over by the user: the wrong size or an unknown address family is refused.
    func testUniqueIDGarbage() {
        XCTAssertTrue(run("unique-id", []).hasPrefix("refused: a unique id has 128 bytes, not 0"), run("unique-id", []))
        var id = WireFuzzing.seeds("unique-id")[0]
        id[8] = 5  // an address family that does not exist
        XCTAssertTrue(run("unique-id", id).hasPrefix("refused: the unique id is not one made by swcclGetUniqueId"), run("unique-id", id))
    }
}
