import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwiftCCL

/// A transport the tests run: a backend of `TransportRegistry` (or one of its conformance variants,
/// such as `shm-cma`), or an in-process transport of this module. Its ranks are processes, or — for
/// an in-process transport — threads of the test's own process.
public struct TestTransport: Sendable {
    public let name: String
    /// What the registry says of it (availability, reach, cost figures).
    public let backend: TransportBackend
    public let make: TransportBackend.Factory
    /// Whether its ranks are threads of one process (`InProcessRanks`) rather than processes.
    public let ranksAreThreads: Bool

    /// Why this machine cannot run it, or nil.
    public var unavailable: String? { backend.unavailable() }
}

/// The test registry: every transport the conformance suite runs, read from `TransportRegistry` (each
/// backend's conformance variants) plus the in-process ones. Adding a backend to the registry adds it
/// here; nothing names a backend by hand.
public enum TestTransports {
    public static var all: [TestTransport] {
        TransportRegistry.backends.flatMap { b in
            b.conformanceVariants.map { TestTransport(name: $0.name, backend: b, make: $0.make, ranksAreThreads: false) }
        } + [TestTransport(name: "loopback", backend: LoopbackTransport.backend, make: LoopbackTransport.backend.make, ranksAreThreads: true)]
    }

    public static func named(_ name: String) -> TestTransport? { all.first { $0.name == name } }

    /// The registry's backends that this machine can run and that `SWCCL_TRANSPORTS=auto` uses.
    public static var usable: [TransportBackend] { TransportRegistry.backends.filter { $0.unavailable() == nil && !$0.disabled() } }

    /// What a communicator uses between ranks on different hosts: the first usable backend, in the
    /// registry's order of preference, that reaches a peer on another host (verbs where there is an
    /// RDMA port, else TCP).
    public static var betweenHosts: TransportBackend {
        let elsewhere = HostIdentity(hostname: "elsewhere", bootID: "another-boot", shmDevice: HostIdentity.local.shmDevice &+ 1)
        return usable.first { $0.reaches(.local, elsewhere) } ?? TransportRegistry.backends[TransportRegistry.backends.count - 1]
    }

    /// What a communicator uses between ranks of one host (shared memory where it can run).
    public static var withinHost: TransportBackend {
        usable.first { $0.reaches(.local, .local) } ?? TransportRegistry.backends[TransportRegistry.backends.count - 1]
    }
}

/// Runs a conformance case with ranks as threads of this process (for in-process transports): each
/// thread bootstraps a `TransportTestbed` through a root in this process and runs the case; a rank
/// that kills itself crashes its endpoint, one that stops parks until every other rank is done, then
/// crashes. Each rank's exit code (0, 1 for a failed check, 137 for a killed or stopped rank) and
/// output, in rank order.
public enum InProcessRanks {
    public static func run(_ caseName: String, ranks n: Int, transport: String, timeoutMs: Int,
                           beforeStart: ((UniqueID) -> Void)? = nil) throws(CCLError) -> (codes: [Int32], outputs: [String]) {
        let id = try UniqueID.make()
        beforeStart?(id)
        final class Shared: @unchecked Sendable {
            let cond = Condition()
            var codes: [Int32?]
            var outputs: [String]
            var parked = 0
            var release = false
            init(_ n: Int) { codes = Array(repeating: nil, count: n); outputs = Array(repeating: "", count: n) }
        }
        let shared = Shared(n)
        for r in 0..<n {
            do {
                try Sys.startThread {
                    let write: @Sendable (String) -> Void = { line in shared.cond.lock(); shared.outputs[r] += line + "\n"; shared.cond.unlock() }
                    let code: Int32
                    do {
                        let tb = try TransportTestbed(backend: transport, id: id, rank: r, size: n, timeoutMs: timeoutMs)
                        let rank = ConformanceRank(testbed: tb, write: write, onFault: { fault, me in
                            if fault == .stop {
                                // A stopped rank: it neither progresses nor leaves until the others are done.
                                shared.cond.lock()
                                shared.parked += 1
                                shared.cond.broadcast()
                                while !shared.release { shared.cond.wait() }
                                shared.cond.unlock()
                            }
                            (me.testbed.transport as? LoopbackTransport)?.crash()
                        })
                        let passed = TransportConformance.run(caseName, rank)
                        code = rank.faulted != nil ? 128 + 9 : passed ? 0 : 1
                    } catch {
                        write("[rank \(r)] FAIL bootstrap: \(error)")
                        code = 1
                    }
                    shared.cond.lock(); shared.codes[r] = code; shared.cond.broadcast(); shared.cond.unlock()
                }
            } catch {
                throw CCLError.system("cannot start a thread for rank \(r)", error)
            }
        }
        // Every rank finishes, or parks (stopped); then the parked ones are let go.
        shared.cond.lock()
        while shared.codes.filter({ $0 != nil }).count + shared.parked < n { shared.cond.wait() }
        shared.release = true
        shared.cond.broadcast()
        while shared.codes.contains(where: { $0 == nil }) { shared.cond.wait() }
        let result = (shared.codes.map { $0 ?? -1 }, shared.outputs)
        shared.cond.unlock()
        return result
    }
}
