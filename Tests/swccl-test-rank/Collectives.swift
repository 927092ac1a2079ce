// Collective scenarios: allreduce and every other collective exact for every type, op, count and
// algorithm; streams; split.
import Glibc
import SwiftCCLTesting
import SwcclVerify

// MARK: - collective scenarios

/// Every type × op × count × in/out of place, exact, with the cost model's choice and with every
/// algorithm forced (each on a communicator split off with that setting). The model's choice runs
/// every small case; forced algorithms run a deterministic third of them, and counts of 1 Mi+1 run a
/// sample of types and ops — everything with SWCCL_TEST_FULL=1. SWCCL_TEST_ALGO runs one setting only.
@MainActor func allreduceScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let full = env("SWCCL_TEST_FULL") == "1"
    let settings: [String?] = env("SWCCL_TEST_ALGO").map { [$0] } ?? [nil] + CollectiveKind.allreduce.algorithms.map { "allreduce:\($0.rawValue)" }
    let counts = [0, 1, 7, 1000, (1 << 20) + 1]
    let maxBytes = counts.max()! * 8 + 64
    let send = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let recv = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    let want = UnsafeMutableRawPointer.allocate(byteCount: maxBytes, alignment: 64)
    var checked = 0
    var seed: UInt64 = 7
    for (ai, setting) in settings.enumerated() {
        let t0 = Clock.nanos(), before = checked
        defer { say("\(setting ?? "auto"): \(checked - before) cases in \(Double((Clock.nanos() - t0) / 1_000_000) / 1000) s") }
        let c: Communicator
        if let setting {
            do { c = try comm.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: setting))! }
            catch { say("FAIL split for \(setting): \(error)"); exit(1) }
        } else { c = comm }
        let forced = setting != nil
        for (ti, type) in DataType.allCases.enumerated() {
            for (oi, op) in ReduceOp.allCases.enumerated() {
                for (ci, count) in counts.enumerated() {
                    if !full {
                        if count > 4096 {
                            if forced ? (ti != (ai * 5) % DataType.allCases.count || oi != (ai * 2) % 5) : ((ti + oi) % 3 != 0 && op != .sum) { continue }
                        } else if forced && (ti + oi + ci + ai) % 3 != 0 { continue }
                    }
                    for inPlace in [false, true] {
                        // Misaligned: shift by one byte on alternate runs (elements stay packed).
                        let shift = (checked % 2 == 1) ? 1 : 0
                        let s = send + shift, r = recv + shift
                        seed &+= 1
                        Pattern.fill(inPlace ? r : s, count: count, type: type, op: op, seed: seed, rank: rank)
                        if !inPlace { memset(r, 0xA5, count * type.size) }
                        let what = "allreduce \(setting ?? "auto") \(type) \(op) count \(count) \(inPlace ? "in place" : "out of place") shift \(shift)"
                        do {
                            try c.allReduce(send: inPlace ? UnsafeRawPointer(r) : UnsafeRawPointer(s), recv: r, count: count, type: type, op: op)
                        } catch {
                            check(false, "\(what): \(error)")
                            exit(1)
                        }
                        Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: size)
                        let wrong = Pattern.countWrong(r, want, count: count, type: type, op: op)
                        check(wrong == 0, "\(what): \(wrong) wrong elements")
                        checked += 1
                    }
                }
            }
        }
        if forced { c.destroy() }
    }
    // The typed Swift API.
    var xs = (0..<1001).map { Float($0 % 7) + Float(rank) }
    do { try comm.allReduce(&xs, op: .sum) } catch { check(false, "typed allreduce: \(error)") }
    let base = Float(size * (size - 1) / 2)
    check(xs.enumerated().allSatisfy { $0.element == Float($0.offset % 7) * Float(size) + base }, "typed [Float] allreduce result")
    // Bad arguments: an error, no effect, communicator still usable.
    do { try comm.allReduce(send: nil, recv: recv, count: 5, type: .float32, op: .sum); check(false, "NULL send accepted") }
    catch { check(error.kind == .invalidArgument, "NULL send gives invalidArgument, got \(error)") }
    do { try comm.allReduce(send: send, recv: recv, count: -1, type: .float32, op: .sum); check(false, "negative count accepted") }
    catch { check(error.kind == .invalidArgument, "negative count gives invalidArgument") }
    do { try comm.allReduce(send: send, recv: send + 4, count: 100, type: .float32, op: .sum); check(false, "overlap accepted") }
    catch { check(error.kind == .invalidArgument, "overlapping buffers give invalidArgument") }
    do { try comm.allReduce(&xs, op: .max) } catch { check(false, "communicator unusable after invalid arguments: \(error)") }
    say("checked \(checked) allreduce cases")
    comm.destroy()
    finish()
}

