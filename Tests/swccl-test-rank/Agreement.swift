// Argument agreement: ranks that call one operation with different arguments get an error naming
// the difference (docs/RELIABILITY.md, "Argument agreement"), never wrong data or the timeout.
import Glibc
import SwiftCCLTesting
import SwcclVerify

/// Ranks disagree on the count (or, with SWCCL_TEST_MISMATCH, on the collective or the forced
/// algorithm): every rank gets an error that names the mismatch (no hang, no wrong data reported as
/// success), and the communicator is broken afterwards.
@MainActor func mismatchScenario() {
    let mismatch = env("SWCCL_TEST_MISMATCH") ?? "count"
    let algorithm = mismatch == "algorithm" ? (rank == 1 ? "allreduce:ring" : "allreduce:tree") : nil
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs, algorithm: algorithm)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    let base = Int(env("SWCCL_TEST_COUNT") ?? "1000") ?? 1000
    let otherCollective = mismatch == "collective"
    var xs = [Float](repeating: 1, count: base * (rank == 1 && mismatch == "count" ? 2 : 1))
    let t0 = Clock.nanos()
    do {
        if otherCollective && rank == 1 {
            // Rank 1 broadcasts while the others allreduce the same count.
            try xs.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: base, type: .float32, root: 0) } }.get()
        } else {
            try comm.allReduce(&xs, op: .sum)
        }
        check(false, "allreduce with mismatched counts succeeded")
    } catch {
        say("error as expected: \(error)")
        check(Clock.nanos() - t0 < UInt64(timeoutMs) * 2_000_000, "error within twice the timeout")
        if error.kind != .timeout {
            check(error.cause.contains("size mismatch") || error.cause.contains("expected another size") || error.cause.contains("rank"),
                  "the error explains the mismatch: \(error.cause)")
        }
        check(comm.asyncError != nil, "the communicator is marked broken")
    }
    do { try comm.allReduce(&xs, op: .sum); check(false, "a broken communicator accepted another collective") }
    catch { check(error.cause.contains("broken"), "later calls say the communicator is broken: \(error)") }
    comm.abort()
    finish()
}

/// One call of the `disagree` scenario: what this rank passes.
struct DisagreeCall {
    var coll = "allreduce"
    var count = 1000
    var type = DataType.float32
    var op = ReduceOp.sum
    var root = 0
    var preMul = false
    var algo: String? = nil
}

/// A case: every rank's call; `all`: every rank must fail with the mismatch (else only `culprit` must,
/// and the others either fail the same way or succeed with the result their own arguments promise);
/// `word`: what the culprit's error must name.
struct DisagreeCase {
    let name: String
    let all: Bool
    let culprit: Int
    let word: String
    let call: (Int, Int) -> DisagreeCall
}

