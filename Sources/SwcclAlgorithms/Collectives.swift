import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The collectives other than allreduce, written only against the transport protocol.
/// Blocks of rank-indexed arrays are `bytes` long; ring orders are relative to the rank.
package enum Collectives {
    /// Pipeline chunk for chains (broadcast, reduce).
    package static var chunkBytes: Int { max(4096, Knobs.chunkBytes.value) }

    // MARK: all-gather

    package static func allGather(_ algo: Algorithm, _ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        if algo == .staged, n > 1, let arena = ctx.arena { return try Staged.allGather(ctx, arena: arena, send: send, recv: recv, bytes: bytes) }
        if algo == .recdbl && n & (n - 1) != 0 { return try bruck(ctx, send: send, recv: recv, bytes: bytes) }
        let mine = recv + r * bytes
        if UnsafeRawPointer(mine) != send { mine.copyMemory(from: send, byteCount: bytes) }
        if algo == .recdbl {
            // Power of two: at distance d, swap the d blocks held (aligned on d) with rank ^ d.
            var d = 1
            while d < n {
                let partner = r ^ d
                let lo = r & ~(d - 1), plo = partner & ~(d - 1)
                try ctx.exchange(lane: 0, to: partner, UnsafeRawPointer(recv + lo * bytes), d * bytes, from: partner, recv + plo * bytes, d * bytes)
                d <<= 1
            }
            return
        }
        // Ring: n−1 steps; at step s a rank forwards block (r−s) to its right neighbour and receives
        // block (r−s−1) from its left one, straight into the output.
        let right = (r + 1) % n, left = (r + n - 1) % n
        for s in 0..<(n - 1) {
            let sb = ((r - s) % n + n) % n, rb = ((r - s - 1) % n + n) % n
            try ctx.exchange(lane: 0, to: right, UnsafeRawPointer(recv + sb * bytes), bytes, from: left, recv + rb * bytes, bytes)
        }
    }

    /// Bruck's all-gather for any rank count: ⌈log₂ n⌉ steps; after the step at distance d a rank holds
    /// blocks r … r+2d−1 (mod n) in a scratch buffer (it sends its first min(d, n−d) to r−d and receives
    /// as many from r+d); one rotation puts them in rank order.
    package static func bruck(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        let tmp = try ctx.scratch.get(n * bytes)
        tmp.copyMemory(from: send, byteCount: bytes)
        var d = 1
        while d < n {
            let c = min(d, n - d)
            try ctx.exchange(lane: 0, to: (r - d + n) % n, UnsafeRawPointer(tmp), c * bytes, from: (r + d) % n, tmp + d * bytes, c * bytes)
            d <<= 1
        }
        // tmp[i] is block (r + i) mod n: two copies put it in place.
        let head = n - r  // blocks r … n−1
        (recv + r * bytes).copyMemory(from: tmp, byteCount: head * bytes)
        recv.copyMemory(from: tmp + head * bytes, byteCount: r * bytes)
    }

    // MARK: reduce-scatter

    package static func reduceScatter(_ algo: Algorithm, _ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                              count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        if ctx.size > 1 && algo == .halving { return try halving(ctx, send: send, recv: recv, count: count, type: type, op: op) }
        if ctx.size > 1 && algo == .staged, let arena = ctx.arena {
            return try Staged.reduceScatter(ctx, arena: arena, send: send, recv: recv, count: count, type: type, op: op)
        }
        try reduceScatterRing(ctx, send: send, recv: recv, count: count, type: type, op: op)
    }

    /// Recursive halving (with the power-of-two fold of `AllReduce.Fold`): virtual rank v owns a run of
    /// whole blocks — its two ranks' blocks if it took a partner's data, else its own — and at distance
    /// p/2, p/4, … 1 a rank keeps the half of the runs its bit selects, sends the other half and adds the
    /// partner's copy of the kept half. A rank that took a partner's data sends it its block at the end.
    package static func halving(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                        count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size, es = type.size, blockBytes = count * es
        let fold = AllReduce.Fold(rank: ctx.rank, size: n)
        let kernel = Reduction.kernel(type, op)
        let scratch = try ctx.scratch.get(2 * n * blockBytes)
        let acc = scratch, tmp = scratch + n * blockBytes
        guard let input = try AllReduce.foldIn(ctx, fold, send: send, into: acc, count: n * count, type: type, op: op, tmp: tmp) else {
            let q = try ctx.recv(ctx.rank + 1, lane: 255, recv, blockBytes)
            try ctx.wait(q, peer: ctx.rank + 1)
            if op == .avg { Reduction.divide(recv, count: count, type: type, by: n) }
            return
        }
        func block(_ j: Int) -> Int { j < fold.extra ? 2 * j : j + fold.extra }  // first block of run j
        // Runs in elements: run j begins at block(j) · count.
        _ = try AllReduce.halving(ctx, fold, input: input, into: acc, tmp: tmp, elementSize: es, kernel: kernel, start: { block($0) * count })
        if fold.takes(ctx.rank) {
            let s = try ctx.send(ctx.rank - 1, lane: 255, acc + (ctx.rank - 1) * blockBytes, blockBytes)
            try ctx.wait(s, peer: ctx.rank - 1)
        }
        recv.copyMemory(from: acc + ctx.rank * blockBytes, byteCount: blockBytes)
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: n) }
    }

    /// Ring reduce-scatter: block b ends on rank b. At step s a rank sends its running partial of block
    /// (r−s−1) and receives the left neighbour's partial of block (r−s−2), which it combines with its
    /// own input; the last step lands in `recv`.
    package static func reduceScatterRing(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                                  count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        let bytes = count * type.size
        if n == 1 {
            if UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: bytes) }
            return
        }
        let kernel = Reduction.kernel(type, op)
        let scratch = try ctx.scratch.get(2 * max(bytes, 1))
        let tmp = scratch, acc = scratch + max(bytes, 1)
        let right = (r + 1) % n, left = (r + n - 1) % n
        @inline(__always) func block(_ b: Int) -> Int { ((b % n) + n) % n }
        for s in 0..<(n - 1) {
            let sendBlock = block(r - s - 1), recvBlock = block(r - s - 2)
            let src = s == 0 ? send + sendBlock * bytes : UnsafeRawPointer(acc)
            try ctx.exchange(lane: 0, to: right, src, bytes, from: left, tmp, bytes)
            let dst = s == n - 2 ? recv : acc
            kernel(dst, send + recvBlock * bytes, tmp, count)
        }
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: n) }
    }

    // MARK: broadcast

    /// Binomial: a binomial tree from the root (⌈log₂ n⌉ rounds, the whole buffer per message).
    /// Chain: from the root along the ranks, pipelined in chunks so every link carries a chunk at once.
    package static func broadcast(_ algo: Algorithm, _ ctx: CollectiveContext, buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        let n = ctx.size
        if n == 1 || bytes == 0 { return }
        if algo == .staged, let arena = ctx.arena { return try Staged.broadcast(ctx, arena: arena, buffer: buffer, bytes: bytes, root: root) }
        let v = (ctx.rank - root + n) % n  // position relative to the root
        // The root only sends: its direct children tell it, with an empty message as they start, that
        // they are in this very operation (one extra latency on the root only).
        var readies: [(Request, Int)] = []
        if algo == .binomial {
            // Receive from the parent (clear the lowest set bit), then send to the children.
            var mask = 1
            while mask < n {
                if v & mask != 0 {
                    let parent = ((v - mask) + root) % n
                    if v == mask { readies.append((try ctx.sendReady(to: parent), parent)) }
                    let rq = try ctx.recv(parent, lane: 0, buffer, bytes)
                    try ctx.wait(rq, peer: parent)
                    break
                }
                mask <<= 1
            }
            mask >>= 1
            var sends: [(Request, Int)] = []
            while mask > 0 {
                if v + mask < n {
                    let child = (v + mask + root) % n
                    if v == 0 { readies.append((try ctx.recvReady(from: child), child)) }
                    sends.append((try ctx.send(child, lane: 0, UnsafeRawPointer(buffer), bytes), child))
                }
                mask >>= 1
            }
            for (s, p) in sends { try ctx.wait(s, peer: p) }
            for (q, p) in readies { try ctx.wait(q, peer: p) }
            return
        }
        let prev = v == 0 ? -1 : (ctx.rank - 1 + n) % n
        let next = v == n - 1 ? -1 : (ctx.rank + 1) % n
        let chunk = chunkBytes
        let chunks = (bytes + chunk - 1) / chunk
        func piece(_ k: Int) -> (UnsafeMutableRawPointer, Int) { (buffer + k * chunk, min(chunk, bytes - k * chunk)) }
        var pendingRecv: Request?
        var sends: [Request?] = Array(repeating: nil, count: chunks)
        if v == 1 { readies.append((try ctx.sendReady(to: prev), prev)) }
        if v == 0 { readies.append((try ctx.recvReady(from: next), next)) }
        if prev >= 0 { let (p, l) = piece(0); pendingRecv = try ctx.recv(prev, lane: 0, p, l) }
        for k in 0..<chunks {
            if prev >= 0 {
                let r = pendingRecv!
                if k + 1 < chunks { let (p, l) = piece(k + 1); pendingRecv = try ctx.recv(prev, lane: 0, p, l) }
                try ctx.wait(r, peer: prev)
            }
            if next >= 0 {
                let (p, l) = piece(k)
                sends[k] = try ctx.send(next, lane: 0, UnsafeRawPointer(p), l)
                if k >= 2, let old = sends[k - 2] { try ctx.wait(old, peer: next); sends[k - 2] = nil }
            }
        }
        for case let s? in sends { try ctx.wait(s, peer: next) }
        for (q, p) in readies { try ctx.wait(q, peer: p) }
    }

    // MARK: reduce

    package static func reduce(_ algo: Algorithm, _ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
                       count: Int, type: DataType, op: ReduceOp, root: Int) throws(CCLError) {
        if ctx.size == 1 {
            if let recv, UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: count * type.size) }
            return
        }
        if algo == .binomial { return try reduceBinomial(ctx, send: send, recv: recv, count: count, type: type, op: op, root: root) }
        try reduceChain(ctx, send: send, recv: recv, count: count, type: type, op: op, root: root)
    }

    /// Binomial tree towards the root: in round k a rank whose relative position has bit k set sends
    /// its partial to position − 2^k and leaves; the others add the partial of position + 2^k.
    package static func reduceBinomial(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
                               count: Int, type: DataType, op: ReduceOp, root: Int) throws(CCLError) {
        let n = ctx.size, bytes = count * type.size
        let v = (ctx.rank - root + n) % n
        let kernel = Reduction.kernel(type, op)
        let scratch = try ctx.scratch.get(2 * max(bytes, 1))
        let tmp = scratch
        let acc = v == 0 ? recv! : scratch + max(bytes, 1)
        var partial = send
        // Every parent sends each child an empty "ready" as it starts: a rank whose part only sends (a
        // leaf) still hears from a peer in this very operation before it returns.
        var readies: [(Request, Int)] = []
        var lowest = 1  // v's lowest set bit (the root: the power of two ≥ n)
        while lowest < n && v & lowest == 0 { lowest <<= 1 }
        if v != 0 { let parent = (v - lowest + root) % n; readies.append((try ctx.recvReady(from: parent), parent)) }
        var m = 1
        while m < lowest && m < n {
            if v + m < n { let child = (v + m + root) % n; readies.append((try ctx.sendReady(to: child), child)) }
            m <<= 1
        }
        var mask = 1
        while mask < n {
            if v & mask != 0 {
                let parent = (v - mask + root) % n
                let s = try ctx.send(parent, lane: 0, partial, bytes)
                try ctx.wait(s, peer: parent)
                for (q, p) in readies { try ctx.wait(q, peer: p) }
                return
            }
            if v + mask < n {
                let child = (v + mask + root) % n
                let q = try ctx.recv(child, lane: 0, tmp, bytes)
                try ctx.wait(q, peer: child)
                kernel(acc, partial, UnsafeRawPointer(tmp), count)
                partial = UnsafeRawPointer(acc)
            }
            mask <<= 1
        }
        for (q, p) in readies { try ctx.wait(q, peer: p) }
        if op == .avg { Reduction.divide(acc, count: count, type: type, by: n) }  // only the root gets here
    }

    /// Chain towards the root, pipelined in chunks: the farthest rank sends its input; every other
    /// rank combines what arrives with its own input and passes it on; the root writes the result.
    package static func reduceChain(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
                            count: Int, type: DataType, op: ReduceOp, root: Int) throws(CCLError) {
        let n = ctx.size, esize = type.size
        let bytes = count * esize
        let v = (ctx.rank - root + n) % n
        let kernel = Reduction.kernel(type, op)
        let chunkElems = max(1, (bytes <= 64 << 10 ? max(bytes, 1) : chunkBytes) / esize)
        let chunks = (count + chunkElems - 1) / chunkElems
        let from = v == n - 1 ? -1 : (ctx.rank + 1) % n   // the next rank away from the root
        let to = v == 0 ? -1 : (ctx.rank - 1 + n) % n     // towards the root
        // Two receive buffers (one filling while the other is reduced) and two partials (one being sent).
        let slot = chunkElems * esize
        let scratch = try ctx.scratch.get(4 * slot)
        var sends: [Request?] = [nil, nil]
        var recvReq: Request?
        // Each rank tells the one it receives from, as it starts, that it is in this operation: the
        // farthest rank only sends and must hear from a peer too.
        var readies: [(Request, Int)] = []
        if from >= 0 { readies.append((try ctx.sendReady(to: from), from)) }
        if to >= 0 { readies.append((try ctx.recvReady(from: to), to)) }
        func range(_ k: Int) -> (Int, Int) { (k * chunkElems, min(chunkElems, count - k * chunkElems)) }
        if from >= 0 { let (_, c) = range(0); recvReq = try ctx.recv(from, lane: 0, scratch, c * esize) }
        for k in 0..<chunks {
            let (off, c) = range(k)
            var out: UnsafeRawPointer = send + off * esize
            if from >= 0 {
                let rq = recvReq!
                if k + 1 < chunks {
                    let (_, c2) = range(k + 1)
                    recvReq = try ctx.recv(from, lane: 0, scratch + ((k + 1) % 2) * slot, c2 * esize)
                }
                try ctx.wait(rq, peer: from)
                let incoming = scratch + (k % 2) * slot
                let partial: UnsafeMutableRawPointer
                if v == 0 { partial = recv! + off * esize } else {
                    if let s = sends[k % 2] { try ctx.wait(s, peer: to); sends[k % 2] = nil }
                    partial = scratch + (2 + k % 2) * slot
                }
                kernel(partial, send + off * esize, incoming, c)
                out = UnsafeRawPointer(partial)
            } else if v == 0, let recv {
                recv.advanced(by: off * esize).copyMemory(from: out, byteCount: c * esize)
            }
            if to >= 0 {
                if let s = sends[k % 2] { try ctx.wait(s, peer: to) }
                sends[k % 2] = try ctx.send(to, lane: 0, out, c * esize)
            }
        }
        for case let s? in sends { try ctx.wait(s, peer: to) }
        for (q, p) in readies { try ctx.wait(q, peer: p) }
        if v == 0, op == .avg, let recv { Reduction.divide(recv, count: count, type: type, by: n) }
    }

    // MARK: all-to-all, gather, scatter

    /// Pairwise exchange: at step s, send to r+s and receive from r−s; n−1 steps, one pair at a time.
    package static func allToAll(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        (recv + r * bytes).copyMemory(from: send + r * bytes, byteCount: bytes)
        for s in 1..<max(n, 1) {
            let to = (r + s) % n, from = (r - s + n) % n
            try ctx.exchange(lane: 0, to: to, send + to * bytes, bytes, from: from, recv + from * bytes, bytes)
        }
    }

    /// The root sends every other rank an empty "ready" as it starts (they only send otherwise).
    package static func gather(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?, bytes: Int, root: Int) throws(CCLError) {
        if ctx.rank != root {
            let ready = try ctx.recvReady(from: root)
            let s = try ctx.send(root, lane: 0, send, bytes)
            try ctx.wait(s, peer: root)
            try ctx.wait(ready, peer: root)
            return
        }
        guard let recv else { return }
        var reqs: [(Request, Int)] = []
        for p in 0..<ctx.size where p != root {
            reqs.append((try ctx.recv(p, lane: 0, recv + p * bytes, bytes), p))
            reqs.append((try ctx.sendReady(to: p), p))
        }
        let mine = recv + root * bytes
        if UnsafeRawPointer(mine) != send { mine.copyMemory(from: send, byteCount: bytes) }
        for (q, p) in reqs { try ctx.wait(q, peer: p) }
    }

    /// Every other rank sends the root an empty "ready" as it starts (the root only sends otherwise).
    package static func scatter(_ ctx: CollectiveContext, send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        if ctx.rank != root {
            let ready = try ctx.sendReady(to: root)
            let q = try ctx.recv(root, lane: 0, recv, bytes)
            try ctx.wait(q, peer: root)
            try ctx.wait(ready, peer: root)
            return
        }
        guard let send else { return }
        var reqs: [(Request, Int)] = []
        for p in 0..<ctx.size where p != root {
            reqs.append((try ctx.recvReady(from: p), p))
            reqs.append((try ctx.send(p, lane: 0, send + p * bytes, bytes), p))
        }
        let mine = send + root * bytes
        if mine != UnsafeRawPointer(recv) { recv.copyMemory(from: mine, byteCount: bytes) }
        for (q, p) in reqs { try ctx.wait(q, peer: p) }
    }
}
