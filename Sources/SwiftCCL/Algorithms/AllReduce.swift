import Glibc

/// Allreduce algorithms, written only against the transport protocol.
enum AllReduce {
    enum Algorithm: String, CaseIterable { case ring, recdbl }

    /// Recursive doubling for small messages on power-of-two rank counts (one exchange per doubling);
    /// the pipelined ring otherwise. `SWCCL_ALGO` / `CommConfig.algorithm` override.
    static func choose(forced: String?, bytes: Int, nranks: Int) -> Algorithm {
        let pow2 = nranks & (nranks - 1) == 0
        if let f = forced {
            // Accept "ring", "allreduce:ring", or a list of "collective:algo".
            for item in f.split(separator: ",") {
                let parts = item.split(separator: ":").map { String($0).trimmingSpaces.lowercased() }
                let name = parts.count == 2 ? (parts[0] == "allreduce" ? parts[1] : nil) : parts.first
                if let name, let a = Algorithm(rawValue: name) {
                    if a == .recdbl && !pow2 { Log.warn(.coll, "recdbl needs a power-of-two rank count; using ring"); return .ring }
                    return a
                }
            }
        }
        return pow2 && bytes <= 64 << 10 ? .recdbl : .ring
    }

    static func run(_ algo: Algorithm, _ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                    count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        if ctx.size == 1 {
            if send != UnsafeRawPointer(recv) { recv.copyMemory(from: send, byteCount: count * type.size) }
            return
        }
        switch algo {
        case .ring: try ring(ctx, send: send, recv: recv, count: count, type: type, op: op)
        case .recdbl: try recursiveDoubling(ctx, send: send, recv: recv, count: count, type: type, op: op)
        }
    }

    /// log2(n) exchanges of the whole buffer with rank ^ 2^k. Operands are combined lower group first,
    /// so every rank computes bit-identical results.
    static func recursiveDoubling(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                                  count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let bytes = count * type.size
        let tmp = ctx.scratch.get(bytes)
        let kernel = Reduction.kernel(type, op)
        var mine = send
        var distance = 1
        var step = 0
        while distance < ctx.size {
            let partner = ctx.rank ^ distance
            let r = try ctx.recv(partner, lane: step, tmp, bytes)
            let s = try ctx.send(partner, lane: step, mine, bytes)
            try ctx.wait(r, peer: partner)
            try ctx.wait(s, peer: partner)
            if ctx.rank < partner { kernel(recv, mine, tmp, count) } else { kernel(recv, tmp, mine, count) }
            mine = UnsafeRawPointer(recv)
            distance <<= 1
            step += 1
        }
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: ctx.size) }
    }

    /// Ring allreduce: reduce-scatter then all-gather over n segments, pipelined in chunks. Chunk rounds
    /// are spread over `lanes` independent pipelines; even lanes run clockwise and odd lanes
    /// counter-clockwise, so both directions of every link carry data.
    static func ring(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
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
        let scratch = ctx.scratch.get(lanes * chunk * esize)
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
        var idleSince = Sys.monotonicNanos()
        var spinUntil = idleSince &+ Knobs.spinNanos
        while remaining > 0 {
            var advanced = false
            for l in 0..<lanes where active[l] {
                guard try driver.isIdle(l, ctx) else { continue }
                advanced = true
                if finish(l) { try post(l) } else { active[l] = false; remaining -= 1 }
            }
            let now = Sys.monotonicNanos()
            if advanced {
                idleSince = now
                spinUntil = now &+ Knobs.spinNanos
            } else if now > spinUntil && remaining > 0 {
                try driver.block(ctx, idleSince: &idleSince)
            } else {
                Sys.yield()  // spinning: give a rank that shares this core its turn
            }
        }
    }
}

enum Barrier {
    /// Round k: an empty message to rank + 2^k, one from rank − 2^k. After ⌈log₂ n⌉ rounds every rank
    /// has heard, directly or through others, from every rank.
    static func dissemination(_ ctx: CollectiveContext) throws(CCLError) {
        let n = ctx.size
        var distance = 1, round = 0
        var byte: UInt8 = 0
        while distance < n {
            let to = (ctx.rank + distance) % n, from = (ctx.rank - distance + n) % n
            try withUnsafeMutablePointer(to: &byte) { p in
                catching { () throws(CCLError) in
                    let r = try ctx.recv(from, lane: round, p, 0)
                    let s = try ctx.send(to, lane: round, p, 0)
                    try ctx.wait(r, peer: from)
                    try ctx.wait(s, peer: to)
                }
            }.get()
            distance <<= 1
            round += 1
        }
    }
}