/// Every other collective: broadcast, reduce, all-gather, reduce-scatter, all-to-all, gather,
/// scatter, send/recv and barrier; several types, ops and roots, counts 0 … 100003, in place and out
/// of place, exact results.
@MainActor func collectivesScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    say("transport \(comm.transportName)")
    let n = size
    let full = env("SWCCL_TEST_FULL") == "1"
    // Sampled: 8 types, one op per (type, count); SWCCL_TEST_FULL=1: every type and op, up to 1 Mi+1.
    let counts = full ? [0, 1, 7, 1000, (1 << 20) + 1] : [0, 1, 7, 1000, 100_003]
    let types: [DataType] = full ? DataType.allCases : [.int8, .uint32, .int64, .float16, .float32, .float64, .bfloat16, .float8e4m3]
    let cap = counts.max()! * n * 8 + 64
    let sbuf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    let rbuf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    let want = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 64)
    var seed: UInt64 = 1000
    var cases = 0
    func run(_ what: String, _ body: () throws(CCLError) -> Void) {
        do { try body() } catch { check(false, "\(what): \(error)"); exit(1) }
    }
    // The model's choice, then every algorithm forced (on communicators split off with that setting);
    // forced settings run half of the types unless SWCCL_TEST_FULL=1. SWCCL_TEST_ALGO runs one setting.
    // (`staged` forced over TCP is not available there: the model's choice runs instead.)
    let settings: [String?] = env("SWCCL_TEST_ALGO").map { [$0] } ?? [nil, "allgather:ring,reducescatter:ring,broadcast:chain,reduce:chain",
                               "allgather:recdbl,reducescatter:halving,broadcast:binomial,reduce:binomial",
                               "allgather:staged,reducescatter:staged,broadcast:staged"]
    for (ai, setting) in settings.enumerated() {
        let base = comm
        let comm: Communicator
        if let setting {
            do { comm = try base.split(color: 0, key: rank, config: CommConfig(timeoutMs: timeoutMs, algorithm: setting))! }
            catch { say("FAIL split for \(setting): \(error)"); exit(1) }
        } else { comm = base }
        defer { if setting != nil { comm.destroy() } }
        for (ti, type) in types.enumerated() where full || setting == nil || (ti + ai) % 2 == 0 {
            let es = type.size
            let ops = ReduceOp.allCases
            for (ci, count) in counts.enumerated() {
              for op in (full ? ops : [ops[(ti + ci) % ops.count]]) {
                let root = (ti + ci) % n
                for inPlace in [false, true] {
                    seed &+= 1
                    // Misaligned by one byte on alternate cases (elements stay packed).
                    let shift = ((cases >> 1) ^ cases) & 1  // both placements see both alignments
                    let sb = sbuf + shift, rb = rbuf + shift
                    let tag = "[\(setting ?? "auto")] \(type) count \(count) \(inPlace ? "in place" : "out of place") shift \(shift)"
                    // broadcast
                    Pattern.fill(sb, count: count, type: type, op: .max, seed: seed, rank: root)
                    if rank != root { memset(rb, 0, count * es) } else if inPlace { rb.copyMemory(from: sb, byteCount: count * es) }
                    run("broadcast \(tag)") { () throws(CCLError) in
                        try comm.broadcast(send: inPlace ? UnsafeRawPointer(rb) : UnsafeRawPointer(sb), recv: rb, count: count, type: type, root: root)
                    }
                    Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: root)
                    check(Pattern.countWrong(rb, want, count: count, type: type, op: .max) == 0, "broadcast \(tag) root \(root)")
                    // reduce
                    Pattern.fill(inPlace ? rb : sb, count: count, type: type, op: op, seed: seed, rank: rank)
                    run("reduce \(tag)") { () throws(CCLError) in
                        try comm.reduce(send: inPlace ? UnsafeRawPointer(rb) : UnsafeRawPointer(sb), recv: rb, count: count, type: type, op: op, root: root)
                    }
                    if rank == root {
                        Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: n)
                        check(Pattern.countWrong(rb, want, count: count, type: type, op: op) == 0, "reduce \(op) \(tag) root \(root)")
                    }
                    // all-gather: block r of the output is rank r's input
                    let mine = inPlace ? rb + rank * count * es : sb
                    Pattern.fill(mine, count: count, type: type, op: .max, seed: seed, rank: rank)
                    run("allgather \(tag)") { () throws(CCLError) in
                        try comm.allGather(send: UnsafeRawPointer(mine), recv: rb, sendCount: count, type: type)
                    }
                    for r in 0..<n { Pattern.fill(want + r * count * es, count: count, type: type, op: .max, seed: seed, rank: r) }
                    check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "allgather \(tag)")
                    // reduce-scatter: block r of the reduced array lands on rank r
                    Pattern.fill(sb, count: count * n, type: type, op: op, seed: seed, rank: rank)
                    let out = inPlace ? sb + rank * count * es : rb
                    run("reducescatter \(tag)") { () throws(CCLError) in
                        try comm.reduceScatter(send: UnsafeRawPointer(sb), recv: out, recvCount: count, type: type, op: op)
                    }
                    Pattern.expected(want, count: count, type: type, op: op, seed: seed, nranks: n, offset: rank * count)
                    check(Pattern.countWrong(out, want, count: count, type: type, op: op) == 0, "reducescatter \(op) \(tag)")
                    // gather / scatter (in place: the root's own block already sits in the big buffer)
                    let gmine = inPlace && rank == root ? rb + root * count * es : sb
                    Pattern.fill(gmine, count: count, type: type, op: .max, seed: seed, rank: rank)
                    run("gather \(tag)") { () throws(CCLError) in
                        try comm.gather(send: UnsafeRawPointer(gmine), recv: rb, count: count, type: type, root: root)
                    }
                    if rank == root {
                        for r in 0..<n { Pattern.fill(want + r * count * es, count: count, type: type, op: .max, seed: seed, rank: r) }
                        check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "gather \(tag) root \(root)")
                    }
                    if rank == root { Pattern.fill(sb, count: count * n, type: type, op: .max, seed: seed, rank: root) }
                    let sout = inPlace && rank == root ? sb + root * count * es : rb
                    run("scatter \(tag)") { () throws(CCLError) in
                        try comm.scatter(send: UnsafeRawPointer(sb), recv: sout, count: count, type: type, root: root)
                    }
                    Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: root, offset: rank * count)
                    check(Pattern.countWrong(sout, want, count: count, type: type, op: .max) == 0, "scatter \(tag) root \(root)")
                    // all-to-all: block j of rank r's input is (seed, r, offset j*count); r receives j's block r
                    if !inPlace {
                        Pattern.fill(sb, count: count * n, type: type, op: .max, seed: seed, rank: rank)
                        run("alltoall \(tag)") { () throws(CCLError) in try comm.allToAll(send: sb, recv: rb, count: count, type: type) }
                        for j in 0..<n { Pattern.fill(want + j * count * es, count: count, type: type, op: .max, seed: seed, rank: j, offset: rank * count) }
                        check(Pattern.countWrong(rb, want, count: count * n, type: type, op: .max) == 0, "alltoall \(tag)")
                        // send/recv ring shift
                        Pattern.fill(sb, count: count, type: type, op: .max, seed: seed, rank: rank)
                        let right = (rank + 1) % n, left = (rank + n - 1) % n
                        run("sendrecv \(tag)") { () throws(CCLError) in
                            try comm.sendRecv(send: sb, count: count, type: type, to: right, recv: rb, recvCount: count, from: left)
                        }
                        Pattern.fill(want, count: count, type: type, op: .max, seed: seed, rank: left)
                        check(Pattern.countWrong(rb, want, count: count, type: type, op: .max) == 0, "sendrecv \(tag)")
                    }
                    cases += 1
                }
              }
            }
        }
    }
    // Blocking send/recv in call order: rank 0 sends three messages to every other rank.
    if n > 1 {
        var a = [Int32](repeating: 0, count: 5000)
        for k in 0..<3 {
            if rank == 0 {
                for p in 1..<n {
                    a = (0..<5000).map { Int32($0 + k * 7 + p) }
                    run("send") { () throws(CCLError) in try a.withUnsafeBytes { b in catching { () throws(CCLError) in try comm.send(b.baseAddress, count: 5000, type: .int32, to: p) } }.get() }
                }
            } else {
                run("recv") { () throws(CCLError) in try a.withUnsafeMutableBytes { b in catching { () throws(CCLError) in try comm.recv(b.baseAddress, count: 5000, type: .int32, from: 0) } }.get() }
                check(a.enumerated().allSatisfy { $0.element == Int32($0.offset + k * 7 + rank) }, "message \(k) from rank 0 in order")
            }
        }
    }
    // Pre-multiplied sums: allreduce (float ×2), reduce (double ×0.5, read from memory at each call),
    // reduce-scatter (int32 ×3, wrapping), in place and out of place.
    do {
        let c = 10_007
        for inPlace in [false, true] {
            Pattern.fill(inPlace ? rbuf : sbuf, count: c, type: .float32, op: .sum, seed: 501, rank: rank)
            run("premulsum allreduce") { () throws(CCLError) in
                try comm.allReduce(send: inPlace ? rbuf : sbuf, recv: rbuf, count: c, type: .float32, op: .sum, preMulSum: .of(Float(2)))
            }
            Pattern.expected(want, count: c, type: .float32, op: .sum, seed: 501, nranks: n)
            let w = want.assumingMemoryBound(to: Float.self)
            for i in 0..<c { w[i] *= 2 }
            check(Pattern.countWrong(rbuf, want, count: c, type: .float32, op: .sum) == 0, "premulsum allreduce (in place \(inPlace))")

            var half = 0.5
            Pattern.fill(sbuf, count: c, type: .float64, op: .sum, seed: 502, rank: rank)
            let pm = withUnsafeBytes(of: &half) { PreMulSum(type: .float64, readingScalarAt: $0.baseAddress!) }
            run("premulsum reduce") { () throws(CCLError) in
                try comm.reduce(send: sbuf, recv: rbuf, count: c, type: .float64, op: .sum, root: n - 1, preMulSum: pm)
            }
            if rank == n - 1 {
                Pattern.expected(want, count: c, type: .float64, op: .sum, seed: 502, nranks: n)
                let d = want.assumingMemoryBound(to: Double.self)
                for i in 0..<c { d[i] *= 0.5 }
                check(Pattern.countWrong(rbuf, want, count: c, type: .float64, op: .sum) == 0, "premulsum reduce")
            }

            var three: Int32 = 3
            Pattern.fill(sbuf, count: c * n, type: .int32, op: .sum, seed: 503, rank: rank)
            let out = inPlace ? sbuf + rank * c * 4 : rbuf
            let pm3 = withUnsafeBytes(of: &three) { PreMulSum(type: .int32, scalarBytes: $0.baseAddress!) }
            run("premulsum reducescatter") { () throws(CCLError) in
                try comm.reduceScatter(send: sbuf, recv: out, recvCount: c, type: .int32, op: .sum, preMulSum: pm3)
            }
            Pattern.expected(want, count: c, type: .int32, op: .sum, seed: 503, nranks: n, offset: rank * c)
            let iw = want.assumingMemoryBound(to: Int32.self)
            for i in 0..<c { iw[i] = iw[i] &* 3 }
            check(Pattern.countWrong(out, want, count: c, type: .int32, op: .sum) == 0, "premulsum reducescatter (in place \(inPlace))")
        }
        do { try comm.allReduce(send: sbuf, recv: rbuf, count: 4, type: .int32, op: .sum, preMulSum: .of(Float(1))); check(false, "type mismatch accepted") }
        catch { check(error.kind == .invalidArgument, "pre-multiplied sum of another type: invalidArgument") }
    }

    // A group: every rank sends 1 MiB (rendezvous) to both neighbours and receives from both, with
    // blocking calls that would deadlock outside a group; plus two collectives recorded in the group.
    if n > 1 {
        let big = 1 << 18
        let out = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        let inL = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        let inR = UnsafeMutableRawPointer.allocate(byteCount: big * 4, alignment: 64)
        Pattern.fill(out, count: big, type: .float32, op: .max, seed: 77, rank: rank)
        var sum = [Int64](repeating: Int64(rank + 1), count: 33)
        var bc = [Int32](repeating: rank == 0 ? 42 : 0, count: 1000)
        let right = (rank + 1) % n, left = (rank + n - 1) % n
        Group.start()
        run("group send/recv") { () throws(CCLError) in
            try comm.send(out, count: big, type: .float32, to: right)
            try comm.send(out, count: big, type: .float32, to: left)
            try comm.recv(inL, count: big, type: .float32, from: left)
            try comm.recv(inR, count: big, type: .float32, from: right)
            try sum.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.allReduce(send: b.baseAddress, recv: b.baseAddress, count: 33, type: .int64, op: .sum) } }.get()
            try bc.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
                try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: 1000, type: .int32, root: 0) } }.get()
        }
        do { try Group.end() } catch { check(false, "group end: \(error)"); exit(1) }
        Pattern.fill(want, count: big, type: .float32, op: .max, seed: 77, rank: n == 2 ? left : left)
        check(Pattern.countWrong(inL, want, count: big, type: .float32, op: .max) == 0, "group: message from the left")
        Pattern.fill(want, count: big, type: .float32, op: .max, seed: 77, rank: right)
        check(Pattern.countWrong(inR, want, count: big, type: .float32, op: .max) == 0, "group: message from the right")
        check(sum.allSatisfy { $0 == Int64(n * (n + 1) / 2) }, "group: allreduce inside the group")
        check(bc.allSatisfy { $0 == 42 }, "group: broadcast inside the group")
    }
    run("barrier") { () throws(CCLError) in try comm.barrier() }
    // Bad roots and in-place all-to-all are argument errors and leave the communicator usable.
    do { try comm.broadcast(send: sbuf, recv: rbuf, count: 4, type: .float32, root: n); check(false, "root out of range accepted") }
    catch { check(error.kind == .invalidArgument, "bad root: invalidArgument") }
    do { try comm.allToAll(send: sbuf, recv: sbuf, count: 4, type: .float32); if n > 0 { check(false, "in-place all-to-all accepted") } }
    catch { check(error.kind == .invalidArgument, "in-place all-to-all: invalidArgument") }
    run("barrier after bad calls") { () throws(CCLError) in try comm.barrier() }
    say("checked \(cases) collective cases")
    comm.destroy()
    finish()
}

