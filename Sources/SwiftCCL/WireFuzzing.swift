import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms
import SwcclTCP
import SwcclSHM
import SwcclVerbs

/// Entry points for the fuzz harness (`Tests/fuzz`, docs/RELIABILITY.md "Fuzzing") and for unit tests
/// of the parsers of everything that arrives from the network: each target feeds arbitrary bytes to
/// the library's own parser, called as the library calls it, and returns a one-line summary of the
/// outcome (the harness discards it, tests compare it). An error is a fine outcome; a trap, a crash,
/// a hang or an allocation out of proportion to the input is a bug. Where a parser's output has a
/// property the rest of the library relies on, the target checks it with a `precondition`, so that
/// breaking it is a crash the fuzzer reports.
///
/// Not part of the API: `@_spi(Fuzzing) import SwiftCCL`.
@_spi(Fuzzing) public enum WireFuzzing {
    /// Every target, by name.
    public static let targets = ["bootstrap-hello", "rendezvous-answer", "oob", "mesh-hello", "tcp-stream", "notice", "shm-slot", "verbs", "unique-id"]

    /// The secret the targets' listeners expect (the seeds carry it, so that the fuzzer starts past
    /// the secret checks).
    public static let secret: [UInt8] = Array(0x10..<0x20)

    /// Runs `target` on `data`.
    public static func run(_ target: String, _ data: UnsafeRawBufferPointer) -> String {
        let input = Array(data)
        switch target {
        case "bootstrap-hello": return bootstrapHello(input)
        case "rendezvous-answer": return rendezvousAnswer(input)
        case "oob": return outOfBand(input)
        case "mesh-hello": return meshHello(input)
        case "tcp-stream": return tcpStream(input)
        case "notice": return notice(input)
        case "shm-slot": return shmSlot(input)
        case "verbs": return verbs(input)
        case "unique-id": return uniqueID(input)
        default: return "no target \(target)"
        }
    }

    // MARK: listeners

    /// Feeds `input` to `judge` as `HelloListener` does with what a newcomer sends before closing:
    /// reads exactly as far as each verdict asks. The accepted hello, or what became of the newcomer.
    static func listen(_ input: [UInt8], judge: ([UInt8]) -> HelloListener.Verdict) -> (hello: [UInt8]?, outcome: String) {
        var have = 0
        while true {
            switch HelloListener.step(Array(input.prefix(have)), judge: judge) {
            case .read(let n):
                precondition(n > have && n <= HelloListener.maxHelloBytes)
                guard n <= input.count else { return (nil, "closed after \(input.count) bytes, before its hello was complete (\(n) needed)") }
                have = n
            case .accept(let n):
                return (Array(input.prefix(n)), "hello of \(n) bytes")
            case .drop(let why):
                return (nil, "dropped: \(why)")
            }
        }
    }

    /// The bootstrap root's listener: a rank's hello (judged as it arrives, then read), and then its
    /// payload as every rank reads it in the root's answer.
    static func bootstrapHello(_ input: [UInt8]) -> String {
        let (bytes, outcome) = listen(input) { BootstrapRoot.judge($0, secret: secret) }
        guard let bytes else { return outcome }
        precondition(bytes.count <= 4 + BootstrapRoot.maxHelloBytes)
        let hello: BootstrapRoot.Hello
        do { hello = try BootstrapRoot.parseHello(bytes) } catch { return "malformed: \(error.cause)" }
        precondition(hello.rank >= 0 && hello.rank < hello.size && hello.size <= Communicator.maxRanks)
        // What a rank of a 1-rank job would make of it, as the root hands it out.
        let answer = BootstrapRoot.encodeAnswer(session: secret, payloads: [hello.payload])
        return "rank \(hello.rank) of \(hello.size), timeout \(hello.timeoutMs) ms; " + readAnswer(answer, nranks: 1)
    }

