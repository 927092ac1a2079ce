// Blame scenarios: one rank is killed (SIGKILL) or stopped (SIGSTOP) in the middle of a loop of
// collectives; every survivor must get an error that names that rank as the peer — not a neighbour
// that merely aborted because of it — and the communicator's name and the operation's sequence number.
import Glibc
import SwiftCCLTesting
import SwcclVerify

/// SWCCL_TEST_VICTIM: the rank that dies or stops; SWCCL_TEST_FAULT: kill or stop;
/// SWCCL_TEST_COLLECTIVE: allreduce, allgather, broadcast, reducescatter, sendrecv (a ring shift);
/// SWCCL_TEST_COUNT: elements per rank; SWCCL_TEST_AFTER: iterations before the fault;
/// SWCCL_TEST_DRIVE: direct (default), stream (every collective through an execution stream) or group
/// (two collectives per group).
/// A survivor prints "BLAME <ms since the fault> <error>" and, depending on its rank, exits at once,
/// destroys the communicator or aborts it first (the three ways an application goes away).
@MainActor func blameScenario() {
    let victim = Int(env("SWCCL_TEST_VICTIM") ?? "0") ?? 0
    let fault = env("SWCCL_TEST_FAULT") ?? "kill"
    let collective = env("SWCCL_TEST_COLLECTIVE") ?? "allreduce"
    let count = Int(env("SWCCL_TEST_COUNT") ?? "1024") ?? 1024
    let after = Int(env("SWCCL_TEST_AFTER") ?? "30") ?? 30
    let viaStream = env("SWCCL_TEST_DRIVE") == "stream"
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs, name: "blame")) }
    catch { say("FAIL init: \(error)"); exit(1) }
    let send = UnsafeMutableRawPointer.allocate(byteCount: count * size * 4 + 64, alignment: 64)
    let recv = UnsafeMutableRawPointer.allocate(byteCount: count * size * 4 + 64, alignment: 64)
    memset(send, 1, count * size * 4)
    var stream: ExecutionStream?
    if viaStream {
        do { stream = try ExecutionStream() } catch { say("FAIL stream: \(error)"); exit(1) }
    }
    func once() throws(CCLError) {
        switch collective {
        case "allgather": try comm.allGather(send: send, recv: recv, sendCount: count, type: .float32)
        case "broadcast": try comm.broadcast(send: send, recv: recv, count: count, type: .float32, root: 0)
        case "reducescatter": try comm.reduceScatter(send: send, recv: recv, recvCount: count, type: .float32, op: .sum)
        case "sendrecv":
            try comm.sendRecv(send: send, count: count, type: .float32, to: (rank + 1) % size,
                              recv: recv, recvCount: count, from: (rank + size - 1) % size)
        default: try comm.allReduce(send: send, recv: recv, count: count, type: .float32, op: .sum)
        }
    }
    var i = 0
    // The fault time, in the monotonic clock every process shares, is written by the victim into a
    // file the survivors read (so they can say how long detection took).
    let stamp = "/tmp/swccl-blame-\(id.hex.suffix(32))"
    while true {
        if rank == victim && i == after {
            let t = Clock.nanos()
            if let f = fopen(stamp, "w") { fputs("\(t)\n", f); fclose(f) }
            say("raising SIG\(fault == "stop" ? "STOP" : "KILL") at iteration \(i)")
            raise(fault == "stop" ? SIGSTOP : SIGKILL)
        }
        do {
            if let stream {
                try stream.submit { () throws(CCLError) in try once() }
                try stream.synchronize()
            } else if env("SWCCL_TEST_DRIVE") == "group" {
                Group.start()
                do { try once(); try once() } catch { _ = try? Group.end(); throw error }
                try Group.end()
            } else {
                try once()
            }
        } catch {
            let now = Clock.nanos()
            var faultAt: UInt64 = 0
            if let f = fopen(stamp, "r") {
                var line = [CChar](repeating: 0, count: 64)
                if fgets(&line, 64, f) != nil { faultAt = line.withUnsafeBufferPointer { UInt64(String(cString: $0.baseAddress!).filter(\.isNumber)) } ?? 0 }
                fclose(f)
            }
            let ms = faultAt > 0 && now > faultAt ? Int((now - faultAt) / 1_000_000) : -1
            say("BLAME \(ms) \(error)")
            switch rank % 3 {
            case 0: exit(0)             // goes away at once
            case 1: comm.destroy()      // closes cleanly
            default: comm.abort()       // aborts
            }
            exit(0)
        }
        i += 1
        if i > 1_000_000 { say("FAIL no error after \(i) iterations"); exit(1) }
    }
}

