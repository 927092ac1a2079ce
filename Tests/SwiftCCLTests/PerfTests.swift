import Glibc
import XCTest
import SwiftCCLTesting
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

    /// Data rows of a run's output (lines that do not start with '#').
    func rows(_ text: String) -> [Substring] {
        text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.hasPrefix("swccl-perf") && $0.first == " " }
    }

    /// nccl-tests' flags: -t × -g local ranks, -m grouped operations, -R registered buffers, the CPU-less
    /// ones accepted with a note in the header, and --name=value for long options.
    func testNcclTestsFlags() throws {
        let (code, text) = try runPerf(["all_reduce", "-t", "1", "-g", "3", "-m", "4", "-R", "1", "-z", "1", "-G", "2", "-C", "1", "-p", "1",
                                        "--minbytes=8", "--maxbytes=64K", "--stepfactor=8", "--iters=2", "--warmup_iters=1", "--check=2",
                                        "--datatype=int32", "--op=max", "--timeout=60"])
        XCTAssertEqual(code, 0, text)
        XCTAssertTrue(text.contains("# swccl-perf all_reduce  nranks 3 "), "-t 1 -g 3: three ranks:\n\(text)")
        for note in ["# -m 4: 4 operations per timed iteration in one group", "# -z 1 ignored", "# -G 2 ignored", "# -C 1 ignored",
                     "# -p 1 ignored", "# -R 1: send and receive buffers registered"] {
            XCTAssertTrue(text.contains(note), "\(note):\n\(text)")
        }
        XCTAssertEqual(rows(text).count, 5, text)  // 8 B … 32 KiB by 8
        XCTAssertTrue(rows(text).allSatisfy { $0.contains(" int32 ") && $0.contains(" max ") }, text)
        XCTAssertTrue(text.contains("# Out of bounds values : 0 OK"), text)
        // -R 2 (symmetric) registers locally, and says so; -g and -np that disagree are refused.
        let (c2, t2) = try runPerf(["broadcast", "-np", "2", "-R", "2", "-b", "1K", "-e", "1K", "-n", "1", "-w", "0"])
        XCTAssertEqual(c2, 0, t2)
        XCTAssertTrue(t2.contains("-R 2: SwiftCCL has no symmetric"), t2)
        let (c3, t3) = try runPerf(["all_reduce", "-np", "3", "-g", "2"])
        XCTAssertNotEqual(c3, 0)
        XCTAssertTrue(t3.contains("-np 3 and -t 1 -g 2 (2 ranks) disagree"), t3)
        let (c4, t4) = try runPerf(["all_reduce", "-np", "2", "-R", "3"])
        XCTAssertNotEqual(c4, 0)
        XCTAssertTrue(t4.contains("-R takes 0"), t4)
        let (c5, t5) = try runPerf(["all_reduce", "-np", "2", "-a", "1"])
        XCTAssertNotEqual(c5, 0)
        XCTAssertTrue(t5.contains("nccl-tests' -a/--average"), t5)
    }

    /// -c 0: nothing is checked, and #wrong says N/A (null in -J), as nccl-tests prints it.
    func testNoCheckPrintsNA() throws {
        let json = "/tmp/swccl-perf-na-\(getpid()).json"
        defer { unlink(json) }
        let (code, text) = try runPerf(["reduce_scatter", "-np", "2", "-b", "64", "-e", "4K", "-f", "8", "-n", "1", "-w", "0", "-c", "0", "-J", json])
        XCTAssertEqual(code, 0, text)
        let r = rows(text)
        XCTAssertEqual(r.count, 3, text)
        XCTAssertTrue(r.allSatisfy { $0.split(separator: " ").filter { $0 == "N/A" }.count == 2 }, text)
        let lines = readText(json).split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines.allSatisfy { $0.contains("\"oop_wrong\":null") && $0.contains("\"ip_wrong\":null") }, lines.joined(separator: "\n"))
        // With checking, numbers.
        let (c2, t2) = try runPerf(["reduce_scatter", "-np", "2", "-b", "64", "-e", "64", "-n", "1", "-w", "0"])
        XCTAssertEqual(c2, 0, t2)
        XCTAssertFalse(t2.contains("N/A"), t2)
    }

    /// Invocation errors found before anything is printed: a root that is not a rank, an algorithm the
    /// transport cannot run.
    func testRootAndAlgorithmErrors() throws {
        let (code, text) = try runPerf(["broadcast", "-np", "2", "-r", "2"])
        XCTAssertEqual(code, 2, text)
        XCTAssertTrue(text.contains("-r 2: the root must be a rank between 0 and 1 (2 ranks)"), text)
        XCTAssertFalse(text.contains("# swccl-perf"), "no header before the error:\n\(text)")
        let (c2, t2) = try runPerf(["gather", "-np", "3", "--root=-1"])
        XCTAssertEqual(c2, 2, t2)
        for (collective, algo) in [("all_reduce", "staged"), ("all_reduce", "oneshot"), ("all_gather", "staged")] {
            let (c, t) = try runPerf([collective, "-np", "2", "--transport", "tcp", "-a", algo, "-b", "8", "-e", "1K", "-T", "60"])
            XCTAssertEqual(c, 2, "\(collective) -a \(algo) over tcp:\n\(t)")
            XCTAssertTrue(t.contains("-a \(algo): the tcp transport cannot run it") && t.contains("--transport shm"), t)
            XCTAssertFalse(t.contains("# swccl-perf"), t)
        }
    }

    /// Each row, and each -J line, ends with the algorithm that ran.
    func testAlgorithmColumn() throws {
        let json = "/tmp/swccl-perf-algo-\(getpid()).json"
        defer { unlink(json) }
        let (code, text) = try runPerf(["all_reduce", "-np", "2", "--transport", "tcp", "-a", "tree", "-b", "8", "-e", "64K", "-f", "16", "-n", "1", "-w", "0", "-J", json])
        XCTAssertEqual(code, 0, text)
        XCTAssertTrue(text.contains("#wrong  algo"), text)
        XCTAssertEqual(rows(text).count, 4, text)
        XCTAssertTrue(rows(text).allSatisfy { $0.hasSuffix("  tree") }, text)
        XCTAssertTrue(readText(json).split(separator: "\n").allSatisfy { $0.hasSuffix("\"algo\":\"tree\"}") }, readText(json))
        // auto: every row names an algorithm of the collective; collectives without a choice say "-".
        let known = Set(CollectiveKind.allreduce.algorithms.map(\.rawValue))
        let (c2, t2) = try runPerf(["all_reduce", "-np", "2", "-b", "8", "-e", "4M", "-f", "64", "-n", "1", "-w", "0"])
        XCTAssertEqual(c2, 0, t2)
        XCTAssertTrue(rows(t2).allSatisfy { known.contains(String($0.split(separator: " ").last!)) }, t2)
        let (c3, t3) = try runPerf(["gather", "-np", "2", "-b", "8", "-e", "8", "-n", "1", "-w", "0"])
        XCTAssertEqual(c3, 0, t3)
        XCTAssertTrue(rows(t3).allSatisfy { $0.hasSuffix("  -") }, t3)
    }

    /// Processes started as a launcher would (torchrun-like and srun-like variables, no SWCCL_COMM_ID):
    /// each is one rank, rank 0 warns that -np is ignored and prints the table; -g above 1 is refused.
    func testUnderAFakeLauncher() throws {
        func launch(_ n: Int, _ args: [String], _ env: (Int) -> [String: String]) throws -> [(Int32, String)] {
            var procs: [(ChildProcess, String)] = []
            for r in 0..<n {
                let out = "/tmp/swccl-perf-launch-\(getpid())-\(r).log"
                procs.append((try Spawn.start(perf, args, env: env(r).merging(["SWCCL_SOCKET_IFNAME": "lo"]) { a, _ in a }.mapValues { Optional($0) }, output: out), out))
            }
            let deadline = Clock.nanos() + 120_000_000_000
            var codes = [Int32?](repeating: nil, count: n)
            while codes.contains(where: { $0 == nil }) && Clock.nanos() < deadline {
                for (r, p) in procs.enumerated() where codes[r] == nil { codes[r] = p.0.poll() }
                usleep(10_000)
            }
            return procs.enumerated().map { r, p in
                if codes[r] == nil { p.0.signal(SIGKILL); codes[r] = p.0.wait() }
                defer { unlink(p.1) }
                return (codes[r]!, readText(p.1))
            }
        }
        let port = freePort() - 1
        let args = ["all_reduce", "-np", "5", "-g", "1", "-b", "8", "-e", "1M", "-f", "32", "-n", "2", "-w", "1", "-T", "60"]
        let torch = try launch(3, args) { ["RANK": String($0), "WORLD_SIZE": "3", "LOCAL_RANK": String($0), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": String(port)] }
        for (r, (code, text)) in torch.enumerated() { XCTAssertEqual(code, 0, "rank \(r):\n\(text)") }
        let out0 = torch[0].1
        XCTAssertTrue(out0.contains("warning: -np 5 is ignored: torchrun started this process as rank 0 of 3"), out0)
        XCTAssertTrue(out0.contains("# swccl-perf all_reduce  nranks 3 ") && out0.contains("# launched by torchrun"), out0)
        XCTAssertTrue(out0.contains("# Out of bounds values : 0 OK"), out0)
        XCTAssertEqual(rows(out0).count, 4, out0)
        XCTAssertFalse(torch[1].1.contains("# swccl-perf") || torch[1].1.contains("warning"), "only rank 0 prints:\n\(torch[1].1)")
        // srun-like: rank 0 at the first host of the step's node list, port from the job and step ids.
        var job = 2000 + Int(getpid() % 600)
        while !portIsFree(LaunchEnvironment.slurmPort(job: String(job), step: "0")) { job += 1 }
        let slurm = try launch(2, ["broadcast", "-r", "1", "-b", "1K", "-e", "1K", "-n", "1", "-w", "0", "-T", "60"]) {
            ["SLURM_PROCID": String($0), "SLURM_NTASKS": "2", "SLURM_JOB_ID": String(job), "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "127.0.0.[1-2]"]
        }
        for (r, (code, text)) in slurm.enumerated() { XCTAssertEqual(code, 0, "rank \(r):\n\(text)") }
        XCTAssertTrue(slurm[0].1.contains("# launched by Slurm") && slurm[0].1.contains("the first host of SLURM_STEP_NODELIST=127.0.0.[1-2]"), slurm[0].1)
        XCTAssertFalse(slurm[0].1.contains("-np"), "no -np given, no warning:\n\(slurm[0].1)")
        // -g 2 under a launcher: every process says nothing but rank 0, and all exit 2 before any rendezvous.
        let twoPerProcess = try launch(2, ["all_reduce", "-g", "2"]) { ["RANK": String($0), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": String(port)] }
        XCTAssertEqual(twoPerProcess.map(\.0), [2, 2])
        XCTAssertTrue(twoPerProcess[0].1.contains("-t 1 -g 2 asks for 2 ranks per process") && twoPerProcess[0].1.contains("start 2× as many processes"), twoPerProcess[0].1)
    }

    func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }
}
