import SwcclSystem
import SwcclCore

/// One transport made of several backends, each serving some of the peers: the communicator's
/// transport when its ranks span hosts and some share one (shared memory to the peers on this host,
/// TCP to the others). Algorithms see one `Transport`; requests carry the backend in their slot's
/// high bits.
///
/// Waiting: every backend is polled without blocking while spinning; after that the rank sleeps in
/// the backend with the most peers that has a kernel wait of its own (TCP's `poll`), in slices of
/// `sliceNanos`, and polls the others between slices — so a shared-memory message is noticed within a
/// slice even while the rank sleeps on its sockets, and an idle rank wakes only every slice.
package final class PerPeerTransport: Transport, @unchecked Sendable {
    package let backends: [any Transport]
    /// Backend index of each rank (−1 for this rank).
    package let route: [Int]
    package let capabilities: TransportCapabilities
    private let sleeper: Int
    package static let sliceNanos: UInt64 = 1_000_000
    private static let slotBits = 28

    /// `route[r]` is the index in `backends` that serves rank `r`.
    package init(backends: [any Transport], route: [Int], sleeper: Int) {
        self.backends = backends
        self.route = route
        self.sleeper = sleeper
        // Algorithms and the cost model see the slowest backend's figures and no shared arena (not
        // every rank can read every other's memory).
        let slow = backends.max { $0.capabilities.betaNanosPerByte < $1.capabilities.betaNanosPerByte }!.capabilities
        capabilities = TransportCapabilities(
            name: backends.map(\.capabilities.name).joined(separator: "+"),
            eagerThreshold: backends.map(\.capabilities.eagerThreshold).min()!,
            maxMessageBytes: backends.map(\.capabilities.maxMessageBytes).min()!,
            oneSidedWrites: false, needsRegistration: backends.contains { $0.capabilities.needsRegistration },
            maxOutstandingRequests: backends.map(\.capabilities.maxOutstandingRequests).min()!, sameHostOnly: false,
            alphaNanos: slow.alphaNanos, betaNanosPerByte: slow.betaNanosPerByte)
        precondition(backends.allSatisfy { $0.capabilities.maxOutstandingRequests < 1 << PerPeerTransport.slotBits })
    }

    package var localAddress: EndpointAddress { backends[0].localAddress }

    private func backend(_ peer: Int) throws(CCLError) -> Int {
        guard peer >= 0, peer < route.count, route[peer] >= 0 else {
            throw CCLError(.invalidArgument, "rank \(peer) is not a connected peer", peer: peer)
        }
        return route[peer]
    }

    @inline(__always) private func wrap(_ r: Request, _ b: Int) -> Request {
        Request(slot: UInt32(b) << PerPeerTransport.slotBits | r.slot, generation: r.generation)
    }

    @inline(__always) private func unwrap(_ r: Request) -> (Int, Request) {
        (Int(r.slot >> PerPeerTransport.slotBits), Request(slot: r.slot & (1 << PerPeerTransport.slotBits - 1), generation: r.generation))
    }

    /// Each backend connects its own peers, in backend order on every rank.
    package func connect(_ peers: [PeerInfo], deadline: Deadline) throws(CCLError) {
        for (b, t) in backends.enumerated() {
            try t.connect(peers.filter { route[$0.rank] == b }, deadline: deadline)
        }
    }

    /// Registered with the backend that needs registration (verbs), if any; the key carries its index.
    package func register(_ buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> MemoryRegion {
        guard let b = backends.firstIndex(where: { $0.capabilities.needsRegistration }) else {
            return MemoryRegion(base: buffer.baseAddress, length: buffer.count, key: 0)
        }
        var r = try backends[b].register(buffer)
        r.key = UInt64(b + 1) << 56 | r.key
        return r
    }

    package func deregister(_ region: MemoryRegion) {
        let b = Int(region.key >> 56) - 1
        guard b >= 0, b < backends.count else { return }
        var r = region
        r.key &= (1 << 56) - 1
        backends[b].deregister(r)
    }

    package func isend(to peer: Int, tag: UInt64, _ data: UnsafeRawBufferPointer) throws(CCLError) -> Request {
        let b = try backend(peer)
        return wrap(try backends[b].isend(to: peer, tag: tag, data), b)
    }

    package func irecv(from peer: Int, tag: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(CCLError) -> Request {
        let b = try backend(peer)
        return wrap(try backends[b].irecv(from: peer, tag: tag, into: buffer), b)
    }

    package func test(_ request: Request) throws(CCLError) -> Bool {
        let (b, r) = unwrap(request)
        guard b < backends.count else { throw CCLError(.invalidUsage, "stale or unknown request handle") }
        return try backends[b].test(r)
    }

    package func wait(_ request: Request, deadline: Deadline) throws(CCLError) {
        while true {
            if try test(request) { return }
            if try !waitForProgress(deadline: deadline) && deadline.hasPassed {
                let (b, r) = unwrap(request)
                try backends[b].wait(r, deadline: deadline)  // throws its timeout, naming the peer
                return
            }
        }
    }

    package func waitForProgress(deadline: Deadline) throws(CCLError) -> Bool {
        let now = Deadline(nanos: 0)  // already passed: one pass without blocking
        let spinUntil = Sys.monotonicNanos() &+ Knobs.spinNanos
        while true {
            for t in backends { if try t.waitForProgress(deadline: now) { return true } }
            let clock = Sys.monotonicNanos()
            if clock >= deadline.nanos { return false }
            if clock < spinUntil { Spin.yield(); continue }
            let slice = Deadline(nanos: min(deadline.nanos, clock &+ PerPeerTransport.sliceNanos))
            if try backends[sleeper].waitForProgress(deadline: slice) { return true }
        }
    }

    package func abort(_ reason: String) { for t in backends { t.abort(reason) } }

    package func unexpectedTags(from peer: Int) -> [UInt64] {
        guard peer >= 0, peer < route.count, route[peer] >= 0 else { return [] }
        return backends[route[peer]].unexpectedTags(from: peer)
    }

    package func announce(_ notice: Notice) { for t in backends { t.announce(notice) } }

    package func peerNotice(_ peer: Int) -> Notice? {
        guard peer >= 0, peer < route.count, route[peer] >= 0 else { return nil }
        return backends[route[peer]].peerNotice(peer)
    }

    package func close() { for t in backends { t.close() } }
}