    /// Rank 0's out-of-band listener (first byte even: a hello; its rank), or a rank reading the
    /// answer to an all-gather (odd: the rest for 1…8 ranks).
    static func outOfBand(_ input: [UInt8]) -> String {
        guard let mode = input.first else { return "empty" }
        let rest = Array(input.dropFirst())
        if mode & 1 == 0 {
            let (bytes, outcome) = listen(rest) { b in Bootstrap.judgeOOB(b, secret: secret, nranks: 4, taken: { $0 == 2 }) }
            guard let bytes else { return outcome }
            let peer = Bootstrap.oobHelloRank(bytes)
            precondition(peer > 0 && peer < 4 && peer != 2)
            return "out-of-band hello from rank \(peer)"
        }
        let nranks = 1 + Int(mode >> 1) % 8
        do {
            let all = try Bootstrap.parseGathered(rest, nranks: nranks)
            precondition(all.count == nranks)
            return "gathered \(all.map(\.count))"
        } catch { return "malformed: \(error.cause)" }
    }

    /// A rank's listener of the TCP (and verbs) transport: rank 2 of 4 with 2 sockets per peer,
    /// waiting for socket 1 of rank 0 and both of rank 1. Also the connecting side's check of the
    /// answer (the first 8 bytes).
    static func meshHello(_ input: [UInt8]) -> String {
        let mesh = SocketMesh(magic: TCPTransport.handshakeMagic, version: UInt32(TCPTransport.protocolVersion), secret: secret,
                              rank: 2, nranks: 4, nsocks: 2, wakeFD: -1, owner: "fuzz")
        let ack = mesh.isAck(Array(input.prefix(8)))
        let (bytes, outcome) = listen(input) { b in mesh.judge(b) { from, s in from == 1 || (from == 0 && s == 1) } }
        guard let bytes else { return outcome + (ack ? " (an answer)" : "") }
        guard let f = SocketMesh.helloFields(bytes) else { preconditionFailure("an accepted hello without its fields") }
        precondition(f.to == 2 && (f.from == 1 || (f.from == 0 && f.socket == 1)) && f.socket < 2)
        return "connection \(f.socket) from rank \(f.from)"
    }

    // MARK: rendezvous

    /// A rank of 1…8 ranks (first byte) reading the root's answer (the rest), then every rank's
    /// information and transport addresses as the communicator's set-up reads them.
    static func rendezvousAnswer(_ input: [UInt8]) -> String {
        guard let first = input.first else { return "empty" }
        return readAnswer(Array(input.dropFirst()), nranks: 1 + Int(first) % 8)
    }

    static func readAnswer(_ bytes: [UInt8], nranks: Int) -> String {
        let answer: Bootstrap.Answer
        do { answer = try Bootstrap.parseAnswer(bytes, nranks: nranks) } catch { return "malformed answer: \(error.cause)" }
        switch answer {
        case .refused(let kind, let cause, let culprit):
            precondition(culprit.map { $0 >= 0 && $0 < nranks } ?? true)
            let e = CCLError(kind, "the bootstrap root reports: \(cause)", operation: "init: rendezvous", rank: 0, peer: culprit)
            return "refused: \(e.description)"
        case .admitted(let session, let oob, let blobs):
            precondition(session.count == 16 && blobs.count == nranks)
            let infos: [RankInfo]
            do { infos = try RankInfo.decodeAll(blobs) } catch { return "admitted, unreadable: \(error.description)" }
            var parts: [String] = []
            for (k, info) in infos.enumerated() {
                precondition(info.rank == k)
                var ts: [String] = []
                for t in info.transports {
                    switch t.name {
                    case "tcp", "ib": ts.append("\(t.name) \(TCPTransport.decode(t.address).map { "\($0.address) x\($0.nsocks)" } ?? "unreadable")")
                    case "shm": ts.append("shm \(SHMTransport.decode(t.address) ?? "unreadable")")
                    default: ts.append("\(CCLError.oneLine(t.name))?")
                    }
                }
                parts.append("rank \(k) pid \(info.pid) on \(CCLError.oneLine(info.host.description)) same host \(info.host.sameHost(as: .local)): \(ts.joined(separator: ", "))")
            }
            return "admitted (out-of-band at \(oob.map(\.description) ?? "?")): " + parts.joined(separator: "; ")
        }
    }

    // MARK: transports

