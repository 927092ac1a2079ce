// Set-up scenarios: a communicator from a launcher's environment; a bad interface specification.
import Glibc
import SwiftCCLTesting
import SwcclVerify

/// A communicator from the launcher's environment (SWCCL_* or torchrun-style variables set by the
/// test), then a small allreduce.
@MainActor func fromEnvironmentScenario() {
    let comm: Communicator
    do { comm = try Communicator.fromEnvironment(config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL fromEnvironment: \(error)"); exit(1) }
    check(comm.size == size && comm.rank == rank, "rank \(comm.rank) of \(comm.size), expected \(rank) of \(size)")
    var xs = [Int32](repeating: Int32(comm.rank + 1), count: 100_003)
    do { try comm.allReduce(&xs, op: .sum) } catch { check(false, "allreduce: \(error)") }
    check(xs.allSatisfy { $0 == Int32(size * (size + 1) / 2) }, "allreduce result")
    comm.destroy()
    finish()
}

/// Init must fail fast and clearly when the interface specification matches nothing.
@MainActor func badInterfaceScenario() {
    let t0 = Clock.nanos()
    do {
        _ = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs))
        check(false, "init succeeded with SWCCL_SOCKET_IFNAME=\(env("SWCCL_SOCKET_IFNAME") ?? "")")
    } catch {
        say("error as expected: \(error)")
        check(error.kind == .invalidArgument, "invalidArgument (got \(error.kind))")
        check(error.cause.contains("SWCCL_SOCKET_IFNAME"), "the message names SWCCL_SOCKET_IFNAME")
        check(Clock.nanos() - t0 < 2_000_000_000, "fails at once")
    }
    finish()
}
