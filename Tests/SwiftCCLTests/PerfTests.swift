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
}