/// Streams: operations enqueued in order, query/synchronize, errors reported by synchronize; two
/// communicators (the second's id broadcast over the first) used at once from two streams.
@MainActor func streamsScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    func run(_ what: String, _ body: () throws(CCLError) -> Void) {
        do { try body() } catch { check(false, "\(what): \(error)"); exit(1) }
    }
    // A second communicator: rank 0 makes its id and broadcasts it over the first.
    var idBytes = [UInt8](repeating: 0, count: UniqueID.byteCount)
    if rank == 0 { run("make id") { () throws(CCLError) in idBytes = try UniqueID.make().bytes } }
    run("broadcast id") { () throws(CCLError) in
        try idBytes.withUnsafeMutableBytes { b in catching { () throws(CCLError) in
            try comm.broadcast(send: b.baseAddress, recv: b.baseAddress, count: b.count, type: .uint8, root: 0) } }.get()
    }
    let comm2: Communicator
    do { comm2 = try Communicator(id: try UniqueID(bytes: idBytes), rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init of the second communicator: \(error)"); exit(1) }

    let s1: ExecutionStream, s2: ExecutionStream
    do { s1 = try ExecutionStream(); s2 = try ExecutionStream() } catch { say("FAIL stream: \(error)"); exit(1) }
    let k = 8, count = 300_001
    let bufs = (0..<k).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64) }
    let bufs2 = (0..<k).map { _ in UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64) }
    for j in 0..<k {
        Pattern.fill(bufs[j], count: count, type: .float32, op: .sum, seed: UInt64(j), rank: rank)
        Pattern.fill(bufs2[j], count: count, type: .int64, op: .max, seed: UInt64(50 + j), rank: rank)
    }
    // Enqueue on both streams from this thread: calls return at once; the two communicators progress
    // at the same time on the streams' threads.
    run("enqueue") { () throws(CCLError) in
        try s1.submit { () throws(CCLError) in
            for j in 0..<k { try comm.allReduce(send: bufs[j], recv: bufs[j], count: count, type: .float32, op: .sum) }
        }
        try s2.submit { () throws(CCLError) in
            for j in 0..<k { try comm2.allReduce(send: bufs2[j], recv: bufs2[j], count: count, type: .int64, op: .max) }
        }
    }
    // Arguments are checked at the call, not later.
    do { try s1.submit { () throws(CCLError) in try comm.allReduce(send: nil, recv: bufs[0], count: 5, type: .float32, op: .sum) }; check(false, "NULL send accepted") }
    catch { check(error.kind == .invalidArgument, "argument errors are thrown by the enqueuing call") }
    run("synchronize 1") { () throws(CCLError) in try s1.synchronize() }
    run("synchronize 2") { () throws(CCLError) in try s2.synchronize() }
    check(s1.query() != nil, "query after synchronize says done")
    let want = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 64)
    for j in 0..<k {
        Pattern.expected(want, count: count, type: .float32, op: .sum, seed: UInt64(j), nranks: size)
        check(Pattern.countWrong(bufs[j], want, count: count, type: .float32, op: .sum) == 0, "stream 1 allreduce \(j)")
        Pattern.expected(want, count: count, type: .int64, op: .max, seed: UInt64(50 + j), nranks: size)
        check(Pattern.countWrong(bufs2[j], want, count: count, type: .int64, op: .max) == 0, "stream 2 allreduce \(j)")
    }
    // An error during a stream's run comes back from synchronize: the ranks disagree on the count.
    if size > 1 {
        let c = rank == 1 ? 2000 : 1000
        run("enqueue mismatch") { () throws(CCLError) in
            try s2.submit { () throws(CCLError) in try comm2.allReduce(send: bufs2[0], recv: bufs2[0], count: c, type: .int64, op: .sum) }
        }
        do { try s2.synchronize(); check(false, "synchronize reported no error for mismatched calls") }
        catch { say("synchronize reported: \(error)"); check(error.kind != .invalidArgument, "a run-time error, not an argument error") }
    }
    do { try s1.destroy(); try s2.destroy() } catch { check(false, "destroy: \(error)") }
    comm.destroy()
    comm2.abort()
    finish()
}

