import XCTest
import SwiftCCLTesting

/// One rank of 4, 8 or 16 (oversubscribed on this machine's cores) is killed or stopped in a loop of
/// collectives over TCP and over shared memory. Every survivor's error must name that rank as the
/// peer — not a neighbour that aborted because of it — carry the communicator's name and the
/// operation's sequence number, and come within 1 s of a kill or twice the timeout of a stop.
final class BlameTests: XCTestCase {
    struct Case {
        var ranks: Int
        var victim: Int
        var collective: String
        var count = 1024
        var drive = "direct"
    }

    /// Runs one case; returns the failures found (empty when every survivor blamed the victim).
    func run(_ c: Case, fault: String, transport: String, timeoutMs: Int) throws -> [String] {
        let r = try Ranks.run("blame", ranks: c.ranks, timeoutMs: timeoutMs, limitS: Double(timeoutMs) * 4 / 1000 + 60,
                              env: ["SWCCL_TRANSPORTS": transport, "SWCCL_TEST_VICTIM": String(c.victim), "SWCCL_TEST_FAULT": fault,
                                    "SWCCL_TEST_COLLECTIVE": c.collective, "SWCCL_TEST_COUNT": String(c.count),
                                    "SWCCL_TEST_DRIVE": c.drive, "SWCCL_TEST_AFTER": "20"],
                              straggler: fault == "stop" ? c.victim : nil)
        let what = "\(fault) rank \(c.victim) of \(c.ranks) over \(transport), \(c.collective) (\(c.drive))"
        var problems: [String] = []
        let bound = fault == "kill" ? 1000 : 2 * timeoutMs
        var worst = 0
        var sample = ""
        for rank in 0..<c.ranks where rank != c.victim {
            let out = r.outputs[rank]
            guard let line = out.split(separator: "\n").first(where: { $0.contains("BLAME ") }) else {
                problems.append("\(what): rank \(rank) reported no error: \(out)")
                continue
            }
            // "[rank R] BLAME <ms> <error>"
            let fields = line[line.range(of: "BLAME ")!.upperBound...].split(separator: " ", maxSplits: 1)
            let ms = fields.count > 0 ? Int(fields[0]) ?? -1 : -1
            let text = fields.count > 1 ? String(fields[1]) : ""
            worst = max(worst, ms)
            if ms >= worst { sample = "rank \(rank): \(text)" }
            let named = Set(text.ranges(of: "peer rank ").compactMap { rg -> Int? in
                Int(text[rg.upperBound...].prefix { $0.isNumber })
            })
            if named != [c.victim] { problems.append("\(what): rank \(rank) blames \(named.sorted()), not rank \(c.victim): \(text)") }
            if !text.contains("on comm 'blame'") || !text.contains(" #") {
                problems.append("\(what): rank \(rank)'s error lacks the communicator's name or the sequence number: \(text)")
            }
            if ms < 0 || ms > bound { problems.append("\(what): rank \(rank) took \(ms) ms (bound \(bound) ms): \(text)") }
            if r.codes[rank] != 0 { problems.append("\(what): rank \(rank) exit \(r.codes[rank])") }
        }
        print("blame: \(what): every survivor reported within \(worst) ms; \(problems.count) problem(s); the slowest: \(sample)")
        return problems
    }

    func check(_ cases: [Case], fault: String, transport: String, timeoutMs: Int) throws {
        var problems: [String] = []
        for c in cases { problems += try run(c, fault: fault, transport: transport, timeoutMs: timeoutMs) }
        XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
    }

    static let killCases = [
        Case(ranks: 4, victim: 0, collective: "allreduce"),
        Case(ranks: 4, victim: 2, collective: "allgather"),
        Case(ranks: 8, victim: 0, collective: "allreduce", count: 300_000),
        Case(ranks: 8, victim: 5, collective: "broadcast"),
        Case(ranks: 16, victim: 0, collective: "allreduce"),
        Case(ranks: 16, victim: 9, collective: "sendrecv"),
        Case(ranks: 4, victim: 1, collective: "allreduce", count: 4 << 20),
        Case(ranks: 8, victim: 7, collective: "allgather", count: 256 << 10, drive: "stream"),
        Case(ranks: 16, victim: 3, collective: "allreduce", drive: "group"),
    ]

    static let stopCases = [
        Case(ranks: 4, victim: 1, collective: "allreduce"),
        Case(ranks: 8, victim: 0, collective: "reducescatter"),
        Case(ranks: 8, victim: 3, collective: "allreduce", drive: "stream"),
        Case(ranks: 16, victim: 6, collective: "allreduce"),
        Case(ranks: 4, victim: 2, collective: "allreduce", count: 4 << 20),
        Case(ranks: 16, victim: 11, collective: "broadcast", drive: "stream"),
        Case(ranks: 8, victim: 4, collective: "allgather", drive: "group"),
    ]

    func testKilledRankIsBlamedOverTCP() throws { try check(Self.killCases, fault: "kill", transport: "tcp", timeoutMs: 30_000) }
    func testKilledRankIsBlamedOverSharedMemory() throws { try check(Self.killCases, fault: "kill", transport: "shm", timeoutMs: 30_000) }
    func testStoppedRankIsBlamedOverTCP() throws { try check(Self.stopCases, fault: "stop", transport: "tcp", timeoutMs: 3000) }
    func testStoppedRankIsBlamedOverSharedMemory() throws { try check(Self.stopCases, fault: "stop", transport: "shm", timeoutMs: 3000) }
}

