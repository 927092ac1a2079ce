import Glibc
import XCTest
import SwiftCCLTesting
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
                    straggler: Int? = nil, launcher: (Int) -> [String] = { _ in [] },
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
            // `launcher(r)`: a command that runs the rank (e.g. nsenter into another mount namespace).
            let wrapper = launcher(r)
            if let tool = wrapper.first {
                procs.append(try Spawn.start(tool, Array(wrapper.dropFirst()) + [helper, scenario], env: env, output: "\(dir)/rank\(r).log"))
            } else {
                procs.append(try Spawn.start(helper, [scenario], env: env, output: "\(dir)/rank\(r).log"))
            }
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

/// A second "host" on this machine: a mount namespace with its own /dev/shm (a fresh tmpfs, so another
/// device), held open by a sleeping process. Ranks started through `launcher` run there: the library
/// sees them on another host (host identity = boot id + /dev/shm device) and reaches them over TCP,
/// while ranks inside one namespace share memory with each other. Needs root (or user namespaces);
/// nil if this machine cannot make one.
final class SecondHost {
    let holder: ChildProcess
    let pid: Int32

    init?() {
        guard access("/usr/bin/unshare", X_OK) == 0, access("/usr/bin/nsenter", X_OK) == 0,
              let p = try? Spawn.start("/usr/bin/unshare", ["-m", "--propagation", "private", "sh", "-c",
                                       "mount -t tmpfs -o size=512m swccl-second-host /dev/shm && exec sleep 600"], output: "/dev/null")
        else { return nil }
        holder = p
        pid = p.pid
        var here = stat(), there = stat()
        _ = stat("/dev/shm", &here)
        let deadline = Clock.nanos() + 5_000_000_000
        while Clock.nanos() < deadline {
            if p.poll() != nil { return nil }  // unshare or mount refused
            if stat("/proc/\(pid)/root/dev/shm", &there) == 0 && there.st_dev != here.st_dev { return }
            usleep(10_000)
        }
        p.signal(SIGKILL)
        _ = p.wait()
        return nil
    }

    var launcher: [String] { ["/usr/bin/nsenter", "-t", String(pid), "-m", "--"] }

    deinit {
        holder.signal(SIGKILL)
        _ = holder.wait()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for an ephemeral bind).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: a.sin_port))
}
