import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// All-to-all (`pairwise`), written only against the transport protocol: block j (`o.count` elements)
/// of `o.send` to rank j, rank j's block into block j of `o.recv`.
package enum AllToAll {
    package static func pairwise(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        try pairwise(ctx, send: o.input, recv: o.output, bytes: o.bytes)
    }

    /// Pairwise exchange: at step s, send to r+s and receive from r−s; n−1 steps, one pair at a time.
    package static func pairwise(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer, bytes: Int) throws(CCLError) {
        let n = ctx.size, r = ctx.rank
        (recv + r * bytes).copyMemory(from: send + r * bytes, byteCount: bytes)
        for s in 1..<max(n, 1) {
            let to = (r + s) % n, from = (r - s + n) % n
            try ctx.exchange(lane: 0, to: to, send + to * bytes, bytes, from: from, recv + from * bytes, bytes)
        }
    }
}
