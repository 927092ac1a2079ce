import Glibc
import SwcclSystem
import SwcclCore
import SwcclTransport

/// How TCP moves the engine's messages (`MessageWire`): frames (`TCPFrames.swift`) on `nsocks`
/// connections per peer. Connection 0 carries the control stream (eager messages, rendezvous requests
/// and grants, notices, goodbyes); the payloads of large messages are striped across all connections
/// as DATA frames written straight from the sender's buffer and read straight into the receiver's.
/// Progress is one `poll` over every socket plus the abort eventfd; writes are non-blocking
/// `sendmsg`s, reads go through an 8 KiB staging buffer per socket for headers and small bodies.
///
/// A peer whose connection ends without a notice or a goodbye becomes a suspect (`suspect`): blamed
/// only if nothing better is heard within `graceNanos` (docs/ARCHITECTURE.md, "Blame").
@usableFromInline package struct TCPWire: MessageWire {
    @usableFromInline package typealias Core = MessageCore<TCPWire>
    /// Receivers accept eager messages up to this size whatever their own threshold, so ranks with
    /// different SWCCL_TCP_EAGER_BYTES still interoperate.
    package static let maxEagerBytes = 1 << 20
    package static let stagingBytes = 8192
    package static let graceNanos: UInt64 = 250_000_000
    /// `TCPSocket.bodyUnexpected` while a notice's body is read.
    package static let noticeBody = -2
    /// `Frame.slot` of a notice frame (no request behind it).
    package static let noticeSlot: Int32 = -3

    package let rank: Int
    package let nsocks: Int
    package let eagerThreshold: Int
    package let wakeFD: Int32
    package var peers: [TCPPeer?]
    package var pollSet: [pollfd] = []
    package var pollOwners: [(peer: Int32, sock: Int32)] = []
    /// A peer that went away without a notice or a goodbye, and when: it may have died, or closed
    /// because of another rank whose notice is still on its way (a neighbour's notice is read, or the
    /// rank that died is seen, before the grace ends). Blamed if nothing better comes within the grace.
    package var suspect: (error: CCLError, at: UInt64)?
    /// Encoded notices this rank sent (frames point into them until written); freed at close.
    package var sentNotices: [UnsafeMutableRawPointer] = []
    package var closed = false

    package init(rank: Int, nranks: Int, nsocks: Int, eagerThreshold: Int, wakeFD: Int32) {
        self.rank = rank; self.nsocks = nsocks; self.eagerThreshold = eagerThreshold; self.wakeFD = wakeFD
        peers = Array(repeating: nil, count: nranks)
    }

    @usableFromInline package var label: String { "" }
    @usableFromInline package func eagerLimit(_ peer: Int) -> Int { eagerThreshold }
    @usableFromInline package func peerAddress(_ peer: Int) -> String? { peers[peer]?.address.description }

    package mutating func rebuildPollSet() {
        pollSet = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        pollOwners = [(-1, -1)]
        for case let p? in peers {
            for s in 0..<p.socks.count where p.socks[s].fd >= 0 {
                pollSet.append(pollfd(fd: p.socks[s].fd, events: Int16(POLLIN), revents: 0))
                pollOwners.append((Int32(p.rank), Int32(s)))
            }
        }
    }

    // MARK: the engine's requests

    @usableFromInline package mutating func sendEager(_ i: Int32, _ core: inout Core) {
        let r = core.requests[i]
        enqueue(Int(r.peer), sock: 0, Frame(type: .eager, tag: r.tag, a: UInt64(r.length), b: 0, payload: r.base, payloadLength: r.length, slot: i), &core)
    }

    @usableFromInline package mutating func sendRendezvous(_ i: Int32, _ core: inout Core) {
        let id = core.awaitGrant(i)
        let r = core.requests[i]
        enqueue(Int(r.peer), sock: 0, Frame(type: .rts, tag: r.tag, a: UInt64(r.length), b: id, payload: nil, payloadLength: 0, slot: -1), &core)
    }

    @usableFromInline package mutating func grant(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        core.expect(i, messageID: m.messageID)
        enqueue(Int(core.requests[i].peer), sock: 0, Frame(type: .cts, tag: 0, a: 0, b: m.messageID, payload: nil, payloadLength: 0, slot: -1), &core)
    }

    @usableFromInline package mutating func refuse(_ i: Int32, _ m: MessageHeader, _ core: inout Core) {
        guard m.isRendezvous else { return }
        enqueue(Int(core.requests[i].peer), sock: 0, Frame(type: .cts, tag: 0, a: 1, b: m.messageID, payload: nil, payloadLength: 0, slot: -1), &core)
    }

    /// Reading a peer past the unexpected budget is paused at an unmatched message: it may be a new
    /// receive's (poll no longer watches that connection, so look now).
    @usableFromInline package mutating func resume(_ peer: Int, _ core: inout Core) {
        guard peers[peer]!.stalled, core.peers[peer].failure == nil else { return }
        peers[peer]!.stalled = false
        do throws(CCLError) { try read(peer: peer, sock: 0, &core) } catch { peerFailed(peer, error, &core) }
    }

    /// Fast path for a receive that `wait` spins on: read the peer's control connection directly,
    /// without a poll first (one syscall fewer per small message).
    @usableFromInline package mutating func peek(_ i: Int32, _ core: inout Core) throws(CCLError) -> Bool {
        let peer = Int(core.requests[i].peer)
        guard !core.requests[i].isSend, core.peers[peer].failure == nil, !peers[peer]!.stalled, peers[peer]!.socks[0].fd >= 0 else { return false }
        do throws(CCLError) { try read(peer: peer, sock: 0, &core) } catch { peerFailed(peer, error, &core) }
        return true
    }

    /// What breaks this endpoint: a peer's abort notice or an announced loss at once; a peer lost
    /// without a word once the grace has passed with nothing better heard.
    @usableFromInline package mutating func verdict(_ core: inout Core) -> CCLError? {
        if let b = core.brokenBy { return b }
        if let s = suspect, Sys.monotonicNanos() &- s.at >= Self.graceNanos {
            core.brokenBy = s.error
            Log.warn(.net, s.error.description)
            return s.error
        }
        return nil
    }

    private mutating func enqueue(_ peer: Int, sock: Int, _ f: Frame, _ core: inout Core) {
        guard core.peers[peer].failure == nil, peers[peer]!.socks[sock].fd >= 0 else { return }
        peers[peer]!.socks[sock].out.append(f)
    }

    // MARK: progress

    /// One round: poll every socket (blocking up to `timeoutMs`), write what can be written, read what
    /// arrived. Returns true if anything happened.
    @usableFromInline package mutating func progress(timeoutMs requested: Int32, _ core: inout Core) throws(CCLError) -> Bool {
        if closed { throw core.abortSignal.error(rank: rank) }
        var timeoutMs = requested
        if core.brokenBy == nil, let s = suspect {
            // Wake when the grace for a silently lost peer ends.
            let left = Int64(Self.graceNanos) - Int64(Sys.monotonicNanos() &- s.at)
            timeoutMs = min(timeoutMs, Int32(max(0, (left + 999_999) / 1_000_000)))
        }
        for k in pollSet.indices.dropFirst() {
            let (p, s) = pollOwners[k]
            let st = peers[Int(p)]!.socks[Int(s)]
            var ev = Int16(POLLIN)
            if st.hasOutput { ev |= Int16(POLLOUT) }
            // Stalled on unexpected data past the limit: wait for receives to be posted, not for bytes.
            if s == 0 && peers[Int(p)]!.stalled { ev &= ~Int16(POLLIN) }
            pollSet[k].fd = st.fd  // -1 once closed: poll ignores it
            pollSet[k].events = ev
            pollSet[k].revents = 0
        }
        if try core.abortSignal.poll(&pollSet, timeoutMs: timeoutMs, rank: rank) == 0 { return false }
        for k in pollSet.indices.dropFirst() where pollSet[k].revents != 0 {
            let (p, s) = pollOwners[k]
            let peer = Int(p), sock = Int(s)
            if core.peers[peer].failure != nil { continue }
            do throws(CCLError) {
                if pollSet[k].revents & Int16(POLLOUT) != 0 { try write(peer: peer, sock: sock, &core) }
                let hangup = pollSet[k].revents & Int16(POLLERR | POLLHUP) != 0
                if sock == 0 && peers[peer]!.stalled && hangup {
                    throw peers[peer]!.saidGoodbye ? lostConnection(peer)
                        : CCLError(.remoteError, "connection lost: rank \(peer) went away (\(Sys.socketError(pollSet[k].fd).map { "\($0)" } ?? "hang-up"))", peer: peer)
                }
                if pollSet[k].revents & Int16(POLLIN) != 0 || hangup { try read(peer: peer, sock: sock, &core) }
            } catch {
                peerFailed(peer, error, &core)
            }
        }
        return true
    }

    /// Writes queued frames of every socket of `peer` until the kernel pushes back.
    @usableFromInline package mutating func flush(_ peer: Int, _ core: inout Core) {
        guard core.peers[peer].failure == nil else { return }
        do throws(CCLError) {
            for s in 0..<nsocks where peers[peer]!.socks[s].hasOutput { try write(peer: peer, sock: s, &core) }
        } catch {
            peerFailed(peer, error, &core)
        }
    }

    private mutating func write(peer: Int, sock: Int, _ core: inout Core) throws(CCLError) {
        let fd = peers[peer]!.socks[sock].fd
        while peers[peer]!.socks[sock].hasOutput {
            let h = peers[peer]!.socks[sock].head
            var f = peers[peer]!.socks[sock].out[h]
            let n: Int
            do {
                n = try withUnsafeBytes(of: &f.header) { (hdr) throws(Errno) -> Int in
                    if f.sent < 32 {
                        return try Sys.send(fd, hdr.baseAddress! + f.sent, 32 - f.sent, f.payload, f.payloadLength)
                    }
                    let off = f.sent - 32
                    return try Sys.send(fd, f.payload! + off, f.payloadLength - off)
                }
            } catch {
                throw CCLError(.remoteError, "send to rank \(peer) failed: \(error)", errno: error)
            }
            if n == 0 { return }
            f.sent += n
            peers[peer]!.socks[sock].out[h].sent = f.sent
            if f.sent == 32 + f.payloadLength {
                peers[peer]!.socks[sock].popFront()
                if f.slot >= 0 { core.moved(f.slot, f.payloadLength) }
            }
        }
    }

    /// Reads what arrived on one connection: frame headers through the staging buffer, bodies straight
    /// into their targets.
    package mutating func read(peer: Int, sock: Int, _ core: inout Core) throws(CCLError) {
        // Once a receive returns less than asked, the socket is empty: stop without another syscall.
        var drained = false
        while true {
            if core.peers[peer].failure != nil { return }
            if peers[peer]!.socks[sock].bodyRemaining == 0 {
                // Header state: need 32 bytes in the staging buffer.
                if peers[peer]!.socks[sock].staged < 32 {
                    guard !drained, try fill(peer: peer, sock: sock, drained: &drained) else { return }
                    continue
                }
                var hdr = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                let st = peers[peer]!.socks[sock]
                withUnsafeMutableBytes(of: &hdr) { $0.copyMemory(from: UnsafeRawBufferPointer(start: st.staging + st.stageStart, count: 32)) }
                // Past the unexpected budget, leave a new unexpected message (eager or rendezvous) in
                // the stream (TCP flow control then pushes back) until a matching receive is posted.
                let frameType = UInt32(truncatingIfNeeded: UInt64(littleEndian: hdr.0))
                if (frameType == FrameType.eager.rawValue || frameType == FrameType.rts.rawValue)
                    && core.mustHold(peer, tag: UInt64(littleEndian: hdr.1)) {
                    peers[peer]!.stalled = true
                    return
                }
                peers[peer]!.socks[sock].stageStart += 32
                try handleHeader(peer: peer, sock: sock, w0: UInt64(littleEndian: hdr.0), tag: UInt64(littleEndian: hdr.1),
                                 a: UInt64(littleEndian: hdr.2), b: UInt64(littleEndian: hdr.3), &core)
            } else {
                // Body state: drain the staging buffer first, then read straight into the target.
                let st = peers[peer]!.socks[sock]
                let take = min(st.staged, st.bodyRemaining)
                if take > 0 {
                    if let t = st.bodyTarget { t.copyMemory(from: st.staging + st.stageStart, byteCount: take) }
                    peers[peer]!.socks[sock].stageStart += take
                    peers[peer]!.socks[sock].advanceBody(take)
                } else if st.bodyRemaining >= Self.stagingBytes / 2, let t = st.bodyTarget {
                    if drained { return }
                    let r: Int?
                    do { r = try Sys.recv(st.fd, t, st.bodyRemaining) } catch {
                        throw CCLError(.remoteError, "receive from rank \(peer) failed: \(error)", errno: error)
                    }
                    guard let got = r else { return }
                    if got == 0 { try endOfStream(peer: peer, sock: sock); return }
                    if got < st.bodyRemaining { drained = true }
                    peers[peer]!.socks[sock].advanceBody(got)
                } else {
                    guard !drained, try fill(peer: peer, sock: sock, drained: &drained) else { return }
                    continue
                }
                if peers[peer]!.socks[sock].bodyRemaining == 0 { finishBody(peer: peer, sock: sock, &core) }
            }
        }
    }

    /// Reads whatever is available into the staging buffer; false if nothing was.
    private mutating func fill(peer: Int, sock: Int, drained: inout Bool) throws(CCLError) -> Bool {
        peers[peer]!.socks[sock].compactStaging()
        let st = peers[peer]!.socks[sock]
        if st.stageEnd >= Self.stagingBytes { return false }
        let r: Int?
        do { r = try Sys.recv(st.fd, st.staging + st.stageEnd, Self.stagingBytes - st.stageEnd) } catch {
            throw CCLError(.remoteError, "receive from rank \(peer) failed: \(error)", errno: error)
        }
        guard let n = r else { return false }
        if n == 0 { try endOfStream(peer: peer, sock: sock); return false }
        if n < Self.stagingBytes - st.stageEnd { drained = true }
        peers[peer]!.socks[sock].stageEnd += n
        return true
    }

    /// End of stream on one connection. After a clean goodbye the other connections of the pair may
    /// still carry the tail of striped data: close just this one, and give up on the peer only when
    /// all of its connections have ended.
    private mutating func endOfStream(peer: Int, sock: Int) throws(CCLError) {
        if peers[peer]!.saidGoodbye && !peers[peer]!.goodbyeWasAbort && peers[peer]!.socks.count > 1 {
            closeSocket(peer: peer, sock: sock)
            if peers[peer]!.socks.allSatisfy({ $0.fd < 0 }) { throw lostConnection(peer) }
            return
        }
        throw lostConnection(peer)
    }

    private func lostConnection(_ peer: Int) -> CCLError {
        if peers[peer]!.saidGoodbye {
            return CCLError(.remoteError, peers[peer]!.goodbyeWasAbort ? "rank \(peer) aborted its communicator"
                                                                        : "rank \(peer) closed its communicator", peer: peer)
        }
        return CCLError(.remoteError, "connection lost: rank \(peer) closed it without a goodbye (the process died or aborted)", peer: peer)
    }

    private mutating func handleHeader(peer: Int, sock: Int, w0: UInt64, tag: UInt64, a: UInt64, b: UInt64, _ core: inout Core) throws(CCLError) {
        let type = try FrameHeader.check(w0: w0, a: a, b: b, from: peer)
        switch type {
        case .eager:
            let length = Int(a)
            switch core.eagerHeader(from: peer, tag: tag, length: length, wire: &self) {
            case .receive(let i): peers[peer]!.socks[sock].beginBody(target: core.requests[i].base, length: length, slot: i, unexpected: -1)
            case .discard: peers[peer]!.socks[sock].beginBody(target: nil, length: length, slot: -1, unexpected: -1)
            case .unexpected(let id, let buffer): peers[peer]!.socks[sock].beginBody(target: buffer, length: length, slot: -1, unexpected: id)
            }
            if length == 0 { finishBody(peer: peer, sock: sock, &core) }
        case .rts:
            core.arrivedRendezvous(from: peer, MessageHeader(tag: tag, length: Int(a), isRendezvous: true, messageID: b), wire: &self)
            flush(peer, &core)
        case .cts:
            guard let i = core.takeGrant(peer, b) else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): grant for unknown message \(b)")
            }
            let length = core.requests[i].length
            if a != 0 {
                core.fail(i, CCLError(.invalidUsage, "rank \(peer) rejected a message of \(length) bytes: it expected another size (do all ranks call the same collective with the same count and type?)", rank: rank, peer: peer))
                return
            }
            core.requests[i].state = .matched
            // Stripe the payload across the sockets in 4 KiB-aligned pieces; small payloads use one socket.
            let stripes = length >= 256 << 10 ? nsocks : 1
            let per = ((length + stripes - 1) / stripes + 4095) & ~4095
            var off = 0, s = 0
            while off < length {
                let len = min(per, length - off)
                enqueue(peer, sock: s, Frame(type: .data, tag: UInt64(off), a: UInt64(len), b: b,
                                             payload: UnsafeRawPointer(core.requests[i].base! + off), payloadLength: len, slot: i), &core)
                off += len
                s += 1
            }
            flush(peer, &core)
        case .data:
            guard let i = core.receive(peer, messageID: b), core.requests[i].inUse, let base = core.requests[i].base,
                  tag <= UInt64(core.requests[i].length), a <= UInt64(core.requests[i].length) - tag else {
                throw CCLError(.remoteError, "protocol error from rank \(peer): data for unknown message \(b) or out of bounds")
            }
            peers[peer]!.socks[sock].beginBody(target: base + Int(tag), length: Int(a), slot: i, unexpected: -1)
            if a == 0 { finishBody(peer: peer, sock: sock, &core) }
        case .bye:
            peers[peer]!.saidGoodbye = true
            peers[peer]!.goodbyeWasAbort = a != 0
        case .notice:
            if peers[peer]!.noticeIn == nil { peers[peer]!.noticeIn = UnsafeMutableRawPointer.allocate(byteCount: Notice.maxBytes, alignment: 8) }
            peers[peer]!.socks[sock].beginBody(target: peers[peer]!.noticeIn, length: Int(a), slot: -1, unexpected: Self.noticeBody)
        }
    }

    private mutating func finishBody(peer: Int, sock: Int, _ core: inout Core) {
        let st = peers[peer]!.socks[sock]
        peers[peer]!.socks[sock].bodyTarget = nil
        if st.bodySlot >= 0 {
            core.moved(st.bodySlot, st.bodyLength)
        } else if st.bodyUnexpected >= 0 {
            core.unexpectedComplete(peer, id: st.bodyUnexpected, wire: &self)
            flush(peer, &core)  // it may have granted a rendezvous message queued behind it
        } else if st.bodyUnexpected == Self.noticeBody, let b = peers[peer]!.noticeIn {
            core.noticeArrived(peer, Notice.decode(Array(UnsafeRawBufferPointer(start: b, count: st.bodyLength))))
        }
    }

    // MARK: closing connections

    /// Shuts and closes every connection of `peer`. Unread incoming bytes are drained first so that
    /// the kernel ends the connection with FIN rather than RST (an RST can destroy data the peer has
    /// not read yet).
    package mutating func closeSockets(of peer: Int) {
        for s in 0..<peers[peer]!.socks.count {
            closeSocket(peer: peer, sock: s)
        }
    }

    private mutating func closeSocket(peer: Int, sock s: Int) {
        let fd = peers[peer]!.socks[s].fd
        guard fd >= 0 else { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        var sink = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<64 {
            guard let n = sink.withUnsafeMutableBytes({ b in try? Sys.recv(fd, b.baseAddress!, b.count) }) ?? nil, n > 0 else { break }
        }
        Sys.close(fd)
        peers[peer]!.socks[s].fd = -1
        peers[peer]!.socks[s].out.removeAll()
        peers[peer]!.socks[s].head = 0
    }

    /// An abrupt loss breaks the communicator (every wait reports it); a clean goodbye fails only the
    /// requests that involve that peer.
    ///
    /// A peer whose notice said why it went (it aborted because of some rank) breaks the endpoint
    /// with that notice's error, naming the culprit. A peer that went silently (no notice, no
    /// goodbye) may be the one that died — or one that closed because of another rank and could not
    /// say so: it becomes the suspect, blamed only if nothing better is heard within the grace.
    package mutating func peerFailed(_ peer: Int, _ error: CCLError, _ core: inout Core) {
        if core.peers[peer].failure != nil { return }
        // A failed write (broken pipe, reset) may leave the peer's last words unread: read them first.
        if core.peers[peer].notice?.kind != .abort && !peers[peer]!.saidGoodbye && peers[peer]!.socks[0].fd >= 0 && !peers[peer]!.readingLastWords {
            peers[peer]!.readingLastWords = true
            do throws(CCLError) { try read(peer: peer, sock: 0, &core) } catch {}
            if core.peers[peer].failure != nil { return }  // the read ended it already
        }
        let e = core.pairError(peer, error, address: peers[peer]?.address.description)
        let clean = peers[peer]!.saidGoodbye && !peers[peer]!.goodbyeWasAbort && e.relayed == nil
        if !clean && e.relayed == nil && !peers[peer]!.saidGoodbye {
            // Lost without a word: pending requests wait for the verdict.
            core.peers[peer].failure = e
            core.peers[peer].blamePending = true
            if suspect == nil { suspect = (e, Sys.monotonicNanos()) }
            Log.info(.net, "rank \(rank): rank \(peer) went away without a notice; blamed unless another rank's notice explains it within \(Self.graceNanos / 1_000_000) ms: \(e.cause)")
        } else {
            if clean { Log.info(.net, e.description) } else { Log.warn(.net, e.description) }
            if !clean && core.brokenBy == nil { core.brokenBy = e }
            core.failPeer(peer, e)
        }
        closeSockets(of: peer)
    }

    // MARK: notices and goodbyes

    /// Queues the notice on every healthy control stream at the next frame boundary (ahead of
    /// everything not yet started) and writes what it can. An abort notice is pushed out before this
    /// returns — finishing frames under way, for at most 200 ms — because the caller may exit next.
    package mutating func announce(_ notice: Notice, _ core: inout Core) {
        guard !closed else { return }
        let bytes = notice.encode()
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 8)
        bytes.withUnsafeBytes { buf.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        sentNotices.append(buf)
        for k in peers.indices where peers[k] != nil && core.peers[k].failure == nil && peers[k]!.socks[0].fd >= 0 {
            let f = Frame(type: .notice, tag: 0, a: UInt64(bytes.count), b: UInt64(notice.kind.rawValue),
                          payload: buf, payloadLength: bytes.count, slot: Self.noticeSlot)
            let st = peers[k]!.socks[0]
            let at = st.hasOutput && st.out[st.head].sent > 0 ? st.head + 1 : st.head
            peers[k]!.socks[0].out.insert(f, at: at)
            flush(k, &core)
        }
        guard notice.kind == .abort else { return }
        let until = Deadline.after(milliseconds: 200)
        while true {
            var fds: [pollfd] = []
            for k in peers.indices where peers[k] != nil && core.peers[k].failure == nil && peers[k]!.socks[0].fd >= 0 {
                let st = peers[k]!.socks[0]
                if st.out[st.head..<st.out.count].contains(where: { $0.slot == Self.noticeSlot }) {
                    fds.append(pollfd(fd: st.fd, events: Int16(POLLOUT), revents: 0))
                }
            }
            if fds.isEmpty || until.hasPassed { return }
            _ = try? fds.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: 10) }
            for f in fds where f.revents != 0 {
                guard let k = peers.firstIndex(where: { $0?.socks[0].fd == f.fd }) else { continue }
                flush(k, &core)
            }
        }
    }

    /// Closes every connection. A BYE goes first on each control connection whose outgoing stream is
    /// at a frame boundary, so the peer can tell a clean close from a crash.
    package mutating func close(aborting: Bool, _ core: inout Core) {
        closed = true
        for k in 0..<peers.count {
            guard peers[k] != nil else { continue }
            let fd0 = peers[k]!.socks[0].fd
            let atBoundary = !peers[k]!.socks[0].hasOutput || peers[k]!.socks[0].out[peers[k]!.socks[0].head].sent == 0
            if core.peers[k].failure == nil && fd0 >= 0 && atBoundary {
                let bye = Frame(type: .bye, tag: 0, a: aborting ? 1 : 0, b: 0, payload: nil, payloadLength: 0, slot: -1)
                withUnsafeBytes(of: bye.header) { b in
                    try? SocketIO.writeAll(fd0, b, deadline: .after(milliseconds: 200))
                }
            }
            closeSockets(of: k)
            peers[k]!.socks.forEach { $0.staging.deallocate() }
            peers[k]!.noticeIn?.deallocate()
            peers[k]!.noticeIn = nil
        }
        core.discardUnexpected()
        for b in sentNotices { b.deallocate() }
        sentNotices.removeAll()
    }
}