/// Two named communicators called in opposite orders (rank 0: A then B; the others: B then A): each
/// rank's timeout must name the communicator it was waiting in and the operation's sequence number.
@MainActor func crossCommunicatorScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    var a: Communicator?, b: Communicator?
    do {
        a = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, name: "A"))
        b = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, name: "B"))
    } catch { say("FAIL split: \(error)"); exit(1) }
    guard let a, let b else { say("FAIL split gave no communicator"); exit(1) }
    var xs = [Float](repeating: 1, count: 16)
    do { try a.allReduce(&xs, op: .sum); try b.allReduce(&xs, op: .sum) } catch { say("FAIL warm-up: \(error)"); exit(1) }
    let first = rank == 0 ? a : b
    do {
        try first.allReduce(&xs, op: .sum)
        check(false, "the crossed allreduce succeeded")
    } catch {
        say("error as expected: \(error)")
        let want = "allreduce #2 on comm '\(rank == 0 ? "A" : "B")'"
        check(error.description.hasPrefix(want), "the error starts with \"\(want)\": \(error)")
    }
    exit(failures == 0 ? 0 : 1)
}

/// Shrink with disagreeing exclusion lists: rank 3 leaves; ranks 0 and 1 exclude [3], rank 2
/// excludes [1] (SWCCL_TEST_SHRINK_BAD=1; otherwise everyone excludes [3] and the shrink works).
/// Every survivor's error is labelled `shrink`, numbers the caller by its rank here, and says which
/// list this rank passed.
@MainActor func shrinkLabelScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs, name: "parent")) }
    catch { say("FAIL init: \(error)"); exit(1) }
    var xs = [Float](repeating: 1, count: 16)
    do { try comm.allReduce(&xs, op: .sum) } catch { say("FAIL warm-up: \(error)"); exit(1) }
    // SWCCL_TEST_SHRINK_BAD=2 (5 ranks): rank 3 leaves; ranks 0-2 exclude [3], rank 4 excludes [2]. The
    // survivors' new numbers do not collide (0, 1, 2 and 3), so the rendezvous itself succeeds: the
    // lists must be compared to see the disagreement, on every survivor.
    let variant = env("SWCCL_TEST_SHRINK_BAD") ?? "0"
    let bad = variant != "0"
    let leaving = variant == "2" ? size - 2 : size - 1
    if rank == leaving { exit(0) }
    let excluded = variant == "1" && rank == 2 ? [1] : variant == "2" && rank == size - 1 ? [size - 3] : [leaving]
    do {
        let small = try comm.shrink(excluding: excluded, abortingInFlight: true)
        check(!bad, "a shrink with disagreeing lists succeeded")
        do { try small.allReduce(&xs, op: .sum) } catch { check(false, "allreduce after the shrink: \(error)") }
        small.destroy()
    } catch {
        say("error as expected: \(error)")
        check(bad, "the shrink failed: \(error)")
        check(error.description.hasPrefix("shrink on comm 'parent': "), "labelled shrink: \(error)")
        check(error.rank == rank, "numbers this rank as in the parent (\(rank)), not \(String(describing: error.rank))")
        check(error.cause.contains("this rank excluded \(excluded)") || error.cause.contains("excluded \(excluded); every survivor"),
              "says which list this rank passed: \(error)")
        if variant == "2" {
            check(error.cause.contains("survivors passed different exclusion lists"), "reported as different lists: \(error)")
            check(error.kind == .invalidUsage, "an invalid usage (got \(error.kind))")
        }
    }
    comm.destroy()
    finish()
}
