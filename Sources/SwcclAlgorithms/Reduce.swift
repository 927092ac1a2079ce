import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Reduce algorithms (`binomial`, `chain`), written only against the transport protocol: `o.count`
/// elements of every rank's `o.send` reduced into the root's `o.recv` (nil elsewhere).
package enum Reduce {
    package static func binomial(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try binomial(ctx, send: o.input, recv: ctx.rank == o.root ? o.recv : nil, count: o.count, type: o.type, op: o.op, root: o.root)
    }

    package static func chain(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard !single(ctx, o) else { return }
        try chain(ctx, send: o.input, recv: ctx.rank == o.root ? o.recv : nil, count: o.count, type: o.type, op: o.op, root: o.root)
    }

    /// One rank: the input is the result (copied unless in place); true when that was all.
    @inline(__always) static func single(_ ctx: CollectiveContext, _ o: Operands) -> Bool {
        guard ctx.size == 1 else { return false }
        if let recv = o.recv, UnsafeRawPointer(recv) != o.input { recv.copyMemory(from: o.input, byteCount: o.bytes) }
        return true
    }

    /// Binomial tree towards the root: in round k a rank whose relative position has bit k set sends
    /// its partial to position − 2^k and leaves; the others add the partial of position + 2^k.
    package static func binomial(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
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
    package static func chain(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?,
                            count: Int, type: DataType, op: ReduceOp, root: Int) throws(CCLError) {
        let n = ctx.size, esize = type.size
        let bytes = count * esize
        let v = (ctx.rank - root + n) % n
        let kernel = Reduction.kernel(type, op)
        let chunkElems = max(1, (bytes <= 64 << 10 ? max(bytes, 1) : Knobs.chainChunkBytes) / esize)
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
}
