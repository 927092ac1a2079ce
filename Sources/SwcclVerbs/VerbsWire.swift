import Glibc
import CSwcclVerbs
import SwcclSystem
import SwcclCore
import SwcclTransport

/// How RDMA verbs moves the engine's messages (`MessageWire`), over one reliable-connected queue pair
/// per peer and one completion queue with a completion channel (`VerbsFrames.swift`):
/// - eager messages (≤ the smaller of both ranks' `SWCCL_IB_EAGER_BYTES`) are copied into a registered
///   bounce slot and sent; the receiver keeps `recvBuffers` registered buffers posted per peer and
///   reposts each as soon as it has been read. Past the unexpected budget an arrival that matches no
///   receive stays in its buffer, not reposted, and so does everything after it from that peer
///   (`deferred`): the sender's SENDs wait in receiver-not-ready retries.
/// - large messages are receiver-driven: posting the receive sends a CTS naming the registered
///   destination; the sender announces the message with an RTS (so that matching stays in posting
///   order whatever the sizes) and, once it holds the CTS (CTSs match sends of a tag in order),
///   RDMA-writes the payload from its own registered buffer, ending with a write-with-immediate whose
///   immediate (the receive id) completes the receive.
/// - send work requests are signalled selectively (every `signalEvery`, the last write of a large
///   message, and whenever the queue or the bounce slots run low): a completion retires every earlier
///   request of its QP and frees their bounce slots. At most `queueDepth` are outstanding per QP;
///   what cannot be posted waits in order in an outbox.
/// - registration (`VerbsMemory.swift`): a cache of memory regions keyed by page range.
/// - a failed work completion, a fatal asynchronous event, a lost control connection or a size
///   mismatch fails the pair with an error naming the peer and moves its QP to the error state, so the
///   device stops touching the caller's memory; so does a timeout of a request whose buffer was
///   granted or is being written, and every QP goes to the error state before an abort or a broken
///   endpoint is reported (`quiesce`).
@usableFromInline package struct VerbsWire: MessageWire {
    @usableFromInline package typealias Core = MessageCore<VerbsWire>
    package static let setupMagic: UInt32 = 0x5357_4951       // "SWIQ"
    package static let headerBytes = 40
    package static let maxEagerBytes = 65536
    /// Largest single RDMA write; longer messages are written in pieces.
    package static let maxWriteBytes = 1 << 30

    @usableFromInline package struct RequestExtra: WireRequestState {
        /// Registration held (large messages).
        package var reg = 0
        /// Receive: its CTS went out. Send: sequence number of the final write, done once retired.
        package var ctsSent = false
        package var completionSeq: UInt64 = 0
        @usableFromInline package init() {}
    }

    package let rank: Int
    package let device: String
    package let eagerThreshold: Int
    package let queueDepth: Int
    package let recvBuffers: Int
    package let sendSlots: Int
    package let signalEvery: Int
    package let bufBytes: Int
    /// Soft-RoCE (rxe) or soft-iWARP (siw): the kernel's threads do the device's work.
    package let softDevice: Bool
    package let ctx: UnsafeMutablePointer<ibv_context>
    package let pd: UnsafeMutablePointer<ibv_pd>
    package let channel: UnsafeMutablePointer<ibv_comp_channel>
    package let asyncFD: Int32
    package var cq: UnsafeMutablePointer<ibv_cq>?
    package var peers: [VerbsPeer?]
    package var regs: [Int: Registration] = [:]
    package var nextRegID = 1
    package var pollSet: [pollfd] = []
    package var closed = false
    package var stopped = false
    package var wcs = [cswccl_wc](repeating: cswccl_wc(), count: 32)

    package init(rank: Int, nranks: Int, device: String, eagerThreshold: Int, queueDepth: Int, softDevice: Bool,
                 ctx: UnsafeMutablePointer<ibv_context>, pd: UnsafeMutablePointer<ibv_pd>, channel: UnsafeMutablePointer<ibv_comp_channel>, asyncFD: Int32) {
        self.rank = rank; self.device = device; self.eagerThreshold = eagerThreshold; self.queueDepth = queueDepth
        recvBuffers = max(8, queueDepth / 4)
        sendSlots = max(8, queueDepth / 4)
        signalEvery = max(1, min(queueDepth, sendSlots) / 4)
        bufBytes = (Self.headerBytes + eagerThreshold + 63) & ~63
        self.softDevice = softDevice; self.ctx = ctx; self.pd = pd; self.channel = channel; self.asyncFD = asyncFD
        peers = Array(repeating: nil, count: nranks)
    }

    @usableFromInline package var label: String { " over verbs" }
    @usableFromInline package func eagerLimit(_ peer: Int) -> Int { peers[peer]!.eager }
    @usableFromInline package func peerAddress(_ peer: Int) -> String? { peers[peer]?.address }

    // MARK: the engine's requests

    @usableFromInline package mutating func sendEager(_ i: Int32, _ core: inout Core) {
        peers[Int(core.requests[i].peer)]!.outbox.append(.eager(i, core.requests[i].generation))
    }

    @usableFromInline package mutating func sendRendezvous(_ i: Int32, _ core: inout Core) {
        let r = core.requests[i]
        let peer = Int(r.peer)
        do throws(CCLError) {
            core.requests[i].wire.reg = try acquire(UnsafeRawPointer(r.base!), r.length, writable: false, peer: peer)
        } catch {
            core.fail(i, error)
            return
        }
        peers[peer]!.outbox.append(.control(.rts, tag: r.tag, a: UInt64(r.length), b: 0, c: 0))
        // A clear-to-send may have come already.
        if let k = peers[peer]!.grants.firstIndex(where: { $0.tag == r.tag }) {
            let g = peers[peer]!.grants.remove(at: k)
            granted(i, g, &core)
        }
    }

    /// A large receive grants its buffer at once (CTS), ahead of the sender's RTS.
    @usableFromInline package mutating func receivePosted(_ i: Int32, _ core: inout Core) {
        let r = core.requests[i]
        let peer = Int(r.peer)
        guard r.length > peers[peer]!.eager, core.peers[peer].failure == nil, !peers[peer]!.saidGoodbye else { return }
        do throws(CCLError) {
            let id = try acquire(UnsafeRawPointer(r.base!), r.length, writable: true, peer: peer)
            core.requests[i].wire.reg = id
            let rid = UInt64(i) | UInt64(r.generation) << 12
            let rkey = UInt64(cswccl_mr_rkey(regs[id]!.mr))
            peers[peer]!.outbox.append(.control(.cts, tag: r.tag, a: UInt64(UInt(bitPattern: r.base!)), b: UInt64(r.length), c: rkey << 32 | rid))
            core.requests[i].wire.ctsSent = true
        } catch {
            core.fail(i, error)
        }
    }

    /// The RTS of receive `i`'s message: its data comes by RDMA write into the buffer granted at
    /// posting (done once that write landed too).
    @usableFromInline package mutating func grant(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        guard core.requests[i].wire.ctsSent else {
            // The pair failed before this receive could grant its buffer: the data cannot come.
            let peer = Int(core.requests[i].peer)
            core.fail(i, core.peers[peer].failure ?? closedError(peer))
            return
        }
    }

    /// The tag's stream is out of step (a clear-to-send may already have gone to the wrong message):
    /// stop the pair, so no later receive can succeed with wrong data.
    @usableFromInline package mutating func refuse(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        let peer = Int(core.requests[i].peer)
        peerFailed(peer, CCLError(.invalidUsage, "message size mismatch: rank \(peer) sent \(m.length) bytes where \(core.requests[i].length) were expected (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer), &core)
    }

    @usableFromInline package mutating func resume(_ peer: Int, _ core: inout Core) { resumeDeferred(peer, &core) }

    /// The receiver's clear-to-send for send `i`: write the payload.
    private mutating func granted(_ i: Int32, _ g: Grant, _ core: inout Core) {
        let s = core.requests[i]
        let peer = Int(s.peer)
        if closed {
            // Closing: a write now would follow our BYE.
            core.fail(i, CCLError(.remoteError, "endpoint closed before rank \(peer) granted the message", rank: rank, peer: peer))
            return
        }
        guard g.length == s.length else {
            // The tag's messages are out of step with the receiver's buffers: stop the pair.
            let e = CCLError(.invalidUsage, "message size mismatch: rank \(peer) expects \(g.length) bytes where \(s.length) are sent (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer)
            core.fail(i, e)
            peerFailed(peer, e, &core)
            return
        }
        core.requests[i].state = .matched
        peers[peer]!.outbox.append(.write(i, s.generation, remote: g.address, rkey: g.rkey, rid: g.rid))
    }

    @usableFromInline package mutating func released(_ i: Int32, _ core: inout Core) {
        let reg = core.requests[i].wire.reg
        if reg != 0 { release(reg: reg) }
        core.requests[i].wire.reg = 0
    }

    /// The peer may still write into a granted buffer, or the device still read one being written:
    /// stop the pair before the caller takes its buffer back.
    @usableFromInline package mutating func timedOut(_ i: Int32, _ error: CCLError, _ core: inout Core) {
        let s = core.requests[i]
        if (!s.isSend && s.wire.ctsSent && s.transferred < s.length) || (s.isSend && s.state == .matched && s.length > eagerLimit(Int(s.peer))) {
            peerFailed(Int(s.peer), error, &core)
        }
    }

    /// Moves every QP to the error state (once): the device stops reading and writing the buffers of
    /// requests that are about to be reported failed.
    @usableFromInline package mutating func quiesce(_ core: inout Core) {
        if stopped { return }
        stopped = true
        for p in peers.indices { if let qp = peers[p]?.qp { _ = cswccl_qp_to_error(qp) } }
    }

    /// Yield between polls: a software device (Soft-RoCE) moves the data in kernel threads that a
    /// spinning rank would starve.
    @usableFromInline package func idle() { if softDevice { Sys.yieldCore() } else { Spin.yield() } }

    package func closedError(_ peer: Int) -> CCLError {
        CCLError(.remoteError, "rank \(peer) closed its verbs endpoint", rank: rank, peer: peer)
    }

    // MARK: the send queue

    /// Whether one more work request fits on the QP (with one bounce slot if `bounce`).
    private func room(_ p: VerbsPeer, bounce: Bool) -> Bool {
        Int(p.posted &- p.retired) < queueDepth && (!bounce || p.bounceUsed < sendSlots)
    }

    /// Posts what the outbox holds, in order, while the QP has room.
    @usableFromInline package mutating func flush(_ peer: Int, _ core: inout Core) {
        guard peers[peer] != nil else { return }
        while let op = peers[peer]!.outbox.first, core.peers[peer].failure == nil {
            do throws(CCLError) {
                guard try post(op, peer: peer, &core) else { return }
            } catch {
                peerFailed(peer, error, &core)
                return
            }
            peers[peer]!.outbox.removeFirst()
        }
    }

    /// Posts one outbox entry; false if the QP or the bounce slots are full.
    private mutating func post(_ op: OutOp, peer: Int, _ core: inout Core) throws(CCLError) -> Bool {
        let p = peers[peer]!
        switch op {
        case let .eager(i, gen):
            let s = core.requests[i]
            guard s.inUse, s.generation == gen, s.state == .matched else { return true }  // failed meanwhile
            guard room(p, bounce: true) else { return false }
            let buf = bounceSlot(peer)
            writeHeader(buf, .eager, tag: s.tag, a: UInt64(s.length), b: 0, c: 0)
            if s.length > 0 { (buf + Self.headerBytes).copyMemory(from: s.base!, byteCount: s.length) }
            try postSend(peer: peer, op: CSWCCL_OP_SEND, buf, Self.headerBytes + s.length, lkey: cswccl_mr_lkey(p.poolMR!), bounce: true)
            core.moved(i, s.length)  // the caller's buffer is free again
        case let .control(type, tag, a, b, c):
            guard room(p, bounce: true) else { return false }
            let buf = bounceSlot(peer)
            writeHeader(buf, type, tag: tag, a: a, b: b, c: c)
            try postSend(peer: peer, op: CSWCCL_OP_SEND, buf, Self.headerBytes, lkey: cswccl_mr_lkey(p.poolMR!), signal: type == .bye, bounce: true)
        case let .write(i, gen, remote, rkey, rid):
            let s = core.requests[i]
            guard s.inUse, s.generation == gen, s.state == .matched else { return true }  // failed meanwhile
            let pieces = (s.length + Self.maxWriteBytes - 1) / Self.maxWriteBytes
            guard Int(p.posted &- p.retired) + pieces <= queueDepth else { return false }
            let lkey = cswccl_mr_lkey(regs[s.wire.reg]!.mr)
            for k in 0..<pieces {
                let off = k * Self.maxWriteBytes
                let n = min(Self.maxWriteBytes, s.length - off)
                let last = k == pieces - 1
                let seq = try postSend(peer: peer, op: last ? CSWCCL_OP_WRITE_IMM : CSWCCL_OP_WRITE, s.base! + off, n, lkey: lkey,
                                       remote: remote + UInt64(off), rkey: rkey, imm: rid, signal: last)
                if last { core.requests[i].wire.completionSeq = seq }
            }
        }
        return true
    }

    private func bounceSlot(_ peer: Int) -> UnsafeMutableRawPointer {
        let p = peers[peer]!
        return p.pool! + (recvBuffers + p.bounceHead) * bufBytes
    }

    private func writeHeader(_ buf: UnsafeMutableRawPointer, _ type: MessageType, tag: UInt64, a: UInt64, b: UInt64, c: UInt64) {
        buf.storeBytes(of: type.rawValue.littleEndian, toByteOffset: 0, as: UInt64.self)
        buf.storeBytes(of: tag.littleEndian, toByteOffset: 8, as: UInt64.self)
        buf.storeBytes(of: a.littleEndian, toByteOffset: 16, as: UInt64.self)
        buf.storeBytes(of: b.littleEndian, toByteOffset: 24, as: UInt64.self)
        buf.storeBytes(of: c.littleEndian, toByteOffset: 32, as: UInt64.self)
    }

    /// Posts one send work request; returns its sequence number on the QP.
    @discardableResult
    private mutating func postSend(peer: Int, op: Int, _ local: UnsafeRawPointer, _ n: Int, lkey: UInt32, remote: UInt64 = 0, rkey: UInt32 = 0,
                                   imm: UInt32 = 0, signal: Bool = false, bounce: Bool = false) throws(CCLError) -> UInt64 {
        // Mutated in place: a copy of the peer would copy its bounce table on every send.
        let seq = peers[peer]!.posted &+ 1
        // Signal every `signalEvery` requests, and whenever the queue or the bounce slots run low, so
        // that a completion always comes to free them.
        let signaled = signal || seq &- peers[peer]!.lastSignaled >= UInt64(signalEvery)
            || Int(seq &- peers[peer]!.retired) >= queueDepth - 1 || (bounce && peers[peer]!.bounceUsed + 1 >= sendSlots)
        let rc = cswccl_post_send(peers[peer]!.qp, WorkID.send(peer: peer, seq: seq), Int32(op), local, UInt32(n), lkey, remote, rkey, imm,
                                  signaled ? 1 : 0, 0)
        guard rc == 0 else { throw CCLError(.systemError, "ibv_post_send: \(Errno(rc))", peer: peer) }
        peers[peer]!.posted = seq
        if signaled { peers[peer]!.lastSignaled = seq }
        if bounce {
            let head = peers[peer]!.bounceHead
            peers[peer]!.bounceSeq[head] = seq
            peers[peer]!.bounceHead = (head + 1) % sendSlots
            peers[peer]!.bounceUsed += 1
        }
        return seq
    }

    // MARK: progress

    /// Drains the completion queue, then (if nothing happened and `timeoutMs` > 0) sleeps in poll(2)
    /// on the completion channel, the asynchronous events, the control connections and the abort
    /// eventfd. Returns true if anything happened.
    @usableFromInline package mutating func progress(timeoutMs: Int32, _ core: inout Core) throws(CCLError) -> Bool {
        if closed || core.abortSignal.isRaised { quiesce(&core); throw core.abortSignal.error(rank: rank) }
        guard let cq else { return false }
        var any = drainCQ(cq, &core)
        if any || timeoutMs == 0 && !pollQuick() { return any }
        // Arm, then look again: a completion that landed before arming would not raise an event.
        if !any {
            _ = cswccl_req_notify(cq)
            if drainCQ(cq, &core) { return true }
        }
        let n: Int
        do throws(CCLError) { n = try core.abortSignal.poll(&pollSet, timeoutMs: timeoutMs, rank: rank) } catch {
            quiesce(&core)
            throw error
        }
        if n == 0 { return any }
        if pollSet[1].revents != 0 {
            _ = cswccl_drain_cq_events(channel)
            _ = cswccl_req_notify(cq)
            any = drainCQ(cq, &core) || any
        }
        if pollSet[2].revents != 0 { any = readAsyncEvents(&core) || any }
        for k in pollSet.indices.dropFirst(3) where pollSet[k].revents != 0 {
            any = true
            controlReadable(fd: pollSet[k].fd, &core)
        }
        return true
    }

    /// Without blocking: whether a descriptor other than the CQ's has something (a control connection
    /// that closed, an asynchronous event, an abort).
    private mutating func pollQuick() -> Bool {
        for k in pollSet.indices where k != 1 { pollSet[k].revents = 0 }
        var quick = pollSet
        quick[1].fd = -1
        let n = (try? quick.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: 0) }) ?? 0
        return n > 0
    }

    /// Handles every completion waiting on the CQ; true if there was any.
    @discardableResult
    package mutating func drainCQ(_ cq: UnsafeMutablePointer<ibv_cq>, _ core: inout Core) -> Bool {
        var any = false
        while true {
            let n = wcs.withUnsafeMutableBufferPointer { cswccl_poll_cq(cq, 32, $0.baseAddress) }
            if n < 0 {
                for p in peers.indices where peers[p] != nil {
                    peerFailed(p, CCLError(.systemError, "\(device): ibv_poll_cq failed (\(n)): the completion queue is unusable", peer: p), abrupt: true, &core)
                }
                break
            }
            if n == 0 { break }
            any = true
            for k in 0..<Int(n) { handle(wcs[k], &core) }
            if n < 32 { break }
        }
        if any { for p in peers.indices where peers[p] != nil && !peers[p]!.outbox.isEmpty { flush(p, &core) } }
        return any
    }

    private mutating func handle(_ wc: cswccl_wc, _ core: inout Core) {
        let (kind, peer, value) = WorkID.decode(wc.wr_id)
        guard peer < peers.count, peers[peer] != nil else { return }
        if wc.status != 0 {
            if core.peers[peer].failure != nil { return }  // flushed or refused after the pair failed or closed
            let what = kind == .recv ? "receive" : "send"
            peerFailed(peer, CCLError(.remoteError, "\(what) work completion failed on the queue pair to rank \(peer): \(String(cString: cswccl_wc_status_str(wc.status))) (vendor error 0x\(String(wc.vendor_err, radix: 16)); the peer died or its memory registration is gone)", peer: peer), abrupt: true, &core)
            return
        }
        switch kind {
        case .send:
            retire(peer: peer, upTo: value, &core)
        case .recv:
            let a = VerbsArrival(workID: wc.wr_id, buffer: peers[peer]!.pool! + Int(value) * bufBytes, bytes: Int(wc.byte_len),
                                 isWrite: wc.opcode == 3, immediate: wc.imm)
            // In order behind those already held back, or held back itself past the unexpected budget.
            if !peers[peer]!.deferred.isEmpty || mustDefer(peer, a, &core) {
                peers[peer]!.deferred.append(a)
                return
            }
            consume(peer, a, &core)
        }
    }

    /// Handles one arrival and posts its buffer again.
    private mutating func consume(_ peer: Int, _ a: VerbsArrival, _ core: inout Core) {
        if a.isWrite {
            writeArrived(peer: peer, rid: a.immediate, &core)
        } else {
            received(peer: peer, a.buffer, a.bytes, &core)
        }
        // The buffer is read: post it again.
        if core.peers[peer].failure == nil, let qp = peers[peer]!.qp {
            let rc = cswccl_post_recv(qp, a.workID, a.buffer, UInt32(bufBytes), cswccl_mr_lkey(peers[peer]!.poolMR!))
            if rc != 0 { peerFailed(peer, CCLError(.systemError, "ibv_post_recv: \(Errno(rc))", peer: peer), &core) }
        }
    }

    /// Whether an arrival must wait in its receive buffer (not reposted, so the peer's sends wait:
    /// receiver-not-ready retries): an eager message or RTS that the engine says to hold.
    private func mustDefer(_ peer: Int, _ a: VerbsArrival, _ core: inout Core) -> Bool {
        guard !a.isWrite, let h = try? VerbsHeader.decode(UnsafeRawPointer(a.buffer), count: a.bytes, from: peer),
              h.type == .eager || h.type == .rts else { return false }
        return core.mustHold(peer, tag: h.tag)
    }

    /// Handles the arrivals held back, in order, as far as the budget and the posted receives allow.
    private mutating func resumeDeferred(_ peer: Int, _ core: inout Core) {
        while let a = peers[peer]!.deferred.first {
            if mustDefer(peer, a, &core) { return }
            peers[peer]!.deferred.removeFirst()
            consume(peer, a, &core)
        }
    }

    /// A signalled send completed: it and every earlier request of the QP are done.
    private mutating func retire(peer: Int, upTo seq: UInt64, _ core: inout Core) {
        if seq > peers[peer]!.retired { peers[peer]!.retired = seq }
        let retired = peers[peer]!.retired
        while peers[peer]!.bounceUsed > 0 {
            let tail = (peers[peer]!.bounceHead - peers[peer]!.bounceUsed + sendSlots) % sendSlots
            guard peers[peer]!.bounceSeq[tail] <= retired else { break }
            peers[peer]!.bounceUsed -= 1
        }
        for i in core.peers[peer].sends where core.requests[i].state == .matched && core.requests[i].wire.completionSeq != 0
            && core.requests[i].wire.completionSeq <= retired {
            core.moved(i, core.requests[i].length)
        }
    }

    private mutating func writeArrived(peer: Int, rid: UInt32, _ core: inout Core) {
        let i = Int32(rid & 0xfff), gen = rid >> 12
        guard Int(i) < core.requests.capacity, core.requests[i].inUse, core.requests[i].generation == gen, !core.requests[i].isSend,
              Int(core.requests[i].peer) == peer else {
            peerFailed(peer, CCLError(.remoteError, "rank \(peer) completed a write for receive \(i)/\(gen), which is not outstanding", peer: peer), abrupt: true, &core)
            return
        }
        core.moved(i, core.requests[i].length - core.requests[i].transferred)
    }

    /// A SEND arrived from `peer` in `buf`.
    private mutating func received(peer: Int, _ buf: UnsafeMutableRawPointer, _ n: Int, _ core: inout Core) {
        let h: VerbsHeader
        do { h = try VerbsHeader.decode(UnsafeRawPointer(buf), count: n, from: peer) } catch {
            peerFailed(peer, error, abrupt: true, &core)
            return
        }
        switch h.type {
        case .eager:
            core.arrivedEager(from: peer, tag: h.tag, length: h.length, payload: UnsafeRawPointer(buf + Self.headerBytes), wire: &self)
        case .rts:
            core.arrivedRendezvous(from: peer, MessageHeader(tag: h.tag, length: h.length, isRendezvous: true), wire: &self)
        case .cts:
            let g = Grant(tag: h.tag, address: h.a, length: h.length, rkey: UInt32(truncatingIfNeeded: h.c >> 32), rid: UInt32(truncatingIfNeeded: h.c))
            if let i = core.oldestAwaitingGrant(peer, tag: h.tag) {
                granted(i, g, &core)
            } else {
                peers[peer]!.grants.append(g)
            }
        case .bye:
            // Everything the peer sent before is handled (arrivals are in order); its unexpected
            // messages stay deliverable. The rest fails, and the QP stops.
            peers[peer]!.saidGoodbye = true
            peerFailed(peer, closedError(peer), &core)
        }
    }

    /// The control connection of a peer is readable: a notice (`[length u32][Notice]`), or end-of-file
    /// (clean after a BYE, else a crash).
    private mutating func controlReadable(fd: Int32, _ core: inout Core) {
        guard let peer = peers.firstIndex(where: { $0?.fd == fd }) else { return }
        var chunk = [UInt8](repeating: 0, count: 2048)
        do throws(Errno) {
            guard let n = try chunk.withUnsafeMutableBytes({ b in catching { () throws(Errno) -> Int? in try Sys.recv(fd, b.baseAddress!, b.count) } }).get() else { return }
            if n > 0 {
                peers[peer]!.controlIn += chunk[0..<n]
                // Garbage (a length of 0 or beyond the largest notice) is ignored: the buffer is dropped.
                for notice in Notice.unframe(&peers[peer]!.controlIn) { core.noticeArrived(peer, notice) }
                return
            }
        } catch {}
        // Everything the peer sent before going away is on the CQ already: take it first.
        if let cq { drainCQ(cq, &core) }
        closeControl(peer)
        if peers[peer]!.saidGoodbye { return }
        peerFailed(peer, CCLError(.remoteError, "connection lost: rank \(peer) went away without closing (process died?)", peer: peer), abrupt: true, &core)
    }

    package mutating func closeControl(_ peer: Int) {
        let fd = peers[peer]!.fd
        guard fd >= 0 else { return }
        if let k = pollSet.firstIndex(where: { $0.fd == fd }) { pollSet[k].fd = -1 }
        Sys.close(fd)
        peers[peer]!.fd = -1
    }

    /// Asynchronous device events: fatal ones fail the pair of their QP, or every pair.
    private mutating func readAsyncEvents(_ core: inout Core) -> Bool {
        var any = false
        var what = [CChar](repeating: 0, count: 96)
        var fatal: Int32 = 0, qpn: UInt32 = 0
        while cswccl_read_async_event(ctx, &fatal, &qpn, &what, what.count) == 1 {
            any = true
            let text = what.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            guard fatal != 0 else { Log.info(.net, "rank \(rank): \(device) event: \(text)"); continue }
            let victims = qpn != 0 ? peers.indices.filter { peers[$0]?.qpn == qpn } : peers.indices.filter { peers[$0] != nil }
            for p in victims {
                peerFailed(p, CCLError(.remoteError, "\(device) reported \(text) on the queue pair to rank \(p)", peer: p), abrupt: true, &core)
            }
        }
        return any
    }

    /// Says goodbye on every healthy pair and gives the BYEs (and what was queued before them) a
    /// moment to be acknowledged, so that peers can tell this from a crash; then frees every verbs
    /// object.
    package mutating func close(aborting: Bool, _ core: inout Core) {
        if closed { return }
        closed = true
        if !aborting, let cq {
            // Goodbyes that arrived already: no BYE back to a QP that is gone.
            drainCQ(cq, &core)
            for p in peers.indices where peers[p] != nil && core.peers[p].failure == nil && !peers[p]!.saidGoodbye && peers[p]!.fd >= 0 {
                peers[p]!.outbox.append(.control(.bye, tag: 0, a: 0, b: 0, c: 0))
                flush(p, &core)
            }
            let until = Deadline.after(milliseconds: 500)
            while !until.hasPassed && peers.indices.contains(where: { p in
                guard let q = peers[p] else { return false }
                return core.peers[p].failure == nil && !q.saidGoodbye && (q.retired < q.posted || !q.outbox.isEmpty)
            }) {
                if !drainCQ(cq, &core) { Sys.sleep(nanos: 50_000) }
            }
        }
        for p in peers.indices where peers[p] != nil {
            closeControl(p)
            if let qp = peers[p]!.qp { _ = cswccl_destroy_qp(qp) }
            if let mr = peers[p]!.poolMR { _ = cswccl_dereg_mr(mr) }
            peers[p]!.pool?.deallocate()
            peers[p]!.qp = nil
            peers[p]!.poolMR = nil
            peers[p]!.pool = nil
            if core.peers[p].failure == nil { core.peers[p].failure = core.abortSignal.error(rank: rank) }
        }
        core.discardUnexpected()
        for (_, r) in regs { _ = cswccl_dereg_mr(r.mr) }
        regs.removeAll()
        if let cq { _ = cswccl_drain_cq_events(channel); _ = cswccl_ibv_destroy_cq(cq) }
        cq = nil
        _ = cswccl_ibv_destroy_comp_channel(channel)
        _ = cswccl_ibv_dealloc_pd(pd)
        _ = cswccl_ibv_close_device(ctx)
    }

    /// The pair with `peer` is unusable: fail its requests, stop its QP. A peer whose abort notice
    /// came first is reported with that notice (naming the rank it blames).
    package mutating func peerFailed(_ peer: Int, _ error: CCLError, abrupt: Bool = false, _ core: inout Core) {
        guard peers[peer] != nil, core.peers[peer].failure == nil else { return }
        let e = core.pairError(peer, error, address: peers[peer]!.address)
        if abrupt && core.brokenBy == nil { core.brokenBy = e }
        if peers[peer]!.saidGoodbye { Log.info(.net, "rank \(rank): \(e)") } else { Log.warn(.net, "rank \(rank): \(e)") }
        core.failPeer(peer, e)
        peers[peer]!.outbox.removeAll()
        if let qp = peers[peer]!.qp { _ = cswccl_qp_to_error(qp) }
    }
}

/// The wire's state of one pair.
package struct VerbsPeer {
    package let rank: Int
    package var fd: Int32
    package var qp: UnsafeMutablePointer<ibv_qp>?
    package var qpn: UInt32 = 0
    package var pool: UnsafeMutableRawPointer?
    package var poolMR: UnsafeMutablePointer<ibv_mr>?
    package var eager = 0
    /// Send work requests posted and retired (sequence numbers), the last one signalled.
    package var posted: UInt64 = 0
    package var retired: UInt64 = 0
    package var lastSignaled: UInt64 = 0
    package var bounceHead = 0
    package var bounceUsed = 0
    package var bounceSeq: [UInt64]
    package var outbox: [OutOp] = []
    /// Arrivals held back in their receive buffers past the budget, in order (see `mustDefer`).
    package var deferred: [VerbsArrival] = []
    /// Clear-to-sends that arrived before their send was posted.
    package var grants: [Grant] = []
    package var saidGoodbye = false
    /// Bytes read from the control connection (notices).
    package var controlIn: [UInt8] = []

    /// The peer's control address (for errors).
    package let address: String

    package init(rank: Int, fd: Int32, address: String, bounceSlots: Int) {
        self.rank = rank
        self.fd = fd
        self.address = address
        bounceSeq = [UInt64](repeating: 0, count: bounceSlots)
    }
}