@MainActor func disagreeCases(_ n: Int, shm: Bool) -> [DisagreeCase] {
    var cases: [DisagreeCase] = []
    let last = n - 1
    let other = n > 2 ? 1 : 0  // the root the last rank names when the others name 0
    func c(_ name: String, all: Bool, culprit: Int = n - 1, _ word: String, _ f: @escaping (Int, Int) -> DisagreeCall) {
        cases.append(DisagreeCase(name: name, all: all, culprit: culprit, word: word, call: f))
    }
    let bcastAlgos = ["chain", "binomial"] + (shm ? ["staged"] : [])
    for a in bcastAlgos {
        c("broadcast root=self \(a)", all: true, "root") { r, _ in DisagreeCall(coll: "broadcast", root: r, algo: "broadcast:\(a)") }
        c("broadcast one root \(a)", all: false, "root") { r, _ in DisagreeCall(coll: "broadcast", root: r == last ? (n > 2 ? other : 1) : 0, algo: "broadcast:\(a)") }
        c("broadcast one count \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "broadcast", count: r == last ? 1001 : 1000, algo: "broadcast:\(a)") }
        c("broadcast one count 0 \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "broadcast", count: r == last ? 0 : 1000, algo: "broadcast:\(a)") }
    }
    for a in ["chain", "binomial"] {
        c("reduce root=self \(a)", all: true, "root") { r, _ in DisagreeCall(coll: "reduce", root: r, algo: "reduce:\(a)") }
        c("reduce one root \(a)", all: false, "root") { r, _ in DisagreeCall(coll: "reduce", root: r == last ? (n > 2 ? other : 1) : 0, algo: "reduce:\(a)") }
        c("reduce one op \(a)", all: false, "op") { r, _ in DisagreeCall(coll: "reduce", op: r == last ? .max : .sum, algo: "reduce:\(a)") }
        c("reduce one count 0 \(a)", all: false, "count") { r, _ in DisagreeCall(coll: "reduce", count: r == last ? 0 : 1000, algo: "reduce:\(a)") }
    }
    for coll in ["gather", "scatter"] {
        c("\(coll) root=self", all: true, "root") { r, _ in DisagreeCall(coll: coll, root: r) }
        c("\(coll) one root", all: false, "root") { r, _ in DisagreeCall(coll: coll, root: r == last ? (n > 2 ? other : 1) : 0) }
        c("\(coll) one count 0", all: false, "count") { r, _ in DisagreeCall(coll: coll, count: r == last ? 0 : 1000) }
    }
    let arAlgos = ["ring", "tree", "recdbl", "rabenseifner"] + (shm ? ["oneshot", "staged"] : [])
    for a in arAlgos {
        c("allreduce count 0 on rank 0 \(a)", all: true, culprit: 0, "count") { r, _ in DisagreeCall(count: r == 0 ? 0 : 1000, algo: "allreduce:\(a)") }
        c("allreduce count 0 on the others \(a)", all: true, culprit: 0, "count 0") { r, _ in DisagreeCall(count: r == 0 ? 1000 : 0, algo: "allreduce:\(a)") }
        c("allreduce count \(a)", all: true, "count") { r, _ in DisagreeCall(count: r == last ? 1001 : 1000, algo: "allreduce:\(a)") }
    }
    c("allreduce type", all: true, "type") { r, _ in DisagreeCall(type: r == last ? .int32 : .float32) }
    c("allreduce op", all: true, "op") { r, _ in DisagreeCall(op: r == last ? .max : .sum) }
    c("allreduce premulsum", all: true, "pre-multiplied") { r, _ in DisagreeCall(preMul: r == last) }
    c("allreduce algorithm", all: true, "algorithm") { r, _ in DisagreeCall(algo: r == last ? "allreduce:ring" : (shm ? "allreduce:oneshot" : "allreduce:recdbl")) }
    for a in ["ring", "recdbl"] + (shm ? ["staged"] : []) {
        c("allgather count \(a)", all: true, "count") { r, _ in DisagreeCall(coll: "allgather", count: r == last ? 1001 : 1000, algo: "allgather:\(a)") }
    }
    for a in ["ring", "halving"] + (shm ? ["staged"] : []) {
        c("reducescatter count \(a)", all: true, "count") { r, _ in DisagreeCall(coll: "reducescatter", count: r == last ? 1001 : 1000, algo: "reducescatter:\(a)") }
    }
    for coll in ["allgather", "reducescatter", "alltoall"] {
        c("\(coll) count 0 on rank 0", all: true, culprit: 0, "count") { r, _ in DisagreeCall(coll: coll, count: r == 0 ? 0 : 1000) }
    }
    c("alltoall count", all: true, "count") { r, _ in DisagreeCall(coll: "alltoall", count: r == last ? 1001 : 1000) }
    c("barrier against allreduce of 0", all: true, culprit: 0, "barrier") { r, _ in DisagreeCall(coll: r == 0 ? "barrier" : "allreduce", count: 0) }
    c("group in another order", all: true, culprit: 0, "broadcast") { r, _ in DisagreeCall(coll: r == 0 ? "group-ab" : "group-ba") }
    c("send/recv count (eager)", all: false, culprit: 1, "size mismatch") { r, _ in DisagreeCall(coll: r == 0 ? "send" : r == 1 ? "recv" : "none", count: r == 1 ? 101 : 100) }
    c("send/recv count (large)", all: true, culprit: 1, "size mismatch") { r, _ in DisagreeCall(coll: r == 0 ? "send" : r == 1 ? "recv" : "none", count: r == 1 ? (1 << 20) + 1 : 1 << 20) }
    return cases
}

/// Ranks that pass different arguments to one call (root, count, type, op, pre-multiplied sum,
/// algorithm, collective, order inside a group; send/recv sizes): each case runs on a communicator
/// split off for it. The disagreeing rank must get an invalidUsage error naming the argument, every
/// rank of an `all` case must get one, and a rank that returns success must hold the result its own
/// arguments promise (never wrong data). SWCCL_TEST_CASES: only cases whose name contains it.
@MainActor func disagreeScenario() {
    let comm: Communicator
    // The parent waits (barrier) while a peer may still be in a case: three times the cases' timeout.
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: 3 * timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let n = size
    let filter = env("SWCCL_TEST_CASES")
    let cases = disagreeCases(n, shm: comm.transportName == "shm").filter { filter == nil || $0.name.contains(filter!) }
    let maxBytes = (1 << 20) * 8 * max(n, 1) + 4096
    let send = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let recv = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    var ran = 0
    for kase in cases {
        let call = kase.call(rank, n)
        let sub: Communicator
        do { sub = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: call.algo))! }
        catch { say("FAIL split for \(kase.name): \(error)"); exit(1) }
        // Block j of this rank's input: 100 (rank + 1) + j in every element.
        let blocks = call.coll == "allreduce" || call.coll == "broadcast" || call.coll == "reduce" || call.coll == "gather" ? 1 : n
        for j in 0..<blocks {
            for i in 0..<call.count {
                let v = 100 * (rank + 1) + j
                if call.type == .int32 { send.storeBytes(of: Int32(v), toByteOffset: (j * call.count + i) * 4, as: Int32.self) }
                else { send.storeBytes(of: Float(v), toByteOffset: (j * call.count + i) * 4, as: Float.self) }
            }
        }
        memset(recv, 0, call.count * n * 4 + 64)
        let t0 = Clock.nanos()
        let outcome = catching { () throws(CCLError) in
            let c = call.count, t = call.type
            switch call.coll {
            case "allreduce": try sub.allReduce(send: send, recv: recv, count: c, type: t, op: call.op, preMulSum: call.preMul ? .of(Float(1)) : nil)
            case "broadcast": try sub.broadcast(send: send, recv: recv, count: c, type: t, root: call.root)
            case "reduce": try sub.reduce(send: send, recv: recv, count: c, type: t, op: call.op, root: call.root)
            case "gather": try sub.gather(send: send, recv: recv, count: c, type: t, root: call.root)
            case "scatter": try sub.scatter(send: send, recv: recv, count: c, type: t, root: call.root)
            case "allgather": try sub.allGather(send: send, recv: recv, sendCount: c, type: t)
            case "reducescatter": try sub.reduceScatter(send: send, recv: recv, recvCount: c, type: t, op: call.op)
            case "alltoall": try sub.allToAll(send: send, recv: recv, count: c, type: t)
            case "barrier": try sub.barrier()
            case "group-ab", "group-ba":
                Group.start()
                let ab = call.coll == "group-ab"
                do throws(CCLError) {
                    for k in ab ? [0, 1] : [1, 0] {
                        if k == 0 { try sub.allReduce(send: send, recv: recv, count: c, type: t, op: .sum) }
                        else { try sub.broadcast(send: send + 8 * c, recv: recv + 8 * c, count: c, type: t, root: 0) }
                    }
                } catch { _ = try? Group.end(); throw error }
                try Group.end()
            case "send": try sub.send(send, count: c, type: t, to: 1)
            case "recv": try sub.recv(recv, count: c, type: t, from: 0)
            default: break
            }
        }
        let ms = Double(Clock.nanos() - t0) / 1e6
        let mustFail = (kase.all && call.coll != "none") || rank == kase.culprit
        switch outcome {
        case .failure(let e):
            say("\(kase.name): \(Int(ms)) ms: \(e)")
            check(e.kind == .invalidUsage, "\(kase.name): invalidUsage, not \(e.kindName): \(e)")
            check(e.cause.contains("different arguments") || e.cause.contains("size mismatch") || e.cause.contains("another size"), "\(kase.name): the error says the ranks disagree: \(e)")
            check(e.peer != nil, "\(kase.name): the error names a peer: \(e)")
            if rank == kase.culprit || e.cause.contains("different arguments:") {
                // Whoever saw the disagreeing arguments themselves names the argument.
                // (Unless the culprit never received anything from the rank that saw it — a zero-count
                // peer's barrier may not reach it — and learns of it from that rank's notice: then it
                // names that rank, which found its arguments different.)
                if rank == kase.culprit && !e.cause.contains("blames this rank") {
                    check(e.cause.contains(kase.word), "\(kase.name): the error names the \(kase.word): \(e)")
                }
            }
        case .success:
            say("\(kase.name): \(Int(ms)) ms: success")
            check(!mustFail, "\(kase.name): the call succeeded on rank \(rank), which must see the mismatch")
            // Success only with the result this rank's own arguments promise.
            var wrong = 0
            func at(_ k: Int) -> Double {
                call.type == .int32 ? Double(recv.load(fromByteOffset: k * 4, as: Int32.self)) : Double(recv.load(fromByteOffset: k * 4, as: Float.self))
            }
            let sumAll = Double(100 * n * (n + 1) / 2)
            for i in 0..<call.count {
                switch call.coll {
                case "broadcast": if at(i) != Double(100 * (call.root + 1)) { wrong += 1 }
                case "reduce": if rank == call.root && at(i) != (call.op == .max ? Double(100 * n) : sumAll) { wrong += 1 }
                case "scatter": if at(i) != Double(100 * (call.root + 1) + rank) { wrong += 1 }
                case "gather": if rank == call.root { for j in 0..<n where at(j * call.count + i) != Double(100 * (j + 1)) { wrong += 1 } }
                case "recv", "send", "none": break
                default: wrong += 1  // allreduce, allgather, reducescatter, alltoall, barrier: never legitimately alone
                }
            }
            check(wrong == 0, "\(kase.name): success with \(wrong) wrong elements")
        }
        if case .failure = outcome { check(sub.asyncError != nil || call.coll == "send" || call.coll == "recv", "\(kase.name): the communicator is broken") }
        // Everyone has its outcome before any rank tears its communicator down (a teardown would
        // end a waiting peer's call with "rank X aborted" instead of what that peer found itself).
        do { try comm.barrier() } catch { say("FAIL barrier after \(kase.name): \(error)"); exit(1) }
        sub.abort()
        sub.destroy()
        ran += 1
    }
    say("ran \(ran) disagreement cases")
    comm.destroy()
    finish()
}
