import Glibc
import XCTest
import SwiftCCL
import SwcclVerify

/// swccl-perf itself: every collective runs and checks exactly (#wrong 0, exit 0) for 2, 3 and 4 local
/// ranks over TCP and over shared memory, all types and ops, small sizes; a wrong invocation exits
/// non-zero with a message.
final class PerfTests: XCTestCase {
    var perf: String { Ranks.helper.replacingOccurrences(of: "swccl-test-rank", with: "swccl-perf") }

    func runPerf(_ args: [String]) throws -> (Int32, String) {
        let out = "/tmp/swccl-perf-test-\(getpid())-\(Clock.nanos() % 1_000_000).log"
        defer { unlink(out) }
        let p = try Spawn.start(perf, args, env: ["SWCCL_SOCKET_IFNAME": "lo"], output: out)
        let code = p.wait()
        var text = ""
        if let f = fopen(out, "r") {
            var line = [CChar](repeating: 0, count: 4096)
            while fgets(&line, 4096, f) != nil { text += line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
            fclose(f)
        }
        return (code, text)
    }

    func testEveryCollectiveChecksExactly() throws {
        let collectives = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "alltoall", "sendrecv", "gather", "scatter", "barrier"]
        for transport in ["tcp", "shm"] {
            for c in collectives {
                for np in transport == "shm" ? [2, 3, 4, 8] : [2, 3, 4] {
                    let (code, text) = try runPerf([c, "-np", String(np), "--transport", transport, "-b", "8", "-e", "256K", "-f", "8", "-n", "2", "-w", "1",
                                                    "-d", "all", "-o", "all", "-r", String(np - 1), "-T", "60"])
                    XCTAssertEqual(code, 0, "\(c) -np \(np) over \(transport):\n\(text)")
                    XCTAssertTrue(text.contains("# Out of bounds values : 0 OK"), "\(c) -np \(np) over \(transport):\n\(text)")
                    XCTAssertTrue(text.contains("# swccl-perf \(c)") && text.contains("transport \(transport)"), text)
                }
            }
        }
    }

