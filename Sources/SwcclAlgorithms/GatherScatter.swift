import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// Gather: every rank's `o.count` elements into block j of the root's `o.recv`, in rank order. The
/// root posts all n−1 transfers at once.
package enum Gather {
    package static func run(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        try run(ctx, send: o.input, recv: ctx.rank == o.root ? o.recv : nil, bytes: o.bytes, root: o.root)
    }

    /// The root sends every other rank an empty "ready" as it starts (they only send otherwise).
    package static func run(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer?, bytes: Int, root: Int) throws(CCLError) {
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
}

/// Scatter: block j of the root's `o.send` to rank j. The root posts all n−1 transfers at once.
package enum Scatter {
    package static func run(_ ctx: CollectiveContext, _ o: Operands) throws(CCLError) {
        try run(ctx, send: ctx.rank == o.root ? o.send : nil, recv: o.output, bytes: o.bytes, root: o.root)
    }

    /// Every other rank sends the root an empty "ready" as it starts (the root only sends otherwise).
    package static func run(_ ctx: CollectiveContext, send: UnsafeRawPointer?, recv: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(CCLError) {
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
