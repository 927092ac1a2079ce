import Glibc
import XCTest
import Foundation
import SwiftCCLTesting
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
        XCTAssertEqual(try detect(["RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"]),
                       LaunchEnvironment(rank: 3, size: 8, rendezvous: "10.0.0.5:29501", source: "torchrun", origin: "MASTER_ADDR and MASTER_PORT + 1", localRank: 1))
        XCTAssertEqual(try detect(["SWCCL_RANK": "1", "SWCCL_SIZE": "2", "SWCCL_COMM_ID": "h:5", "RANK": "0", "WORLD_SIZE": "9"]),
                       LaunchEnvironment(rank: 1, size: 2, rendezvous: "h:5", source: "SWCCL", origin: "SWCCL_COMM_ID"))
        XCTAssertEqual(try detect(["OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "SWCCL_COMM_ID": "[::1]:7"]).source, "Open MPI")
        XCTAssertEqual(try detect(["PMI_RANK": "0", "PMI_SIZE": "2", "SWCCL_COMM_ID": "a:1"]).source, "PMI")
        XCTAssertEqual(try detect(["SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0", "SWCCL_COMM_ID": "a:1"]).rank, 5)
        XCTAssertEqual(try detect(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "::1", "MASTER_PORT": "100"]).rendezvous, "[::1]:101")
        XCTAssertEqual(try detect(["RANK": " 1 ", "WORLD_SIZE": "2", "SWCCL_COMM_ID": " a:1 ", "MASTER_ADDR": ""]).rendezvous, "a:1", "spaces and empty values")
        XCTAssertThrowsError(try detect(["RANK": "5", "WORLD_SIZE": "2", "SWCCL_COMM_ID": "a:1"]))
    }

    /// Slurm's compressed host lists, as srun sets SLURM_STEP_NODELIST.
    func testSlurmHostlistExpansion() throws {
        XCTAssertEqual(try SlurmHostlist.expand("node[01-04,07],gpu3"), ["node01", "node02", "node03", "node04", "node07", "gpu3"])
        XCTAssertEqual(try SlurmHostlist.expand("n[8-11]"), ["n8", "n9", "n10", "n11"])
        XCTAssertEqual(try SlurmHostlist.expand("a[098-101]"), ["a098", "a099", "a100", "a101"], "the lower end's width pads")
        XCTAssertEqual(try SlurmHostlist.expand("rack[1-2]-n[1-2]"), ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"])
        XCTAssertEqual(try SlurmHostlist.expand("x[1,3]y,z"), ["x1y", "x3y", "z"])
        XCTAssertEqual(try SlurmHostlist.expand("10.1.0.[7-8]"), ["10.1.0.7", "10.1.0.8"])
        XCTAssertEqual(try SlurmHostlist.expand("single"), ["single"])
        XCTAssertEqual(try SlurmHostlist.expand("big[0000001-9999999]", limit: 2), ["big0000001", "big0000002"], "a limit stops the expansion")
        for bad in ["node[01-04", "node]1[", "node[4-1]", "node[a-b]", "node[1-]", "", "n[[1]]"] {
            XCTAssertThrowsError(try SlurmHostlist.expand(bad), bad)
        }
    }

    /// Under srun (no SWCCL_COMM_ID, no MASTER_ADDR): the first host of the step's node list and a
    /// port from the job and step ids; outside a step (the batch script) nothing is launched.
    func testSlurmRendezvous() throws {
        func detect(_ vars: [String: String]) throws -> LaunchEnvironment { try LaunchEnvironment.detect { vars[$0] } }
        let step = ["SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "2",
                    "SLURM_STEP_NODELIST": "gpu[07-08],cpu1", "SLURM_JOB_NODELIST": "gpu[01-08],cpu1"]
        let e = try detect(step)
        let port = 20000 + 16 * (4242 % 625) + 2
        XCTAssertEqual(e, LaunchEnvironment(rank: 3, size: 8, rendezvous: "gpu07:\(port)", source: "Slurm",
                                            origin: "the first host of SLURM_STEP_NODELIST=gpu[07-08],cpu1 and port \(port) from SLURM_JOB_ID=4242, SLURM_STEP_ID=2", localRank: 1))
        XCTAssertEqual(LaunchEnvironment.slurmPort(job: "4242", step: "2"), port)
        XCTAssertNotEqual(LaunchEnvironment.slurmPort(job: "4242", step: "3"), port, "two steps of one job")
        XCTAssertNotEqual(LaunchEnvironment.slurmPort(job: "4243", step: "2"), port, "the next job")
        XCTAssertTrue((20000..<30000).contains(LaunchEnvironment.slurmPort(job: "99999999", step: "15")))
        // Without the step's list, the job's; SLURM_NODELIST last.
        var jobOnly = step; jobOnly["SLURM_STEP_NODELIST"] = nil
        XCTAssertEqual(try detect(jobOnly).rendezvous, "gpu01:\(port)")
        jobOnly["SLURM_JOB_NODELIST"] = nil; jobOnly["SLURM_NODELIST"] = "n9"
        XCTAssertEqual(try detect(jobOnly).rendezvous, "n9:\(port)")
        // Precedence: SWCCL_COMM_ID, then MASTER_ADDR/MASTER_PORT, then the launcher's hosts.
        var explicit = step; explicit["MASTER_ADDR"] = "m"; explicit["MASTER_PORT"] = "7"
        XCTAssertEqual(try detect(explicit).rendezvous, "m:8")
        explicit["SWCCL_COMM_ID"] = "c:9"
        XCTAssertEqual(try detect(explicit).rendezvous, "c:9")
        // Rank 0 on another node than the list's first: an error at once, naming both and what to set.
        var zero = step; zero["SLURM_PROCID"] = "0"; zero["SLURMD_NODENAME"] = "gpu08"
        XCTAssertThrowsError(try detect(zero)) { e in
            let t = "\(e)"
            XCTAssertTrue(t.contains("rank 0 runs on gpu08 (SLURMD_NODENAME), not on gpu07") && t.contains("SWCCL_COMM_ID=gpu08:\(port)"), t)
        }
        zero["SLURMD_NODENAME"] = "gpu07"
        XCTAssertEqual(try detect(zero).rank, 0)
        // The batch script has SLURM_PROCID=0 and SLURM_NTASKS but no step: not a launched rank.
        let batch = ["SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[01-08]"]
        XCTAssertFalse(LaunchEnvironment.isLaunched { batch[$0] })
        XCTAssertTrue(LaunchEnvironment.isLaunched { step[$0] })
        XCTAssertThrowsError(try detect(batch)) { e in
            XCTAssertTrue("\(e)".contains("inside Slurm job 4242 but not a task of an srun step: start the ranks with srun"), "\(e)")
        }
        var extern = step; extern["SLURM_STEP_ID"] = "4294967292"
        XCTAssertFalse(LaunchEnvironment.isLaunched { extern[$0] }, "the extern step")
        // MPICH's mpiexec under Slurm (PMI_RANK): Slurm's hosts; PMIx under srun: the step's size.
        var pmi = step; pmi["SLURM_PROCID"] = "0"; pmi["PMI_RANK"] = "6"; pmi["PMI_SIZE"] = "8"
        XCTAssertEqual(try detect(pmi).source, "PMI")
        XCTAssertEqual(try detect(pmi).rank, 6)
        XCTAssertEqual(try detect(pmi).rendezvous, "gpu07:\(port)")
        var pmix = step; pmix["PMIX_RANK"] = "3"; pmix["PMIX_NAMESPACE"] = "slurm.pmix.4242.2"
        XCTAssertEqual(try detect(pmix).source, "PMIx")
        XCTAssertEqual(try detect(pmix).size, 8)
        XCTAssertEqual(try detect(pmix).rendezvous, "gpu07:\(port)")
    }

    /// Under Open MPI's mpirun: mpirun's host (ORTE's contact URI before 5.0, PRRTE's namespace from
    /// 5.0) and a port from the job id.
    func testOpenMPIRendezvous() throws {
        func detect(_ vars: [String: String]) throws -> LaunchEnvironment { try LaunchEnvironment.detect { vars[$0] } }
        let v4 = ["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                  "OMPI_MCA_orte_hnp_uri": "3236233216.0;tcp://127.0.0.1,172.20.102.82,10.0.0.1:33559", "OMPI_MCA_ess_base_jobid": "3236233217"]
        let e = try detect(v4)
        let port = LaunchEnvironment.derivedPort(hashing: "3236233217")
        XCTAssertEqual(e.rendezvous, "172.20.102.82:\(port)", "the first address other than loopback")
        XCTAssertEqual(e.localRank, 1)
        XCTAssertTrue(e.origin.contains("OMPI_MCA_orte_hnp_uri") && e.origin.contains("OMPI_MCA_ess_base_jobid=3236233217"), e.origin)
        XCTAssertTrue((20000..<30000).contains(port))
        XCTAssertEqual(LaunchEnvironment.hnpHost("1.0;tcp://172.20.102.82:33559;tcp://172.40.102.82:33559"), "172.20.102.82", "Open MPI 1.x form")
        XCTAssertEqual(LaunchEnvironment.hnpHost("1.0;tcp://127.0.0.1:5"), "127.0.0.1", "one node: loopback only")
        XCTAssertEqual(LaunchEnvironment.hnpHost("1.0;tcp6://[fe80::1],[2001:db8::5]:5"), "fe80::1")
        XCTAssertNil(LaunchEnvironment.hnpHost("1.0"))
        // Open MPI 5 (PRRTE): the host is in the namespace.
        let v5 = ["OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2", "PMIX_RANK": "0", "PMIX_NAMESPACE": "prterun-login-node-2-12345@1"]
        XCTAssertEqual(try detect(v5).rendezvous, "login-node-2:\(LaunchEnvironment.derivedPort(hashing: "prterun-login-node-2-12345@1"))")
        XCTAssertEqual(LaunchEnvironment.prrteHost("mpirun-h-1@0"), "h")
        XCTAssertNil(LaunchEnvironment.prrteHost("slurm.pmix.4242.2"))
        XCTAssertNil(LaunchEnvironment.prrteHost("prterun-h-x@1"))
        // mpirun inside a Slurm job: Open MPI's variables win over the stale Slurm ones.
        var inJob = v4; inJob["SLURM_PROCID"] = "0"; inJob["SLURM_NTASKS"] = "2"; inJob["SLURM_JOB_ID"] = "7"; inJob["SLURM_STEP_ID"] = "0"
        inJob["SLURM_STEP_NODELIST"] = "other"
        XCTAssertEqual(try detect(inJob).rank, 1)
        XCTAssertEqual(try detect(inJob).rendezvous, "172.20.102.82:\(port)")
    }

    /// Where no rendezvous can be found, the error says exactly which variables to set.
    func testLauncherErrorsNameTheVariablesToSet() {
        func message(_ vars: [String: String]) -> String {
            do { _ = try LaunchEnvironment.detect { vars[$0] }; return "no error" } catch { return "\(error)" }
        }
        let none = message([:])
        XCTAssertTrue(none.contains("no launcher environment found") && none.contains("set SWCCL_RANK, SWCCL_SIZE and SWCCL_COMM_ID=host:port"), none)
        let torch = message(["RANK": "0", "WORLD_SIZE": "2"])
        XCTAssertTrue(torch.contains("torchrun gave rank 0 of 2 but no rendezvous address") && torch.contains("set SWCCL_COMM_ID=host:port") && torch.contains("MASTER_ADDR and MASTER_PORT"), torch)
        let mpich = message(["PMI_RANK": "1", "PMI_SIZE": "4"])
        XCTAssertTrue(mpich.contains("PMI gave rank 1 of 4") && mpich.contains("mpiexec -genv SWCCL_COMM_ID"), mpich)
        let ompi = message(["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"])
        XCTAssertTrue(ompi.contains("Open MPI gave rank 1 of 4") && ompi.contains("OMPI_MCA_orte_hnp_uri"), ompi)
        let half = message(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"])
        XCTAssertTrue(half.contains("MASTER_ADDR=h is set but MASTER_PORT is not"), half)
        let badPort = message(["RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "70000"])
        XCTAssertTrue(badPort.contains("MASTER_PORT is \"70000\""), badPort)
        let pmix = message(["PMIX_RANK": "2", "PMIX_NAMESPACE": "prterun-h-1@1"])
        XCTAssertTrue(pmix.contains("PMIX_RANK") && pmix.contains("set SWCCL_SIZE"), pmix)
        let onlyRank = message(["SWCCL_RANK": "1"])
        XCTAssertTrue(onlyRank.contains("SWCCL_RANK and SWCCL_SIZE must be set together"), onlyRank)
        let badList = message(["SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "n[1-"])
        XCTAssertTrue(badList.contains("SLURM_STEP_NODELIST=n[1-") && badList.contains("set SWCCL_COMM_ID=host:port"), badList)
        XCTAssertEqual(try? LaunchEnvironment.detect { ["PMIX_RANK": "2", "SWCCL_SIZE": "4", "SWCCL_COMM_ID": "a:1"][$0] }.size, 4, "SWCCL_SIZE completes PMIX_RANK")
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

    /// Whether nothing listens on 127.0.0.1:`port` now (a derived port must be free for rank 0).
    func portIsFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
    }

    /// srun-like variables only (no SWCCL_COMM_ID, no MASTER_ADDR): three rank processes find rank 0 at
    /// the first host of a compressed SLURM_STEP_NODELIST and a port from the job and step ids, and run
    /// an allreduce.
    func testInitFromSlurmEnvironment() throws {
        var job = 1000 + Int(getpid() % 600)
        while !portIsFree(LaunchEnvironment.slurmPort(job: String(job), step: "3")) { job += 1 }
        let r = try Ranks.run("fromenv", ranks: 3, env: ["SLURM_JOB_ID": String(job), "SLURM_STEP_ID": "3", "SLURM_NTASKS": "3",
                                                         "SLURM_STEP_NODELIST": "127.0.0.[1-3]", "SLURM_JOB_NODELIST": "127.0.0.[1-9]"],
                              perRankEnv: { ["SLURM_PROCID": String($0), "SLURM_LOCALID": String($0), "SLURMD_NODENAME": "127.0.0.\($0 + 1)"] })
        XCTAssertTrue(r.allPassed, r.summary)
    }

    /// mpirun-like variables only: Open MPI 4's contact URI of mpirun, and Open MPI 5's namespace.
    func testInitFromOpenMPIEnvironment() throws {
        var jobid = 3_236_233_217 + Int(getpid() % 1000)
        while !portIsFree(LaunchEnvironment.derivedPort(hashing: String(jobid))) { jobid += 1 }
        let v4 = try Ranks.run("fromenv", ranks: 3, env: ["OMPI_COMM_WORLD_SIZE": "3", "OMPI_MCA_ess_base_jobid": String(jobid),
                                                          "OMPI_MCA_orte_hnp_uri": "\(jobid - 1).0;tcp://127.0.0.1:1"],
                               perRankEnv: { ["OMPI_COMM_WORLD_RANK": String($0), "OMPI_COMM_WORLD_LOCAL_RANK": String($0)] })
        XCTAssertTrue(v4.allPassed, v4.summary)
        var pid = Int(getpid())
        while !portIsFree(LaunchEnvironment.derivedPort(hashing: "prterun-127.0.0.1-\(pid)@1")) { pid += 1 }
        let v5 = try Ranks.run("fromenv", ranks: 2, env: ["OMPI_COMM_WORLD_SIZE": "2", "PMIX_NAMESPACE": "prterun-127.0.0.1-\(pid)@1"],
                               perRankEnv: { ["OMPI_COMM_WORLD_RANK": String($0), "PMIX_RANK": String($0)] })
        XCTAssertTrue(v5.allPassed, v5.summary)
    }

    /// A process with no launcher variables fails at once with the variables to set.
    func testNoLauncherEnvironmentSaysWhatToSet() throws {
        let r = try Ranks.run("fromenv", ranks: 1, limitS: 30)
        XCTAssertEqual(r.codes[0], 1, r.summary)
        XCTAssertTrue(r.outputs[0].contains("no launcher environment found") && r.outputs[0].contains("set SWCCL_RANK, SWCCL_SIZE and SWCCL_COMM_ID=host:port"), r.outputs[0])
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