    /// `-a` forces each algorithm of each collective that has a choice; rows still check exactly, and
    /// an algorithm the collective lacks is refused.
    func testEveryForcedAlgorithmChecksExactly() throws {
        for kind in CollectiveKind.allCases where kind.algorithms.count > 1 {
            let name = ["allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter"][kind.rawValue] ?? kind.rawValue
            for algo in kind.algorithms {
                let (code, text) = try runPerf([name, "-np", "3", "-a", algo.rawValue, "-b", "4", "-e", "1M", "-f", "16", "-n", "1", "-w", "0",
                                                "-d", "all", "-o", "all", "-r", "1", "-T", "60"])
                XCTAssertEqual(code, 0, "\(name) -a \(algo):\n\(text)")
                XCTAssertTrue(text.contains("# Out of bounds values : 0 OK"), "\(name) -a \(algo):\n\(text)")
                XCTAssertTrue(text.contains("algo \(algo.rawValue)"), text)
            }
        }
        let (code, text) = try runPerf(["all_gather", "-np", "2", "-a", "tree"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(text.contains("all_gather has no tree algorithm"), text)
    }

    func testBadInvocationFails() throws {
        let (code, text) = try runPerf(["no_such_collective"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(text.contains("unknown collective"), text)
        let (code2, _) = try runPerf(["all_reduce", "-np", "2", "--transport", "carrier-pigeon"])
        XCTAssertNotEqual(code2, 0)
    }

    func readText(_ path: String) -> String {
        guard let f = fopen(path, "r") else { return "" }
        defer { fclose(f) }
        var text = "", line = [CChar](repeating: 0, count: 65536)
        while fgets(&line, 65536, f) != nil { text += line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
        return text
    }

    /// --plot writes an SVG chart of the run (one point per size and series) with the series of a
    /// --compare file beside it; -J rows name the root of rooted collectives; `swccl-perf plot` draws
    /// a file of series alone and refuses a malformed one.
    func testPlotAndJSON() throws {
        let dir = "/tmp/swccl-perf-plot-\(getpid())"
        mkdir(dir, 0o755)
        defer { system("rm -rf \(dir)") }
        let peers = "\(dir)/peers.json"
        let f = fopen(peers, "w")!
        fputs("# a comment\n{\"series\":\"Peer X\",\"size\":1024,\"busbw\":0.25}\n{\"series\":\"Peer X\",\"size\":65536,\"busbw\":1.5}\n", f)
        fclose(f)
        let (code, text) = try runPerf(["broadcast", "-np", "2", "-b", "1K", "-e", "64K", "-f", "4", "-n", "2", "-w", "1", "-r", "1",
                                        "--plot", "\(dir)/run.svg", "--compare", peers, "-J", "\(dir)/run.json"])
        XCTAssertEqual(code, 0, text)
        let svg = readText("\(dir)/run.svg")
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("</svg>"), svg)
        XCTAssertTrue(svg.contains("SwiftCCL out-of-place") && svg.contains("SwiftCCL in-place") && svg.contains("Peer X"), svg)
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 3, svg)
        XCTAssertEqual(svg.components(separatedBy: "<circle").count - 1, 4 + 4 + 2, svg)  // sizes 1K 4K 16K 64K, twice, and 2 peer points
        let rows = readText("\(dir)/run.json").split(separator: "\n")
        XCTAssertEqual(rows.count, 4)
        XCTAssertTrue(rows.allSatisfy { $0.contains("\"root\":1") && $0.contains("\"oop_busbw\":") }, rows.joined(separator: "\n"))
        // A previous run's rows are a valid --compare file for `plot`.
        let (c2, t2) = try runPerf(["plot", "--compare", "\(dir)/run.json", "--plot", "\(dir)/again.svg", "--title", "again"])
        XCTAssertEqual(c2, 0, t2)
        XCTAssertTrue(readText("\(dir)/again.svg").contains(">again</text>"))
        let bad = fopen("\(dir)/bad.json", "w")!
        fputs("{\"series\":\"Y\",\"size\":8}\n", bad)
        fclose(bad)
        let (c3, t3) = try runPerf(["plot", "--compare", "\(dir)/bad.json", "--plot", "\(dir)/bad.svg"])
        XCTAssertNotEqual(c3, 0)
        XCTAssertTrue(t3.contains("bad.json:1"), t3)
    }

    /// The progress line goes to standard error only when it is a terminal: under `script` (a pseudo
    /// terminal) it appears and is erased; into a file (as in every other test) it does not.
    func testProgressLineOnlyOnATerminal() throws {
        guard access("/usr/bin/script", X_OK) == 0 else { throw XCTSkip("no /usr/bin/script (util-linux) to provide a terminal") }
        let args = ["all_reduce", "-np", "2", "-b", "8", "-e", "64K", "-n", "2", "-w", "1"]
        let (code, text) = try runPerf(args)
        XCTAssertEqual(code, 0, text)
        XCTAssertFalse(text.contains("elapsed"), text)
        let out = "/tmp/swccl-perf-tty-\(getpid()).log"
        defer { unlink(out) }
        let p = try Spawn.start("/usr/bin/script", ["-qec", ([perf] + args).joined(separator: " "), "/dev/null"],
                                env: ["SWCCL_SOCKET_IFNAME": "lo"], output: out)
        XCTAssertEqual(p.wait(), 0)
        let tty = readText(out)
        XCTAssertTrue(tty.contains("# size 65536 B float sum (14 of 14), 0 s elapsed") || tty.contains("(14 of 14)"), tty)
        XCTAssertTrue(tty.contains("\u{1B}[K"), "the line is erased before rows are printed")
        XCTAssertTrue(tty.contains("# Out of bounds values : 0 OK"), tty)
    }
}
