import Glibc

/// The collectives other than allreduce, written only against the transport protocol.
/// Blocks of rank-indexed arrays are `bytes` long; ring orders are relative to the rank.
enum Collectives {
    /// Pipeline chunk for chains (broadcast, reduce).
    static var chunkBytes: Int { max(4096, Knobs.chunkBytes.value) }

    // MARK: all-gather

    /// Ring all-gather: n−1 steps; at step s a rank forwards block (r−s) to its right neighbour and
    /// receives block (r−s−1) from its left one, straight into the output.
    static func allGather(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        let mine = recv + r * bytes
        if UnsafeRawPointer(mine) != send { mine.copyMemory(from: send, byteCount: bytes) }
        let right = (r + 1) % n, left = (r + n - 1) % n
        for s in 0..<(n - 1) {
            let sb = ((r - s) % n + n) % n, rb = ((r - s - 1) % n + n) % n
            let rq = try ctx.recv(left, lane: 0, recv + rb * bytes, bytes)
            let sq = try ctx.send(right, lane: 0, UnsafeRawPointer(recv + sb * bytes), bytes)
            try ctx.wait(rq, peer: left)
            try ctx.wait(sq, peer: right)
        }
    }

    // MARK: reduce-scatter

    /// Ring reduce-scatter: block b ends on rank b. At step s a rank sends its running partial of block
    /// (r−s−1) and receives the left neighbour's partial of block (r−s−2), which it combines with its
    /// own input; the last step lands in `recv`.
    static func reduceScatter(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                              count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        let bytes = count * type.size
        if n == 1 {
            if UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: bytes) }
            return
        }
        let kernel = Reduction.kernel(type, op)
        let scratch = ctx.scratch.get(2 * max(bytes, 1))
        let tmp = scratch, acc = scratch + max(bytes, 1)
        let right = (r + 1) % n, left = (r + n - 1) % n
        @inline(__always) func block(_ b: Int) -> Int { ((b % n) + n) % n }
        for s in 0..<(n - 1) {
            let sendBlock = block(r - s - 1), recvBlock = block(r - s - 2)
            let src = s == 0 ? send + sendBlock * bytes : UnsafeRawPointer(acc)
            let rq = try ctx.recv(left, lane: 0, tmp, bytes)
            let sq = try ctx.send(right, lane: 0, src, bytes)
            try ctx.wait(rq, peer: left)
            try ctx.wait(sq, peer: right)
            let dst = s == n - 2 ? recv : acc
            kernel(dst, send + recvBlock * bytes, tmp, count)
        }
        if op == .avg { Reduction.divide(recv, count: count, type: type, by: n) }
    }

    // MARK: broadcast

    /// Small messages: binomial tree from the root (⌈log₂ n⌉ rounds). Large ones: a chain from the
    /// root, pipelined in chunks so every link carries a chunk at once.
    static func broadcast(_ ctx: CollectiveContext, buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        let n = ctx.size
        if n == 1 || bytes == 0 { return }
        let v = (ctx.rank - root + n) % n  // position relative to the root
        if bytes <= 64 << 10 {
            // Binomial: receive from the parent (clear the lowest set bit), then send to children.
            var mask = 1
            while mask < n {
                if v & mask != 0 {
                    let parent = ((v - mask) + root) % n
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
                    sends.append((try ctx.send(child, lane: 0, UnsafeRawPointer(buffer), bytes), child))
                }
                mask >>= 1
            }
            for (s, p) in sends { try ctx.wait(s, peer: p) }
            return
        }
        let prev = v == 0 ? -1 : (ctx.rank - 1 + n) % n
        let next = v == n - 1 ? -1 : (ctx.rank + 1) % n
        let chunk = chunkBytes
        let chunks = (bytes + chunk - 1) / chunk
        func piece(_ k: Int) -> (UnsafeMutableRawPointer, Int) { (buffer + k * chunk, min(chunk, bytes - k * chunk)) }
        var pendingRecv: Request?
        var sends: [Request?] = Array(repeating: nil, count: chunks)
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
    }

    // MARK: reduce

    /// Chain towards the root, pipelined in chunks: the farthest rank sends its input; every other
    /// rank combines what arrives with its own input and passes it on; the root writes the result.
    static func reduce(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
                       count: Int, type: DataType, op: ReduceOp, root: Int) throws(CCLError) {
        let n = ctx.size, esize = type.size
        let bytes = count * esize
        let v = (ctx.rank - root + n) % n
        if n == 1 {
            if let recv, UnsafeRawPointer(recv) != send { recv.copyMemory(from: send, byteCount: bytes) }
            return
        }
        let kernel = Reduction.kernel(type, op)
        let chunkElems = max(1, (bytes <= 64 << 10 ? max(bytes, 1) : chunkBytes) / esize)
        let chunks = (count + chunkElems - 1) / chunkElems
        let from = v == n - 1 ? -1 : (ctx.rank + 1) % n   // the next rank away from the root
        let to = v == 0 ? -1 : (ctx.rank - 1 + n) % n     // towards the root
        // Two receive buffers (one filling while the other is reduced) and two partials (one being sent).
        let slot = chunkElems * esize
        let scratch = ctx.scratch.get(4 * slot)
        var sends: [Request?] = [nil, nil]
        var recvReq: Request?
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
        if v == 0, op == .avg, let recv { Reduction.divide(recv, count: count, type: type, by: n) }
    }

    // MARK: all-to-all, gather, scatter

    /// Pairwise exchange: at step s, send to r+s and receive from r−s; n−1 steps, one pair at a time.
    static func allToAll(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        (recv + r * bytes).copyMemory(from: send + r * bytes, byteCount: bytes)
        for s in 1..<max(n, 1) {
            let to = (r + s) % n, from = (r - s + n) % n
            let rq = try ctx.recv(from, lane: 0, recv + from * bytes, bytes)
            let sq = try ctx.send(to, lane: 0, send + to * bytes, bytes)
            try ctx.wait(rq, peer: from)
            try ctx.wait(sq, peer: to)
        }
    }

    static func gather(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?, bytes: Int, root: Int) throws(CCLError) {
        if ctx.rank != root {
            let s = try ctx.send(root, lane: 0, send, bytes)
            try ctx.wait(s, peer: root)
            return
        }
        guard let recv else { return }
        var reqs: [(Request, Int)] = []
        for p in 0..<ctx.size where p != root { reqs.append((try ctx.recv(p, lane: 0, recv + p * bytes, bytes), p)) }
        let mine = recv + root * bytes
        if UnsafeRawPointer(mine) != send { mine.copyMemory(from: send, byteCount: bytes) }
        for (q, p) in reqs { try ctx.wait(q, peer: p) }
    }

    static func scatter(_ ctx: CollectiveContext, send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        if ctx.rank != root {
            let q = try ctx.recv(root, lane: 0, recv, bytes)
            try ctx.wait(q, peer: root)
            return
        }
        guard let send else { return }
        var reqs: [(Request, Int)] = []
        for p in 0..<ctx.size where p != root { reqs.append((try ctx.send(p, lane: 0, send + p * bytes, bytes), p)) }
        let mine = send + root * bytes
        if mine != UnsafeRawPointer(recv) { recv.copyMemory(from: mine, byteCount: bytes) }
        for (q, p) in reqs { try ctx.wait(q, peer: p) }
    }
}
