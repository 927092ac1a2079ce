import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// All-gather algorithms (`ring`, `recdbl`; `staged` in Staged.swift), written only against the
/// transport protocol. `o.count` elements per rank; block j of `o.recv` is rank j's.
package enum AllGather {
    /// Ring: n−1 steps; at step s a rank forwards block (r−s) to its right neighbour and receives
    /// block (r−s−1) from its left one, straight into the output.
    package static func ring(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        let n = ctx.size, r = ctx.rank, recv = o.output, bytes = o.bytes
        copyOwnBlock(ctx, o)
        let right = (r + 1) % n, left = (r + n - 1) % n
        for s in 0..<(n - 1) {
            let sb = ((r - s) % n + n) % n, rb = ((r - s - 1) % n + n) % n
            try ctx.exchange(lane: 0, to: right, UnsafeRawPointer(recv + sb * bytes), bytes, from: left, recv + rb * bytes, bytes)
        }
    }

    /// Recursive doubling for powers of two (at distance d, swap the d blocks held, aligned on d, with
    /// rank ^ d); Bruck's algorithm otherwise.
    package static func recursiveDoubling(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        let n = ctx.size, r = ctx.rank, recv = o.output, bytes = o.bytes
        if n & (n - 1) != 0 { return try bruck(ctx, send: o.input, recv: recv, bytes: bytes) }
        copyOwnBlock(ctx, o)
        var d = 1
        while d < n {
            let partner = r ^ d
            let lo = r & ~(d - 1), plo = partner & ~(d - 1)
            try ctx.exchange(lane: 0, to: partner, UnsafeRawPointer(recv + lo * bytes), d * bytes, from: partner, recv + plo * bytes, d * bytes)
            d <<= 1
        }
    }

    /// Staged through the symmetric window (one host); the ring without one.
    package static func staged(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard ctx.size > 1, let arena = ctx.arena else { return try ring(ctx, o) }
        try Staged.allGather(ctx, arena: arena, send: o.input, recv: o.output, bytes: o.bytes)
    }

    /// This rank's block into its place in the output (unless it is there already: in place).
    @inline(__always) static func copyOwnBlock(_ ctx: CollectiveContext, _ o: Operands) {
        let mine = o.output + ctx.rank * o.bytes
        if UnsafeRawPointer(mine) != o.input { mine.copyMemory(from: o.input, byteCount: o.bytes) }
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
}
