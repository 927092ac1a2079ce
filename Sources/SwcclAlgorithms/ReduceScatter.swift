import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Reduce-scatter algorithms (`ring`, `halving`; `staged` in Staged.swift), written only against the
/// transport protocol. `o.count` elements per block; rank j ends with block j of the reduction.
package enum ReduceScatter {
    package static func ring(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        try ring(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    /// Recursive halving; one rank: the ring (a copy).
    package static func halving(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard ctx.size > 1 else { return try ring(ctx, o) }
        try halving(ctx, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
    }

    /// Staged through the symmetric window (one host); the ring without one.
    package static func staged(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard ctx.size > 1, let arena = ctx.arena else { return try ring(ctx, o) }
        try Staged.reduceScatter(ctx, arena: arena, send: o.input, recv: o.output, count: o.count, type: o.type, op: o.op)
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
    package static func ring(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
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
}