    /// Rank 0 of 2 over TCP, its connections to rank 1 being socket pairs whose other ends carry
    /// `input`'s stream: `[flags][tag, size class] per receive, per send [split: u16][stream]`.
    /// flags: bits 0-1 receives to post, 2-3 sends, 4: rank 1 closes its ends after the stream. The
    /// first `split` bytes go to connection 0, the rest to the last connection. Receives and sends
    /// are polled (`test`) until they end or nothing moves.
    static func tcpStream(_ input: [UInt8]) -> String {
        var at = 0
        func byte() -> Int { defer { at += 1 }; return at < input.count ? Int(input[at]) : 0 }
        let flags = byte()
        let sizes = [0, 1, 8, 100, 4096, 65536, 65537, 300_000]
        let recvs = (0..<(flags & 3)).map { _ in (tag: UInt64(byte()), size: sizes[byte() % sizes.count]) }
        let sends = (0..<(flags >> 2 & 3)).map { _ in (tag: UInt64(byte()), size: sizes[byte() % sizes.count]) }
        let split = byte() | byte() << 8
        let stream = Array(input.dropFirst(min(at, input.count)))
        let pieces = [Array(stream.prefix(split)), Array(stream.dropFirst(split))]

        let t: TCPTransport
        do { t = try TCPTransport(rank: 0, nranks: 2, secret: secret, maxOutstanding: 16) } catch { return "no transport: \(error)" }
        var mine: [Int32] = [], theirs: [Int32] = []
        for _ in 0..<t.nsocks {
            guard let (a, b) = try? Sys.socketPair() else { break }
            mine.append(a); theirs.append(b)
        }
        guard mine.count == t.nsocks else {
            (mine + theirs).forEach { Sys.close($0) }
            t.close()
            return "no socket pair"
        }
        t.attach(peer: 1, fds: mine)
        for (k, piece) in pieces.enumerated() where !piece.isEmpty {
            let fd = theirs[k == 0 ? 0 : theirs.count - 1]
            _ = piece.withUnsafeBytes { b in try? Sys.send(fd, b.baseAddress!, b.count) }
        }
        if flags & 16 != 0 { theirs.forEach { Sys.close($0) }; theirs = [] }

        let buffers = (recvs.map(\.size) + sends.map(\.size)).map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0, alignment: 16) }
        for b in buffers { b.initializeMemory(as: UInt8.self, repeating: 0x5a) }
        var pending: [Request] = []
        var failures: [String] = []
        func post(_ body: () throws(CCLError) -> Request) {
            do { pending.append(try body()) } catch { failures.append(error.cause) }
        }
        for (k, r) in recvs.enumerated() { post { () throws(CCLError) in try t.irecv(from: 1, tag: r.tag, into: buffers[k]) } }
        for (k, s) in sends.enumerated() {
            post { () throws(CCLError) in try t.isend(to: 1, tag: s.tag, UnsafeRawBufferPointer(buffers[recvs.count + k])) }
        }
        var done = 0
        var sink = [UInt8](repeating: 0, count: 1 << 16)
        for _ in 0..<32 {
            // What rank 0 writes is read and dropped, so that its writes keep going.
            for fd in theirs { _ = sink.withUnsafeMutableBytes { b in try? Sys.recv(fd, b.baseAddress!, b.count) } }
            if pending.isEmpty { _ = try? t.waitForProgress(deadline: .after(milliseconds: 0)); continue }
            pending = pending.filter { r in
                do throws(CCLError) {
                    if try t.test(r) { done += 1; return false }
                    return true
                } catch {
                    failures.append(error.cause)
                    return false
                }
            }
        }
        let notice = t.peerNotice(1).map { "\($0.kind)" } ?? "none"
        let unexpected = t.unexpectedTags(from: 1).count
        let lost = t.peerFailure(1).map { "; rank 1 lost: \($0.cause)" } ?? ""
        t.close()
        theirs.forEach { Sys.close($0) }
        buffers.forEach { $0.deallocate() }
        return "\(done) done, \(pending.count) pending, \(failures.count) failed\(failures.first.map { " (\($0))" } ?? ""); notice \(notice); \(unexpected) unexpected\(lost)"
    }

    /// A peer's notice (first byte 0: as a TCP NOTICE body; 1: as its shared-memory notice area;
    /// 2: as the verbs control stream, in two pieces).
    static func notice(_ input: [UInt8]) -> String {
        guard let mode = input.first else { return "empty" }
        let rest = Array(input.dropFirst())
        switch mode % 3 {
        case 0:
            return describe(Notice.decode(rest))
        case 1:
            var area = rest.prefix(SHMTransport.noticeAreaBytes) + [UInt8](repeating: 0, count: max(0, SHMTransport.noticeAreaBytes - rest.count))
            let (version, n) = area.withUnsafeMutableBytes { SHMTransport.readNoticeArea($0.baseAddress!) }
            return "version \(version): " + describe(n)
        default:
            let half = rest.count / 2
            var buffer = Array(rest.prefix(half))
            var all = Notice.unframe(&buffer)
            precondition(buffer.count < 4 + Notice.maxBytes)
            buffer += rest.dropFirst(half)
            all += Notice.unframe(&buffer)
            precondition(buffer.count < 4 + Notice.maxBytes)
            return "\(all.count) notices: " + all.map(describe).joined(separator: "; ")
        }
    }

    /// A decoded notice as a rank reports it. A notice a rank relays must stay one its peers accept.
    static func describe(_ n: Notice?) -> String {
        guard let n else { return "unreadable" }
        let again = n.encode()
        precondition(again.count <= Notice.maxBytes && Notice.decode(again) != nil)
        return n.error(at: 0).description
    }

    /// A shared-memory FIFO slot's header as a peer wrote it (`[kind u32][len u32][offset u64][total
    /// u64]`), checked as `drain` checks it, and what it would then read and write.
    static func shmSlot(_ input: [UInt8]) -> String {
        var r = ByteReader(input)
        guard let kind = try? r.u32(), let len32 = try? r.u32(), let off = try? r.u64(), let tot = try? r.u64() else { return "short" }
        let len = Int(len32), offset = Int(truncatingIfNeeded: off), total = Int(truncatingIfNeeded: tot)
        if let problem = SHMTransport.slotProblem(kind: kind, len: len, offset: offset, total: total) { return "garbage: \(problem)" }
        switch kind {
        case SHMTransport.eager: precondition(len >= 0 && len <= SHMTransport.payloadBytes && total == len)
        case SHMTransport.data: precondition(len > 0 && len <= SHMTransport.payloadBytes && offset >= 0)
        case SHMTransport.rts: precondition(total > 0)
        default: break
        }
        return "kind \(kind): \(len) bytes at \(offset) of \(total)"
    }

    /// Verbs: a peer's queue-pair set-up message (first byte even) or a SEND's header (odd).
    static func verbs(_ input: [UInt8]) -> String {
        guard let mode = input.first else { return "empty" }
        let rest = Array(input.dropFirst())
        if mode & 1 == 0 {
            do {
                let m = try VerbsSetup.decode(rest)
                let again = try? VerbsSetup.decode(m.encode())
                precondition(again == m)
                return "set-up: QP \(m.qpn) PSN \(m.psn) LID \(m.lid) MTU \(m.mtu) eager \(m.eager)"
            } catch { return "malformed: \(error.cause)" }
        }
        do throws(CCLError) {
            let h = try rest.withUnsafeBytes { b in catching { () throws(CCLError) in
                try VerbsHeader.decode(b.baseAddress ?? UnsafeRawPointer(bitPattern: 16)!, count: b.count, from: 1)
            } }.get()
            precondition(h.length >= 0 && UInt64(h.length) <= VerbsHeader.maxLength)
            return "\(h.type) tag \(h.tag) length \(h.length)"
        } catch { return "refused: \(error.cause)" }
    }

    /// A unique id handed over by the user: as bytes (padded or cut to 128 when of another size), and
    /// as hex text.
    static func uniqueID(_ input: [UInt8]) -> String {
        var out: [String] = []
        for bytes in [input, Array(input.prefix(UniqueID.byteCount)) + [UInt8](repeating: 0, count: max(0, UniqueID.byteCount - input.count))] {
            do {
                let id = try UniqueID(bytes: bytes)
                let parts = try id.parsed()
                let again = try? UniqueID(hex: id.hex)
                precondition(again == id && parts.secret.count == 16)
                out.append("root \(parts.root) (rank 0 runs it: \(parts.rankZeroRunsRoot))")
            } catch { out.append("refused: \(error.cause)") }
        }
        do { _ = try UniqueID(hex: String(decoding: input, as: UTF8.self)); out.append("hex accepted") } catch { out.append("hex refused") }
        return out.joined(separator: "; ")
    }

    // MARK: seeds

    /// Valid messages of each target, made by the library's own encoders: the seed corpus
    /// (`Tests/fuzz/run.sh` writes them to `Tests/fuzz/corpus/<target>/`).
    public static func seeds(_ target: String) -> [[UInt8]] {
        func framed(_ b: [UInt8]) -> [UInt8] { var w = ByteWriter(); w.blob(b); return w.bytes }
        var oob = [UInt8](repeating: 0, count: SocketAddress.encodedSize)
        oob.withUnsafeMutableBytes { SocketAddress.parse("127.0.0.1:4242")!.encode(into: $0.baseAddress!) }
        let host = HostIdentity(hostname: "node1", bootID: "0123456789abcdef", shmDevice: 42)
        func info(_ rank: Int) -> [UInt8] {
            var tcp = [UInt8](repeating: 0, count: 2 + SocketAddress.encodedSize)
            tcp[0] = UInt8(TCPTransport.protocolVersion); tcp[1] = 1
            tcp.withUnsafeMutableBytes { SocketAddress.parse("10.0.0.\(rank + 1):5000")!.encode(into: $0.baseAddress! + 2) }
            var shm = Array("/swccl-0123456789abcdef0123456789abcdef-r\(rank)".utf8)
            shm.insert(UInt8(shm.count), at: 0)
            return RankInfo(rank: rank, pid: 1000 + Int32(rank), host: host,
                            transports: [("shm", EndpointAddress(shm)), ("tcp", EndpointAddress(tcp))]).encode()
        }
        func payload(_ rank: Int) -> [UInt8] { var w = ByteWriter(); w.blob(oob); w.blob(info(rank)); return w.bytes }
        let abort = Notice(.abort, culprit: 3, origin: 1, errorKind: .remoteError, operation: "allreduce #17 on comm 'dp'", cause: "connection lost: rank 3 closed it without a goodbye")
        let waiting = Notice(.waiting, culprit: 2, origin: 1, operation: "broadcast #3 on comm 'comm'", cause: "rank 1 waits for rank 2 in broadcast #3")
        switch target {
        case "bootstrap-hello":
            return [0, 1, 3].map { r in
                framed(Bootstrap.encodeHello(secret: secret, rank: r, nranks: 4, timeoutMs: 60_000, oobAddress: oob, blob: info(r)))
            } + [framed(Bootstrap.encodeHello(secret: secret, rank: 0, nranks: 1, timeoutMs: 1000, oobAddress: [], blob: []))]
        case "rendezvous-answer":
            return [[3] + BootstrapRoot.encodeAnswer(session: secret, payloads: (0..<4).map(payload)),
                    [0] + BootstrapRoot.encodeAnswer(session: secret, payloads: [payload(0)]),
                    [3] + BootstrapRoot.encodeRefusal(kind: .timeout, cause: "ranks [3] of 4 did not reach the bootstrap root within 4000 ms", culprit: 3),
                    [1] + BootstrapRoot.encodeRefusal(kind: .invalidUsage, cause: "two processes claim rank 1", culprit: nil)]
        case "oob":
            var gathered = ByteWriter()
            for b in [[1, 2, 3], [], [UInt8](repeating: 7, count: 40)] as [[UInt8]] { gathered.blob(b) }
            return [[0] + framed(Bootstrap.encodeOOBHello(secret: secret, rank: 1)),
                    [0] + framed(Bootstrap.encodeOOBHello(secret: secret, rank: 3)),
                    [5] + gathered.bytes]
        case "mesh-hello":
            let mesh = { (r: Int) in SocketMesh(magic: TCPTransport.handshakeMagic, version: UInt32(TCPTransport.protocolVersion), secret: secret,
                                                rank: r, nranks: 4, nsocks: 2, wakeFD: -1, owner: "fuzz") }
            var ack = ByteWriter(); ack.u32(TCPTransport.handshakeMagic); ack.u32(0)
            return [mesh(1).hello(to: 2, socket: 0), mesh(1).hello(to: 2, socket: 1), mesh(0).hello(to: 2, socket: 1), ack.bytes]
        case "tcp-stream":
            func frame(_ type: FrameType, tag: UInt64, a: UInt64, b: UInt64, _ body: [UInt8] = []) -> [UInt8] {
                let f = Frame(type: type, tag: tag, a: a, b: b, payload: nil, payloadLength: 0, slot: -1)
                return withUnsafeBytes(of: f.header) { Array($0) } + body
            }
            func stream(_ flags: UInt8, _ specs: [UInt8], _ s0: [UInt8], _ s1: [UInt8] = []) -> [UInt8] {
                [flags] + specs + [UInt8(s0.count & 0xff), UInt8(s0.count >> 8)] + s0 + s1
            }
            let body = [UInt8](repeating: 0xab, count: 100)
            let big = [UInt8](repeating: 0xcd, count: 65537)
            let note = abort.encode()
            return [
                // An eager message for a posted receive, one unexpected, a goodbye.
                stream(0x01, [7, 3], frame(.eager, tag: 7, a: 100, b: 0, body) + frame(.eager, tag: 9, a: 8, b: 0, Array(body.prefix(8))) + frame(.bye, tag: 0, a: 0, b: 0)),
                // A rendezvous: request, then the data (after this rank's grant), split over both connections.
                stream(0x11, [5, 6], frame(.rts, tag: 5, a: 65537, b: 1) + frame(.data, tag: 0, a: 4096, b: 1, Array(big.prefix(4096))),
                       frame(.data, tag: 4096, a: 61441, b: 1, Array(big.dropFirst(4096)))),
                // A large send granted by the peer, and one refused.
                stream(0x08, [1, 6, 2, 7], frame(.cts, tag: 0, a: 0, b: 1) + frame(.cts, tag: 0, a: 1, b: 2)),
                // A notice, then the peer goes away.
                stream(0x11, [4, 2], frame(.notice, tag: 0, a: UInt64(note.count), b: 1, note)),
                stream(0x00, [], frame(.notice, tag: 0, a: UInt64(waiting.encode().count), b: 2, waiting.encode())),
            ]
        case "notice":
            var framedNotices: [UInt8] = []
            for n in [abort, waiting] {
                let b = n.encode()
                framedNotices += [UInt8(b.count & 0xff), UInt8(b.count >> 8), 0, 0] + b
            }
            var area = [UInt8](repeating: 0, count: SHMTransport.noticeAreaBytes)
            let b = abort.encode()
            area[0] = 2; area[8] = UInt8(b.count & 0xff); area[9] = UInt8(b.count >> 8)
            area.replaceSubrange(16..<16 + b.count, with: b)
            return [[0] + abort.encode(), [0] + waiting.encode(), [1] + area, [2] + framedNotices]
        case "shm-slot":
            func slot(_ kind: UInt32, _ len: Int, _ offset: Int, _ total: Int) -> [UInt8] {
                var w = ByteWriter(); w.u32(kind); w.u32(UInt32(len)); w.u64(UInt64(bitPattern: Int64(offset))); w.u64(UInt64(total)); return w.bytes
            }
            return [slot(SHMTransport.eager, 100, 0, 100), slot(SHMTransport.rts, 0, 0x7f00_0000_1000, 1 << 20),
                    slot(SHMTransport.cts, 0, Int(SHMTransport.pulled), 0), slot(SHMTransport.data, SHMTransport.payloadBytes, 3 * SHMTransport.payloadBytes, 1 << 20)]
        case "verbs":
            var eager = [UInt8](repeating: 0, count: 40 + 16)
            var rts = [UInt8](repeating: 0, count: 40)
            var cts = [UInt8](repeating: 0, count: 40)
            eager[0] = 1; eager[8] = 9; eager[16] = 16
            rts[0] = 2; rts[8] = 9; rts[16] = 0; rts[18] = 1  // 64 KiB
            cts[0] = 3; cts[8] = 9; cts[16] = 0x40; cts[26] = 1; cts[36] = 1
            let setup = VerbsSetup(qpn: 0x11, psn: 0x123456, lid: 0, mtu: 1024, eager: 8192, gid: Array(repeating: 0xfe, count: 16))
            return [[0] + setup.encode(), [1] + eager, [1] + rts, [1] + cts, [1, 5] + [UInt8](repeating: 0, count: 39)]
        case "unique-id":
            let v6: [UInt8] = [6, 0x73, 0x3c] + [UInt8](repeating: 0, count: 15) + [1]  // [::1]:29500
            let ids = [UniqueID(root: SocketAddress.parse("127.0.0.1:29500")!, secret: secret, rankZeroRunsRoot: true),
                       UniqueID(root: v6.withUnsafeBytes { SocketAddress.decode(from: $0.baseAddress!)! }, secret: secret, rankZeroRunsRoot: false, weakSecret: true)]
            return ids.map(\.bytes) + [Array(ids[0].hex.utf8)]
        default:
            return []
        }
    }
}
