import Glibc
import XCTest
import SwiftCCL
import SwcclVerify

/// Spawns `n` processes of the swccl-test-rank helper (built beside the test bundle) running `scenario`,
/// waits for all of them (killing every one after `limitS` seconds), and returns exit codes and output.
struct RankRun {
    var codes: [Int32]
    var outputs: [String]
    var seconds: Double

    var allPassed: Bool { codes.allSatisfy { $0 == 0 } }
    var summary: String {
        zip(codes.indices, codes).map { "rank \($0.0) exit \($0.1):\n\(outputs[$0.0])" }.joined(separator: "\n")
    }
}

enum Ranks {
    static var helper: String {
        // The test binary lives in .build/<config>/SwiftCCLPackageTests.xctest; the helper beside it.
        var dir = Spawn.selfExecutable
        while let slash = dir.lastIndex(of: "/") {
            dir = String(dir[..<slash])
            if access(dir + "/swccl-test-rank", X_OK) == 0 { return dir + "/swccl-test-rank" }
        }
        return "swccl-test-rank"
    }

    static func run(_ scenario: String, ranks n: Int, backend: String = "tcp", timeoutMs: Int = 20_000, limitS: Double = 240,
                    env extra: [String: String?] = [:], perRankEnv: ((Int) -> [String: String]) = { _ in [:] },
                    straggler: Int? = nil,
                    beforeSpawn: ((UniqueID) -> Void)? = nil) throws -> RankRun {
        setenv("SWCCL_SOCKET_IFNAME", "lo", 1)  // tests stay on loopback
        let id = try UniqueID.make()
        beforeSpawn?(id)
        let dir = "/tmp/swccl-test-\(getpid())-\(scenario)-\(n)-\(Clock.nanos() % 1_000_000)"
        mkdir(dir, 0o755)
        var procs: [ChildProcess] = []
        let t0 = Clock.nanos()
        for r in 0..<n {
            var env: [String: String?] = [
                "SWCCL_TEST_RANK": String(r), "SWCCL_TEST_SIZE": String(n), "SWCCL_TEST_ID": id.hex,
                "SWCCL_TEST_BACKEND": backend, "SWCCL_TEST_TIMEOUT_MS": String(timeoutMs), "SWCCL_SOCKET_IFNAME": "lo",
            ]
            for (k, v) in extra { env[k] = v }
            for (k, v) in perRankEnv(r) { env[k] = v }
            procs.append(try Spawn.start(helper, [scenario], env: env, output: "\(dir)/rank\(r).log"))
        }
        var codes = [Int32?](repeating: nil, count: n)
        let limit = t0 + UInt64(limitS * 1e9)
        while codes.contains(where: { $0 == nil }) {
            for (r, p) in procs.enumerated() where codes[r] == nil { codes[r] = p.poll() }
            // A stopped rank (SIGSTOP scenario) never exits by itself: end it once all others are done.
            if Clock.nanos() > limit { break }
            if let s = straggler, codes.indices.allSatisfy({ $0 == s || codes[$0] != nil }) { break }
            usleep(5_000)
        }
        for (r, p) in procs.enumerated() where codes[r] == nil {
            p.signal(SIGCONT); p.signal(SIGKILL)
            codes[r] = p.wait()
        }
        let outputs = (0..<n).map { r -> String in
            guard let f = fopen("\(dir)/rank\(r).log", "r") else { return "" }
            defer { fclose(f) }
            var text = ""
            var line = [CChar](repeating: 0, count: 4096)
            while fgets(&line, 4096, f) != nil { text += line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
            return text
        }
        let run = RankRun(codes: codes.map { $0 ?? -1 }, outputs: outputs, seconds: Double(Clock.nanos() - t0) / 1e9)
        if run.allPassed {  // keep the logs of failed runs for inspection
            for r in 0..<n { unlink("\(dir)/rank\(r).log") }
            rmdir(dir)
        }
        return run
    }
}
