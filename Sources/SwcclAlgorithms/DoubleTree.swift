import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

extension Knobs {
    package static let treeChunkBytes = Knob.int("SWCCL_TREE_CHUNK_SIZE", default: 128 << 10, "pipeline chunk of the tree allreduce, in bytes")
}

/// The double binary tree (as NCCL builds it): two binary trees over the same ranks such that, for an
/// even rank count, every rank is a leaf in one and interior in the other, so both trees together
/// load every rank about equally. Each tree carries half the buffer: chunks are reduced up towards the
/// root and broadcast back down, pipelined.
package enum DoubleTree {
    /// One rank's place in one tree: its parent (-1 at the root) and up to two children (-1 for none).
    package struct Node: Equatable, CustomStringConvertible, Sendable {
        package var parent: Int
        package var children: (Int, Int)
        package static func == (a: Node, b: Node) -> Bool { a.parent == b.parent && a.children == b.children }
        package var kids: [Int] { [children.0, children.1].filter { $0 >= 0 } }
        package var description: String { "parent \(parent) children \(kids)" }
    }

    /// Tree 0: an in-order binary tree rooted at rank 0 whose leaves are the odd ranks. A rank's lowest
    /// set bit b gives its level: its parent is (rank ^ b) | 2b (or rank ^ b when that is out of range),
    /// its children rank ± b/2 (the upper one shrunk until it is in range).
    package static func btree(rank: Int, size n: Int) -> Node {
        if n <= 1 { return Node(parent: -1, children: (-1, -1)) }
        var bit = 1
        while bit < n && rank & bit == 0 { bit <<= 1 }
        if rank == 0 { return Node(parent: -1, children: (bit >> 1, -1)) }  // bit is the power of two ≥ n
        var parent = (rank ^ bit) | (bit << 1)
        if parent >= n { parent = rank ^ bit }
        var low = bit >> 1
        let first = low == 0 ? -1 : rank - low
        var second = -1
        while low > 0 {
            if rank + low < n { second = rank + low; break }
            low >>= 1
        }
        return Node(parent: parent, children: (first, second))
    }

    /// Both trees for `rank`: tree 1 is tree 0 mirrored (rank ↦ n−1−rank) for an even rank count, and
    /// shifted by one for an odd count.
    package static func trees(rank: Int, size n: Int) -> (Node, Node) {
        let t0 = btree(rank: rank, size: n)
        let map: (Int) -> Int, unmap: (Int) -> Int
        if n % 2 == 0 { map = { n - 1 - $0 }; unmap = map } else { map = { ($0 - 1 + n) % n }; unmap = { ($0 + 1) % n } }
        let m = btree(rank: map(rank), size: n)
        func back(_ x: Int) -> Int { x < 0 ? -1 : unmap(x) }
        return (t0, Node(parent: back(m.parent), children: (back(m.children.0), back(m.children.1))))
    }

    /// Levels below the root, the same in both trees: the root's only child is the largest power of
    /// two 2^k < n, whose subtree has k levels of halving bits below it (out-of-range parents only
    /// shorten paths).
    package static func depth(_ n: Int) -> Int {
        n <= 1 ? 0 : (Int.bitWidth - (n - 1).leadingZeroBitCount - 1) + 1
    }

    /// One tree's pipeline on this rank, as indices into the chunk sequence: chunks [0, upPosted) have
    /// their receives from the children posted, [0, reduced) are combined (and sent up, or final at the
    /// root), [0, downPosted) wait for the result from the parent, [0, downReceived) have it and are
    /// being sent to the children, [0, finished) are complete.
    package struct Pipe {
        package let node: Node
        package let kids: [Int]
        package let base: Int        // first element of this tree's half
        package let count: Int
        package let chunk: Int       // elements
        package let chunks: Int
        package let laneUp: Int, laneDown: Int
        package let slots: UnsafeMutableRawPointer  // window × kids chunk buffers for the children's partials
        package var upRecv: [Request?], upSend: [Request?], downRecv: [Request?], downSend: [Request?]
        package var upPosted = 0, reduced = 0, downPosted = 0, downReceived = 0, finished = 0

        package var isRoot: Bool { node.parent < 0 }
        package var done: Bool { finished == chunks }
        package func range(_ k: Int) -> (Int, Int) { (base + k * chunk, min(chunk, count - k * chunk)) }
    }

    package static let window = 4

    package static func allReduce(_ ctx: CollectiveContext, send: UnsafeRawPointer, recv: UnsafeMutableRawPointer,
                          count: Int, type: DataType, op: ReduceOp) throws(CCLError) {
        let es = type.size, n = ctx.size
        let kernel = Reduction.kernel(type, op)
        let (t0, t1) = trees(rank: ctx.rank, size: n)
        let half = count / 2
        let chunkElems = max(1, min(max(Knobs.treeChunkBytes.value, 1024), max((half * es + 3) / 4, 4096)) / es)
        let W = window
        let slotBytes = chunkElems * es
        let scratch = try ctx.scratch.get(2 * W * 2 * slotBytes)
        var pipes: [Pipe] = []
        for (t, node) in [t0, t1].enumerated() {
            let base = t == 0 ? 0 : half
            let c = t == 0 ? half : count - half
            if c == 0 { continue }
            let chunks = (c + chunkElems - 1) / chunkElems
            let kids = node.kids
            pipes.append(Pipe(node: node, kids: kids, base: base, count: c, chunk: chunkElems, chunks: chunks,
                              laneUp: 2 * t, laneDown: 2 * t + 1, slots: scratch + t * W * 2 * slotBytes,
                              upRecv: Array(repeating: nil, count: chunks * 2), upSend: Array(repeating: nil, count: chunks),
                              downRecv: Array(repeating: nil, count: chunks), downSend: Array(repeating: nil, count: chunks * 2)))
        }
        @inline(__always) func slot(_ p: Pipe, _ k: Int, _ c: Int) -> UnsafeMutableRawPointer { p.slots + ((k % W) * 2 + c) * slotBytes }

        func advance(_ p: inout Pipe) throws(CCLError) -> Bool {
            var moved = false
            // 1. Receives of the children's partials, a window ahead of the reduction.
            while !p.kids.isEmpty && p.upPosted < p.chunks && p.upPosted < p.reduced + W {
                let k = p.upPosted, (_, c) = p.range(k)
                for (i, kid) in p.kids.enumerated() { p.upRecv[k * 2 + i] = try ctx.recv(kid, lane: p.laneUp, slot(p, k, i), c * es) }
                p.upPosted += 1; moved = true
            }
            // 2. Combine a chunk whose partials are in; send it up (or, at the root, start it down).
            while p.reduced < p.chunks && (p.kids.isEmpty || p.reduced < p.upPosted) && p.reduced < p.finished + W {
                let k = p.reduced
                guard try ctx.done(&p.upRecv[k * 2]), try ctx.done(&p.upRecv[k * 2 + 1]) else { break }
                let (off, c) = p.range(k)
                let dst = recv + off * es
                var partial = send + off * es
                for i in 0..<p.kids.count {
                    kernel(dst, partial, UnsafeRawPointer(slot(p, k, i)), c)
                    partial = UnsafeRawPointer(dst)
                }
                if p.isRoot {
                    if op == .avg { Reduction.divide(dst, count: c, type: type, by: n) }
                    for (i, kid) in p.kids.enumerated() { p.downSend[k * 2 + i] = try ctx.send(kid, lane: p.laneDown, UnsafeRawPointer(dst), c * es) }
                    p.downPosted = k + 1; p.downReceived = k + 1
                } else {
                    p.upSend[k] = try ctx.send(p.node.parent, lane: p.laneUp, partial, c * es)
                }
                p.reduced += 1; moved = true
            }
            if !p.isRoot {
                // 3. Once a chunk's partial has left, its result may be received in its place.
                while p.downPosted < p.reduced, try ctx.done(&p.upSend[p.downPosted]) {
                    let (off, c) = p.range(p.downPosted)
                    p.downRecv[p.downPosted] = try ctx.recv(p.node.parent, lane: p.laneDown, recv + off * es, c * es)
                    p.downPosted += 1; moved = true
                }
                // 4. A result arrived: pass it to the children.
                while p.downReceived < p.downPosted, try ctx.done(&p.downRecv[p.downReceived]) {
                    let k = p.downReceived, (off, c) = p.range(k)
                    for (i, kid) in p.kids.enumerated() { p.downSend[k * 2 + i] = try ctx.send(kid, lane: p.laneDown, UnsafeRawPointer(recv + off * es), c * es) }
                    p.downReceived += 1; moved = true
                }
            }
            // 5. Sends to the children done: the chunk is finished here.
            while p.finished < p.downReceived, try ctx.done(&p.downSend[p.finished * 2]), try ctx.done(&p.downSend[p.finished * 2 + 1]) {
                p.finished += 1; moved = true
            }
            return moved
        }

        var progress = CollectiveContext.Progress()
        while pipes.contains(where: { !$0.done }) {
            var advanced = false
            for i in pipes.indices where !pipes[i].done { if try advance(&pipes[i]) { advanced = true } }
            // Name a peer for a timeout: the earliest stage this rank still waits on.
            guard let p = pipes.first(where: { !$0.done }) else { break }
            let receiving = p.reduced < p.chunks && !p.kids.isEmpty
            let peer = receiving ? p.kids[0] : (p.isRoot ? p.kids.first ?? 0 : p.node.parent)
            try ctx.idle(advanced: advanced, progress: &progress, waitingOn: peer, receiving: receiving || !p.isRoot)
        }
    }
}