extension BlameTests {
    /// Rank 1 of 4 (or 8) calls allreduce with another count: every rank's error says that the
    /// arguments differ (the rank that saw it first tells the others), none merely "rank X aborted".
    func testMismatchIsReportedAsSuchOnEveryRank() throws {
        var problems: [String] = []
        for (ranks, transport, count) in [(4, "tcp", 1000), (4, "shm", 1000), (8, "tcp", 100_000), (8, "shm", 5)] {
            let r = try Ranks.run("mismatch", ranks: ranks, timeoutMs: 10_000,
                                  env: ["SWCCL_TRANSPORTS": transport, "SWCCL_TEST_COUNT": String(count)])
            for rank in 0..<ranks {
                guard let line = r.outputs[rank].split(separator: "\n").first(where: { $0.contains("error as expected") }) else {
                    problems.append("\(ranks) ranks over \(transport): rank \(rank) reported no error: \(r.outputs[rank])"); continue
                }
                let says = ["different arguments", "size mismatch", "another size"].contains { line.contains($0) }
                if !says || !line.contains("on comm '") { problems.append("\(ranks) ranks over \(transport), count \(count): rank \(rank): \(line)") }
            }
            print("mismatch: \(ranks) ranks over \(transport), count \(count): \(r.outputs[0].split(separator: "\n").first { $0.contains("error as expected") } ?? "")")
        }
        XCTAssertTrue(problems.isEmpty, problems.joined(separator: "\n"))
    }
}

extension BlameTests {
    /// Communicators A and B called in opposite orders: each rank's timeout names the communicator
    /// (`on comm 'A'`) and the operation's sequence number.
    func testErrorsNameTheCommunicator() throws {
        for transport in ["tcp", "shm"] {
            let r = try Ranks.run("crosscomm", ranks: 3, timeoutMs: 1500, limitS: 60, env: ["SWCCL_TRANSPORTS": transport])
            XCTAssertTrue(r.allPassed, "\(transport): \(r.summary)")
            print("crosscomm over \(transport): \(r.outputs[0].split(separator: "\n").first { $0.contains("error as expected") } ?? "")")
        }
    }

    /// Survivors that pass different exclusion lists to shrink: each error is labelled `shrink`, names
    /// the caller by its rank in the parent communicator, and says which list it passed.
    func testShrinkErrorsSpeakOfTheParent() throws {
        let ok = try Ranks.run("shrinklabel", ranks: 4, timeoutMs: 3000, limitS: 60)
        XCTAssertTrue(ok.allPassed, ok.summary)
        let r = try Ranks.run("shrinklabel", ranks: 4, timeoutMs: 2000, limitS: 60, env: ["SWCCL_TEST_SHRINK_BAD": "1"])
        XCTAssertTrue(r.allPassed, r.summary)
        for k in 0..<3 { print("shrink: \(r.outputs[k].split(separator: "\n").first { $0.contains("error as expected") } ?? "")") }
        // Lists that differ while the rendezvous succeeds (no colliding numbers): compared, and reported
        // as such on every survivor (before, such survivors were strangers to each other).
        let d = try Ranks.run("shrinklabel", ranks: 5, timeoutMs: 3000, limitS: 60, env: ["SWCCL_TEST_SHRINK_BAD": "2"])
        XCTAssertTrue(d.allPassed, d.summary)
        print("shrink, lists differ: \(d.outputs[0].split(separator: "\n").first { $0.contains("error as expected") } ?? "")")
    }
}

extension BlameTests {
    /// An error text is one line whatever went into it (a host name or a peer's text with a newline,
    /// a carriage return, a tab, an escape): the whole description is sanitised in one place.
    func testErrorTextsAreOneLine() {
        var e = CCLError(.remoteError, "first line\nsecond line\r\tthird\u{1b}[31m", operation: "allreduce", rank: 1, peer: 0,
                         peerAddress: "host\nname:4242")
        e.communicator = "dp\nfake"
        e.sequence = 17
        let text = e.description
        XCTAssertFalse(text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }, text)
        XCTAssertTrue(text.hasPrefix("allreduce #17 on comm 'dp fake': remote error on rank 1"), text)
        XCTAssertTrue(text.contains("peer rank 0 at host name:4242: first line second line  third"), text)
        XCTAssertEqual(CCLError.oneLine("a\u{2028}b\u{85}c"), "a b c")
        XCTAssertEqual(CCLError.oneLine("plain"), "plain")
    }
}

extension BlameTests {
    static let verbsCases = [
        Case(ranks: 4, victim: 0, collective: "allreduce"),
        Case(ranks: 4, victim: 2, collective: "allgather", count: 64 << 10),
    ]

    /// The same over RDMA verbs (notices on the control connections); skipped where there is no RDMA
    /// device (`scripts/verbs-tests.sh` runs it in the Soft-RoCE VM).
    func testKilledRankIsBlamedOverVerbs() throws {
        if let why = TransportRegistry.unavailable("ib") { throw XCTSkip("ib: \(why)") }
        try check(Self.verbsCases, fault: "kill", transport: "ib", timeoutMs: 30_000)
    }

    func testStoppedRankIsBlamedOverVerbs() throws {
        if let why = TransportRegistry.unavailable("ib") { throw XCTSkip("ib: \(why)") }
        try check(Self.verbsCases, fault: "stop", transport: "ib", timeoutMs: 8000)
    }
}
