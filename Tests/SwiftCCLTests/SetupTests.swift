import Glibc
import XCTest
import Foundation
import SwiftCCL
import SwcclVerify

/// Interface choice, launcher environments, IPv6, several sockets per peer, and ids.
final class SetupTests: XCTestCase {
    let ifaces: [InterfaceSelection.Candidate] = [
        .init(name: "lo", address: "127.0.0.1", isLoopback: true),
        .init(name: "docker0", address: "172.17.0.1"),
        .init(name: "veth12", address: "169.254.3.3"),
        .init(name: "eth0", address: "192.0.2.2"),
        .init(name: "eth1", address: "fd00::2"),
        .init(name: "ib0", address: "10.1.1.1", isUp: false),
    ]

    func testDefaultSkipsLoopbackDockerAndVeth() throws {
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: ""), "eth0")
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: "", family: "AF_INET6"), "eth1")
        // Only loopback up: loopback it is.
        XCTAssertEqual(try InterfaceSelection.choose(from: [ifaces[0], ifaces[5]], spec: ""), "lo")
    }

    func testPrefixExcludeAndExactSpecifications() throws {
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: "lo"), "lo")
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: "^eth,docker,veth"), "lo")
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: "=eth1"), "eth1")
        XCTAssertEqual(try InterfaceSelection.choose(from: ifaces, spec: "docker"), "docker0")
        XCTAssertThrowsError(try InterfaceSelection.choose(from: ifaces, spec: "=eth")) { e in
            XCTAssertTrue("\(e)".contains("matches no interface"), "\(e)")
            XCTAssertTrue("\(e)".contains("eth0"), "lists the interfaces that are up: \(e)")
        }
        XCTAssertThrowsError(try InterfaceSelection.choose(from: ifaces, spec: "ib")) // ib0 is down
        XCTAssertThrowsError(try InterfaceSelection.choose(from: ifaces, spec: "", family: "AF_UNIX"))
    }

    func testLaunchEnvironments() throws {
        func detect(_ vars: [String: String]) throws -> LaunchEnvironment { try LaunchEnvironment.detect { vars[$0] } }
        XCTAssertEqual(try detect(["RANK": "3", "WORLD_SIZE": "8", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"]),
                       LaunchEnvironment(rank: 3, size: 8, rendezvous: "10.0.0.5:29501", source: "torchrun"))
        XCTAssertEqual(try detect(["SWCCL_RANK": "1", "SWCCL_SIZE": "2", "SWCCL_COMM_ID": "h:5", "RANK": "0", "WORLD_SIZE": "9"]),
                       LaunchEnvironment(rank: 1, size: 2, rendezvous: "h:5", source: "SWCCL"))
        XCTAssertEqual(try detect(["OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "SWCCL_COMM_ID": "[::1]:7"]).source, "Open MPI")
        XCTAssertEqual(try detect(["PMI_RANK": "0", "PMI_SIZE": "2", "SWCCL_COMM_ID": "a:1"]).source, "PMI")
        XCTAssertEqual(try detect(["SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SWCCL_COMM_ID": "a:1"]).rank, 5)
        XCTAssertEqual(try detect(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "::1", "MASTER_PORT": "100"]).rendezvous, "[::1]:101")
        XCTAssertThrowsError(try detect(["RANK": "0", "WORLD_SIZE": "2"]))          // no rendezvous
        XCTAssertThrowsError(try detect(["RANK": "5", "WORLD_SIZE": "2", "SWCCL_COMM_ID": "a:1"]))
        XCTAssertThrowsError(try detect([:]))
    }

    func testUniqueIDRoundTripsAndRejectsGarbage() throws {
        setenv("SWCCL_SOCKET_IFNAME", "lo", 1)
        let id = try UniqueID.make()
        XCTAssertEqual(try UniqueID(hex: id.hex), id)
        XCTAssertThrowsError(try UniqueID(bytes: [UInt8](repeating: 0, count: 128)))
        XCTAssertThrowsError(try UniqueID(bytes: [1, 2, 3]))
        let a = try UniqueID.fromCommID("127.0.0.1:4000"), b = try UniqueID.fromCommID("127.0.0.1:4001")
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a, try UniqueID.fromCommID("127.0.0.1:4000"))
    }

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

    /// torchrun-style variables: rank 0 runs the root at MASTER_PORT + 1.
    func testInitFromTorchrunEnvironment() throws {
        let port = freePort() - 1
        let r = try Ranks.run("fromenv", ranks: 3, env: ["MASTER_ADDR": "127.0.0.1", "MASTER_PORT": String(port)],
                              perRankEnv: { ["RANK": String($0), "WORLD_SIZE": "3"] })
        XCTAssertTrue(r.allPassed, r.summary)
    }

    /// SWCCL_RANK / SWCCL_SIZE / SWCCL_COMM_ID over IPv6 loopback.
    func testInitFromSwcclEnvironmentOverIPv6() throws {
        let port = freePort()
        let r = try Ranks.run("fromenv", ranks: 2, env: ["SWCCL_COMM_ID": "[::1]:\(port)", "SWCCL_SOCKET_FAMILY": "AF_INET6", "SWCCL_TRANSPORTS": "tcp"],
                              perRankEnv: { ["SWCCL_RANK": String($0), "SWCCL_SIZE": "2"] })
        XCTAssertTrue(r.allPassed, r.summary)
    }

    /// Four sockets per peer (2 x 2): large messages are striped; results stay exact.
    func testSeveralSocketsPerPeer() throws {
        let r = try Ranks.run("sizes", ranks: 2, env: ["SWCCL_NSOCKS_PERTHREAD": "2", "SWCCL_SOCKET_NTHREADS": "2"])
        XCTAssertTrue(r.allPassed, r.summary)
        let a = try Ranks.run("fromenv", ranks: 3, env: ["SWCCL_NSOCKS_PERTHREAD": "3", "SWCCL_COMM_ID": "127.0.0.1:\(freePort())", "SWCCL_TRANSPORTS": "tcp"],
                              perRankEnv: { ["SWCCL_RANK": String($0), "SWCCL_SIZE": "3"] })
        XCTAssertTrue(a.allPassed, a.summary)
    }

    /// An interface name that matches nothing: a clear error at init, at once, never a hang.
    func testUnknownInterfaceIsAnErrorAtInit() throws {
        let r = try Ranks.run("badiface", ranks: 1, env: ["SWCCL_SOCKET_IFNAME": "=nosuchif0"])
        XCTAssertTrue(r.allPassed, r.summary)
    }

    /// SWCCL_IB_HCA as NCCL_IB_HCA: prefixes, ports, `^` to exclude, `=` for exact names.
    func testHCAFilter() {
        XCTAssertTrue(HCAFilter("").admits("mlx5_0", port: 1))
        let prefix = HCAFilter("mlx5")
        XCTAssertTrue(prefix.admits("mlx5_0", port: 1) && prefix.admits("mlx5_12", port: 2))
        XCTAssertFalse(prefix.admits("rxe0", port: 1))
        let ports = HCAFilter("mlx5_0:1, mlx5_1")
        XCTAssertTrue(ports.admits("mlx5_0", port: 1) && ports.admits("mlx5_1", port: 2))
        XCTAssertFalse(ports.admits("mlx5_0", port: 2))
        let exact = HCAFilter("=mlx5_1")
        XCTAssertTrue(exact.admits("mlx5_1", port: 1))
        XCTAssertFalse(exact.admits("mlx5_10", port: 1))
        let excluded = HCAFilter("^mlx5_0:1,rxe")
        XCTAssertFalse(excluded.admits("mlx5_0", port: 1) || excluded.admits("rxe0", port: 1))
        XCTAssertTrue(excluded.admits("mlx5_0", port: 2) && excluded.admits("mlx5_1", port: 1))
        let both = HCAFilter("^=mlx5_1")
        XCTAssertTrue(both.exclude && both.exact)
        XCTAssertFalse(both.admits("mlx5_1", port: 1))
        XCTAssertTrue(both.admits("mlx5_10", port: 1))
    }

    /// The verbs probe never fails the process: with RDMA ports it lists them (each with a GID);
    /// without (no rdma-core, a kernel without RDMA, as on the CI machines here) it says why.
    func testVerbsProbeListsPortsOrSaysWhy() {
        let probed = VerbsDevices.probed
        if probed.ports.isEmpty {
            XCTAssertFalse(probed.why.isEmpty)
            XCTAssertTrue(VerbsDevices.summary.hasPrefix("ib: unavailable: "), VerbsDevices.summary)
        } else {
            XCTAssertTrue(probed.why.isEmpty)
            for p in probed.ports { XCTAssertTrue(p.port >= 1 && p.gidIndex >= 0 && p.gid.contains(":"), p.description) }
        }
        XCTAssertEqual(VerbsDevices.gidText([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 233, 0, 1]), "::ffff:10.233.0.1")
        XCTAssertEqual(VerbsDevices.gidText([0xfe, 0x80] + Array(repeating: 0, count: 13) + [1]), "fe80::1")
    }

    /// Forcing verbs where there is no RDMA port is an error that says why, at once (no hang, no crash).
    func testForcedVerbsWithoutAPortSaysWhy() throws {
        guard VerbsDevices.ports.isEmpty else { throw XCTSkip("this host has an RDMA port: ib is tested by scripts/verbs-tests.sh") }
        do {
            _ = try VerbsTransport(rank: 0, nranks: 2, secret: [UInt8](repeating: 7, count: 16))
            XCTFail("a verbs transport without an RDMA port")
        } catch {
            XCTAssertEqual(error.kind, .systemError)
            XCTAssertTrue(error.cause.contains(VerbsDevices.unavailableReason), error.description)
        }
        let t0 = Clock.nanos()
        do {
            _ = try Communicator(id: try UniqueID.make(), rank: 0, size: 2, config: .init(timeoutMs: 5000, transports: "ib"))
            XCTFail("a communicator over ib without an RDMA port")
        } catch {
            XCTAssertTrue(error.description.contains("no RDMA device"), error.description)
        }
        XCTAssertLessThan(Double(Clock.nanos() - t0) / 1e9, 2, "the error comes at once")
    }

    /// Every knob declared in the sources is listed by `Knobs.all` (so `swccl-perf --env` shows it and
    /// setting it draws no "unknown variable" warning) and documented in docs/ENVIRONMENT.md.
    func testEveryKnobIsListedAndDocumented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let listed = Set(Knobs.all.map(\.name))
        let docs = try String(contentsOf: root.appendingPathComponent("docs/ENVIRONMENT.md"), encoding: .utf8)
        var declared: Set<String> = []
        let files = FileManager.default.enumerator(atPath: root.appendingPathComponent("Sources").path)!
        let pattern = try NSRegularExpression(pattern: #"Knob\.(int|bool|string|double)\("(SWCCL_[A-Z0-9_]+)""#)
        while let f = files.nextObject() as? String {
            guard f.hasSuffix(".swift") else { continue }
            let text = try String(contentsOf: root.appendingPathComponent("Sources").appendingPathComponent(f), encoding: .utf8)
            for m in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                declared.insert(String(text[Range(m.range(at: 2), in: text)!]))
            }
        }
        XCTAssertGreaterThan(declared.count, 20, "the scan found the knobs")
        for name in declared.sorted() {
            XCTAssertTrue(listed.contains(name), "\(name) is declared but not in Knobs.all")
            XCTAssertTrue(docs.contains("`\(name)`"), "\(name) is not documented in docs/ENVIRONMENT.md")
        }
    }

    /// A bad SWCCL_DEBUG value is a warning and the default, not a hang: reading the level knob logged
    /// its parse error through the log, which needs the level (a one-time initialisation waiting on
    /// itself, at 100 % CPU).
    func testBadDebugLevelWarnsInsteadOfHanging() throws {
        for value in ["WARNING", "debug", "1"] {
            let r = try Ranks.run("allreduce", ranks: 2, timeoutMs: 5000, limitS: 60,
                                  env: ["SWCCL_DEBUG": value, "SWCCL_TEST_ALGO": "allreduce:ring"])
            XCTAssertTrue(r.allPassed, "SWCCL_DEBUG=\(value): \(r.summary)")
            for out in r.outputs {
                XCTAssertTrue(out.contains("ignoring SWCCL_DEBUG=\(value): cannot be parsed"), "SWCCL_DEBUG=\(value): \(out)")
            }
        }
    }
}