/// Split by parity, ordered by descending rank; the last rank joins none.
@MainActor func splitScenario() {
    let comm: Communicator
    do { comm = try Communicator(id: id, rank: rank, size: size, config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init: \(error)"); exit(1) }
    let none = size > 2 && rank == size - 1
    let color = none ? Communicator.splitNoColor : rank % 2
    let sub: Communicator?
    do { sub = try comm.split(color: color, key: -rank) } catch { say("FAIL split: \(error)"); exit(1) }
    let members = (0..<size).filter { $0 % 2 == rank % 2 && !(size > 2 && $0 == size - 1) }.sorted(by: >)
    if none {
        check(sub == nil, "no communicator for SWCCL_SPLIT_NOCOLOR")
    } else if let sub {
        check(sub.size == members.count, "new size \(sub.size), expected \(members.count)")
        check(sub.rank == members.firstIndex(of: rank), "new rank \(sub.rank), expected \(String(describing: members.firstIndex(of: rank)))")
        var xs = [Int64](repeating: Int64(rank), count: 10_007)
        do { try sub.allReduce(&xs, op: .sum) } catch { check(false, "allreduce on the split: \(error)") }
        check(xs.allSatisfy { $0 == Int64(members.reduce(0, +)) }, "allreduce on the split sums its members")
        sub.destroy()
    } else {
        check(false, "split returned no communicator")
    }
    // The parent still works.
    var ys = [Int32](repeating: 1, count: 100)
    do { try comm.allReduce(&ys, op: .sum) } catch { check(false, "parent after split: \(error)") }
    check(ys.allSatisfy { $0 == Int32(size) }, "parent allreduce after split")
    do { _ = try comm.split(color: -5, key: 0); check(false, "negative color accepted") }
    catch { check(error.kind == .invalidArgument, "negative color: invalidArgument") }
    comm.destroy()
    finish()
}
