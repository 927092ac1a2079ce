import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Broadcast algorithms (`binomial`, `chain`; `staged` in Staged.swift), written only against the
/// transport protocol: `o.count` elements of the root's `o.send` into every rank's `o.recv`. The root
/// only sends: its direct children (chain: the next rank) tell it, with an empty message as they
/// start, that they are in this very operation (one extra latency on the root only).
package enum Broadcast {
    /// Binomial: a binomial tree from the root (⌈log₂ n⌉ rounds, the whole buffer per message).
    package static func binomial(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard prepare(ctx, o) else { return }
        let buffer = o.output, bytes = o.bytes, root = o.root, n = ctx.size
        let v = (ctx.rank - root + n) % n  // position relative to the root
        var readies: [(Request, Int)] = []
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
    }

    /// Chain: from the root along the ranks, pipelined in chunks so every link carries a chunk at once.
    package static func chain(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard prepare(ctx, o) else { return }
        try chain(ctx, buffer: o.output, bytes: o.bytes, root: o.root)
    }

    /// Staged through the symmetric window (one host); the chain without one.
    package static func staged(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        guard prepare(ctx, o) else { return }
        guard let arena = ctx.arena else { return try chain(ctx, buffer: o.output, bytes: o.bytes, root: o.root) }
        try Staged.broadcast(ctx, arena: arena, buffer: o.output, bytes: o.bytes, root: o.root)
    }

    /// The root's input into its output (unless in place); false when nothing moves (one rank, or no bytes).
    @inline(__always) static func prepare(_ ctx: CollectiveContext, _ o: Operands) -> Bool {
        if ctx.rank == o.root, let send = o.send, send != UnsafeRawPointer(o.output) { o.output.copyMemory(from: send, byteCount: o.bytes) }
        return ctx.size > 1 && o.bytes > 0
    }

    static func chain(_ ctx: CollectiveContext, buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
        let n = ctx.size
        let v = (ctx.rank - root + n) % n
        var readies: [(Request, Int)] = []
        let prev = v == 0 ? -1 : (ctx.rank - 1 + n) % n
        let next = v == n - 1 ? -1 : (ctx.rank + 1) % n
        let chunk = Knobs.chainChunkBytes
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
}
