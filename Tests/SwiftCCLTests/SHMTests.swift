import Glibc
import XCTest
import SwiftCCLTesting
import SwcclVerify

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
        guard let f = fopen("/proc/self/numa_maps", "r") else { throw XCTSkip("no /proc/self/numa_maps") }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 8192)
        var found: String?
        while fgets(&line, 8192, f) != nil {
            let l = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if l.contains(t.segmentName) { found = l }
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

    /// Each rank in a PID namespace of its own (as in two containers that share /dev/shm), address-space
    /// randomisation off, so that a pid read across namespaces names another process (here: the reader
    /// itself, pid 2 in its namespace) at the very same addresses. A 4 MiB message must arrive intact
    /// and through the FIFO, never through cross-memory attach with a foreign pid (that returned the
    /// receiver's own bytes as success).
    func testPidNamespacesNeverReadMemoryByAForeignPid() throws {
        let launcher = try SHMTests.ownPidNamespace()
        let r = try Ranks.run("pull", ranks: 2, backend: "shm-cma", timeoutMs: 5000, limitS: 60, launcher: { _ in launcher })
        XCTAssertTrue(r.allPassed, r.summary)
        XCTAssertTrue(r.outputs[1].contains("pulled 0 bytes"), r.outputs[1])
    }

    /// Liveness across PID namespaces: a stopped peer is a timeout (kill(pid, 0) there named another
    /// process or none, and a live peer was reported dead within 100 ms); a killed one is seen dying
    /// (its segment lock is gone) well within the timeout, though its pid means nothing here.
    func testPidNamespacesLivenessByTheSegmentLock() throws {
        let launcher = try SHMTests.ownPidNamespace()
        let stop = try Ranks.run("stop", ranks: 3, backend: "shm", timeoutMs: 3000, limitS: 30, straggler: 1, launcher: { _ in launcher })
        for rank in [0, 2] {
            XCTAssertEqual(stop.codes[rank], 0, "rank \(rank): \(stop.summary)")
            XCTAssertFalse(stop.outputs[rank].contains("died"), "a stopped peer is not dead: \(stop.outputs[rank])")
        }
        let kill = try Ranks.run("kill", ranks: 3, backend: "shm", timeoutMs: 20_000, limitS: 60, launcher: { _ in launcher })
        for rank in [0, 2] {
            XCTAssertEqual(kill.codes[rank], 0, "rank \(rank): \(kill.summary)")
            let ms = kill.outputs[rank].split(separator: "\n").first { $0.contains("error after") }
                .flatMap { Int($0.split(separator: " ").drop { $0 != "after" }.dropFirst().first ?? "") }
            XCTAssertLessThan(try XCTUnwrap(ms, kill.outputs[rank]), 1000, "a killed peer is seen within 1 s: \(kill.outputs[rank])")
        }
    }

    /// A rank killed during init (before its peers mapped its segment) leaves the segment in /dev/shm;
    /// the next init on the host removes it (its liveness lock is gone), and leaves live ones alone.
    func testSegmentsOfDeadRanksAreReaped() throws {
        var secret = [UInt8](repeating: 0, count: 32)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        // A child process makes a one-rank-of-two transport (its segment stays: nobody maps it), tells
        // its name through a pipe, and dies.
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let pid = fork()
        if pid == 0 {
            if let t = try? SHMTransport(rank: 1, nranks: 2, secret: secret) {
                var name = Array(t.segmentName.utf8)
                _ = write(fds[1], &name, name.count)
                raise(SIGKILL)
            }
            _exit(3)
        }
        close(fds[1])
        var buf = [UInt8](repeating: 0, count: 256)
        let got = read(fds[0], &buf, 256)
        close(fds[0])
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        XCTAssertEqual(status & 0x7f, SIGKILL, "the child was killed with its segment in place")
        let dead = "/dev/shm/" + String(decoding: buf.prefix(max(0, got)), as: UTF8.self)
        XCTAssertEqual(access(dead, F_OK), 0, "the dead rank's segment \(dead) is left behind")
        let live = try SHMTransport(rank: 0, nranks: 2, secret: secret)  // any init reaps
        defer { live.close() }
        XCTAssertNotEqual(access(dead, F_OK), 0, "the dead rank's segment was removed")
        XCTAssertEqual(access("/dev/shm/" + live.segmentName, F_OK), 0, "a live rank's segment stays")
        let other = try SHMTransport(rank: 1, nranks: 2, secret: secret)  // reaps again: r0 is alive
        defer { other.close() }
        XCTAssertEqual(access("/dev/shm/" + live.segmentName, F_OK), 0, "a live rank's segment is never reaped")
    }

    /// A launcher prefix that runs a rank in a new PID namespace, ASLR off: the namespace's init is a
    /// shell (a pid 1 ignores the signals it sends itself), the rank is pid 2 in each namespace, so
    /// every rank's pid is every other's too. Skips (saying why) where namespaces cannot be made.
    static func ownPidNamespace() throws -> [String] {
        let launcher = ["/usr/bin/setarch", "-R", "/usr/bin/unshare", "-p", "-f", "--kill-child", "/bin/sh", "-c", "\"$@\"", "sh"]
        guard access(launcher[0], X_OK) == 0, access(launcher[2], X_OK) == 0,
              let p = try? Spawn.start(launcher[0], Array(launcher.dropFirst()) + ["/bin/true"], output: "/dev/null"),
              p.wait() == 0 else {
            throw XCTSkip("cannot make PID namespaces here (unshare -p needs root or user namespaces)")
        }
        return launcher
    }
}
