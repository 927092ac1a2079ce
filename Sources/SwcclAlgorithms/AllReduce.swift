import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Allreduce algorithms, written only against the transport protocol.
package enum AllReduce {
    // The table's entries (`Algorithm.specs`): one rank copies; every algorithm otherwise.
    package static func ring(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try ring(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    package static func tree(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try DoubleTree.allReduce(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    package static func recursiveDoubling(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try recursiveDoubling(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    package static func rabenseifner(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try rabenseifner(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    /// Through the symmetric window (one host); recursive doubling without one.
    package static func oneShot(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        guard let arena = ctx.arena else { return try recursiveDoubling(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op) }
        try OneShot.allReduce(ctx, arena: arena, operation: ctx.oneShot.next(), send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    /// Staged through the symmetric window (one host); the ring without one.
    package static func staged(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        guard let arena = ctx.arena else { return try ring(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op) }
        try Staged.allReduce(ctx, arena: arena, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    /// One rank: the input is the result (copied unless in place); true when that was all.
    @inline(__always) static func single(_ ctx: CollectiveContext, _ o: Operands) -> Bool {
        guard ctx.size == 1 else { return false }
        if o.input != UnsafeRawPointer(o.output) { o.output.copyMemory(from: o.input, byteCount: o.bytes) }
        return true
    }

    /// Folds a rank count onto the largest power of two p ≤ n (MPICH's scheme): among the first
    /// 2(n − p) ranks, each even rank hands its data to the odd rank after it and sits out; the odd
    /// ranks and every rank from 2(n − p) on form p "virtual" ranks.
    package struct Fold {
        package let p: Int
        package let extra: Int
        /// This rank's virtual rank, or -1 if it sits out.
        package let virtual: Int

        package init(rank: Int, size: Int) {
            p = 1 << (Int.bitWidth - 1 - size.leadingZeroBitCount)
            extra = size - p
            if rank < 2 * extra { virtual = rank % 2 == 1 ? rank / 2 : -1 } else { virtual = rank - extra }
        }

        /// True for an even rank among the first 2(n − p): it gives its data away and waits.
        package var sitsOut: Bool { virtual < 0 }
        /// True for an odd rank among the first 2(n − p): it reduces its partner's data into its own.
        package func takes(_ rank: Int) -> Bool { rank < 2 * extra && rank % 2 == 1 }
        /// The real rank of virtual rank `v`.
        package func real(_ v: Int) -> Int { v < extra ? 2 * v + 1 : v + extra }
    }

    /// Runs the fold's first half. Returns the buffer holding this rank's (possibly combined) input, or
    /// nil for a rank that sits out (after it has sent its input away).
    package static func foldIn(_ ctx: CollectiveContext, _ fold: Fold, send: UnsafeRawPointer, into acc: UnsafeMutableRawPointer,
                       count: Int, type: DataType, op: ReduceOp, tmp: UnsafeMutableRawPointer) throws(CCLError) -> UnsafeRawPointer? {
        let bytes = count * type.size
        if fold.sitsOut {
            let s = try ctx.send(ctx.rank + 1, lane: 0, send, bytes)
            try ctx.wait(s, peer: ctx.rank + 1)
            return nil
        }
        guard fold.takes(ctx.rank) else { return send }
        let r = try ctx.recv(ctx.rank - 1, lane: 0, tmp, bytes)
        try ctx.wait(r, peer: ctx.rank - 1)
        Reduction.kernel(type, op)(acc, UnsafeRawPointer(tmp), send, count)
        return UnsafeRawPointer(acc)
    }

    /// The fold's second half: the odd rank sends the finished result to the even one.
    package static func foldOut(_ ctx: CollectiveContext, _ fold: Fold, result: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        if fold.sitsOut {
            let r = try ctx.recv(ctx.rank + 1, lane: 255, result, bytes)
            try ctx.wait(r, peer: ctx.rank + 1)
        } else if fold.takes(ctx.rank) {
            let s = try ctx.send(ctx.rank - 1, lane: 255, UnsafeRawPointer(result), bytes)
            try ctx.wait(s, peer: ctx.rank - 1)
        }
    }

    /// Recursive halving over p runs (run j starts at element `start(j)`): at distance p/2, p/4, … 1 a
    /// virtual rank keeps the half of its runs that its bit selects, sends the other half and adds the
    /// partner's copy of the kept half into `acc` (lanes 1 … log₂ p). Returns the run range it ends with.
    package static func halving(_ ctx: CollectiveContext, _ fold: Fold, input first: UnsafeRawPointer, into acc: UnsafeMutableRawPointer,
                        tmp: UnsafeMutableRawPointer, elementSize es: Int, kernel: ReduceKernel,
                        start: (Int) -> Int) throws(CCLError) -> (Int, Int) {
        let v = fold.virtual
        var input = first
        var lo = 0, hi = fold.p, mask = fold.p >> 1, step = 1
        while mask > 0 {
            let partner = fold.real(v ^ mask)
            let mid = lo + mask
            let (klo, khi, glo, ghi) = v & mask == 0 ? (lo, mid, mid, hi) : (mid, hi, lo, mid)
            let keep = start(khi) - start(klo)
            try ctx.exchange(lane: step, to: partner, input + start(glo) * es, (start(ghi) - start(glo)) * es,
                             from: partner, tmp, keep * es)
            kernel(acc + start(klo) * es, input + start(klo) * es, UnsafeRawPointer(tmp), keep)
            input = UnsafeRawPointer(acc)
            (lo, hi) = (klo, khi)
            mask >>= 1; step += 1
        }
        return (lo, hi)
    }

    /// Rabenseifner: fold to a power of two p, recursive-halving reduce-scatter (log₂ p exchanges of
    /// halving size, each rank ending with 1/p of the result), then recursive-doubling all-gather;
    /// unfold. Moves 2(p−1)/p of the buffer per rank in 2·log₂ p steps.
    package static func rabenseifner(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                             count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let es = type.size, bytes = count * es
        let fold = Fold(rank: ctx.rank, size: ctx.size)
        let kernel = Reduction.kernel(type, op)
        let tmp = try ctx.scratch.get(max(bytes, 1))
        guard let input = try foldIn(ctx, fold, send: send, into: recv, count: count, type: type, op: op, tmp: tmp) else {
            try foldOut(ctx, fold, result: recv, bytes: bytes)
            return
        }
        let p = fold.p, v = fold.virtual
        func start(_ b: Int) -> Int { Int(Int64(count) * Int64(b) / Int64(p)) }
        var (lo, hi) = try halving(ctx, fold, input: input, into: recv, tmp: tmp, elementSize: es, kernel: kernel, start: start)
        var step = 1 + p.trailingZeroBitCount, mask = 1
        if op == .avg { Reduction.divide(recv + start(lo) * es, count: start(hi) - start(lo), type: type, by: ctx.size) }
        // All-gather: exchange the range held so far with the partner's adjacent range.
        while mask < p {
            let partner = fold.real(v ^ mask)
            let width = hi - lo
            let (plo, phi) = v & mask == 0 ? (hi, hi + width) : (lo - width, lo)
            try ctx.exchange(lane: step, to: partner, UnsafeRawPointer(recv + start(lo) * es), (start(hi) - start(lo)) * es,
                             from: partner, recv + start(plo) * es, (start(phi) - start(plo)) * es)
            (lo, hi) = (min(lo, plo), max(hi, phi))
            mask <<= 1; step += 1
        }
        try foldOut(ctx, fold, result: recv, bytes: bytes)
    }

    /// Recursive doubling: log₂ p exchanges of the whole buffer with virtual rank v ^ 2^k (folding
    /// non-powers of two). Operands are combined lower virtual rank first, so every rank computes
    /// bit-identical results.
    package static func recursiveDoubling(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                                  count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let bytes = count * type.size
        let fold = Fold(rank: ctx.rank, size: ctx.size)
        let tmp = try ctx.scratch.get(max(bytes, 1))
        let kernel = Reduction.kernel(type, op)
        guard var mine = try foldIn(ctx, fold, send: send, into: recv, count: count, type: type, op: op, tmp: tmp) else {
            try foldOut(ctx, fold, result: recv, bytes: bytes)
            return
        }
        let v = fold.virtual
        var distance = 1, step = 1
        while distance < fold.p {
            let partner = fold.real(v ^ distance)
            try ctx.exchange(lane: step, to: partner, mine, bytes, from: partner, tmp, bytes)
            if v < v ^ distance { kernel(recv, mine, UnsafeRawPointer(tmp), count) } else { kernel(recv, UnsafeRawPointer(tmp), mine, count) }
            mine = UnsafeRawPointer(recv)
            distance <<= 1
            step += 1
        }
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: ctx.size) }
        try foldOut(ctx, fold, result: recv, bytes: bytes)
    }

    /// Ring allreduce: reduce-scatter then all-gather over n segments, pipelined in chunks. Chunk rounds
    /// are spread over `lanes` independent pipelines; even lanes run clockwise and odd lanes
    /// counter-clockwise, so both directions of every link carry data.
    package static func ring(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                     count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size
        let esize = type.size
        let kernel = Reduction.kernel(type, op)
        // Segment i covers elements [segStart(i), segStart(i+1)).
        @inline(__always) func segStart(_ i: Int) -> Int { Int((Int64(count) * Int64(i)) / Int64(n)) }
        let maxSeg = (count + n - 1) / n
        let lanesWanted = 4
        let maxChunkElems = max(1, Knobs.chunkBytes.value / esize)
        let minChunkElems = max(1, (16 << 10) / esize)
        var chunk = (maxSeg + lanesWanted - 1) / lanesWanted
        chunk = min(max(chunk, minChunkElems), maxChunkElems)
        let rounds = (maxSeg + chunk - 1) / chunk
        let lanes = min(lanesWanted, rounds)
        let scratch = try ctx.scratch.get(lanes * chunk * esize)
        let steps = 2 * (n - 1)

        // Per-lane ring geometry.
        var position = [Int](repeating: 0, count: lanes), right = position, left = position
        for l in 0..<lanes {
            if l % 2 == 0 {
                position[l] = ctx.rank; right[l] = (ctx.rank + 1) % n; left[l] = (ctx.rank + n - 1) % n
            } else {
                position[l] = (n - ctx.rank) % n; right[l] = (ctx.rank + n - 1) % n; left[l] = (ctx.rank + 1) % n
            }
        }
        var round = Array(0..<lanes)
        var step = [Int](repeating: 0, count: lanes)
        var driver = LaneDriver(lanes: lanes)

        @inline(__always) func mod(_ x: Int) -> Int { ((x % n) + n) % n }
        @inline(__always) func chunkRange(_ seg: Int, _ rd: Int) -> (Int, Int) {
            let lo = segStart(seg) + rd * chunk
            let hi = min(segStart(seg) + (rd + 1) * chunk, segStart(seg + 1))
            return lo < hi ? (lo, hi - lo) : (segStart(seg + 1), 0)
        }

        func post(_ l: Int) throws(CCLError) {
            let p = position[l], s = step[l], rd = round[l]
            let lane = l
            driver.peerOf[l] = left[l]
            if s < n - 1 {
                let (so, sc) = chunkRange(mod(p - s), rd)
                let (ro, rc) = chunkRange(mod(p - s - 1), rd)
                driver.recvs[l] = try ctx.recv(left[l], lane: lane, scratch + l * chunk * esize, rc * esize)
                let src = s == 0 ? send + so * esize : UnsafeRawPointer(recv + so * esize)
                driver.sends[l] = try ctx.send(right[l], lane: lane, src, sc * esize)
                _ = ro
            } else {
                let t = s - (n - 1)
                let (so, sc) = chunkRange(mod(p + 1 - t), rd)
                let (ro, rc) = chunkRange(mod(p - t), rd)
                driver.recvs[l] = try ctx.recv(left[l], lane: lane, recv + ro * esize, rc * esize)
                driver.sends[l] = try ctx.send(right[l], lane: lane, UnsafeRawPointer(recv + so * esize), sc * esize)
            }
        }

        /// The step's data is in: reduce it (reduce-scatter steps) and move the lane on.
        func finish(_ l: Int) -> Bool {
            let p = position[l], s = step[l], rd = round[l]
            if s < n - 1 {
                let (ro, rc) = chunkRange(mod(p - s - 1), rd)
                if rc > 0 {
                    kernel(recv + ro * esize, send + ro * esize, scratch + l * chunk * esize, rc)
                    if s == n - 2 && op == .avg { Reduction.divide(recv + ro * esize, count: rc, type: type, by: n) }
                }
            }
            step[l] += 1
            if step[l] == steps {
                step[l] = 0
                round[l] += lanes
                return round[l] < rounds
            }
            return true
        }

        var active = [Bool](repeating: true, count: lanes)
        var remaining = lanes
        for l in 0..<lanes { try post(l) }
        var progress = CollectiveContext.Progress()
        while remaining > 0 {
            var advanced = false
            for l in 0..<lanes where active[l] {
                guard try driver.isIdle(l, ctx) else { continue }
                advanced = true
                if finish(l) { try post(l) } else { active[l] = false; remaining -= 1 }
            }
            if remaining > 0 {
                let w = driver.waitingOn()
                try ctx.idle(advanced: advanced, progress: &progress, waitingOn: w.peer, receiving: w.receiving)
            }
        }
    }
}
