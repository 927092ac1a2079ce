import Glibc

/// NCCL-style group calls (`swcclGroupStart`/`swcclGroupEnd`), per thread and nestable. Inside a
/// group, sends and receives are validated at once and recorded; collectives are recorded whole. At
/// the outermost `end`, every recorded receive and send of every communicator is posted before any
/// is waited for — so a ring of sends and receives in one group cannot deadlock — and then the
/// recorded collectives run in call order. Buffers must stay valid until `end` returns.
public enum Group {
    final class State {
        var depth = 0
        var p2p: [PointToPoint] = []
        var calls: [(Communicator, String, () throws(CCLError) -> Void)] = []
    }

    struct PointToPoint {
        let comm: Communicator
        let send: UnsafeRawBufferPointer?
        let to: Int
        let recv: UnsafeMutableRawBufferPointer?
        let from: Int
    }

    nonisolated(unsafe) private static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in if let p { Unmanaged<State>.fromOpaque(p).release() } }
        return k
    }()

    static var state: State {
        if let p = pthread_getspecific(key) { return Unmanaged<State>.fromOpaque(p).takeUnretainedValue() }
        let s = State()
        pthread_setspecific(key, Unmanaged.passRetained(s).toOpaque())
        return s
    }

    /// Whether the calling thread is inside a group.
    public static var isActive: Bool { state.depth > 0 }

    public static func start() { state.depth += 1 }

    /// Ends the group; at the outermost level runs what was recorded and returns the first error.
    public static func end() throws(CCLError) {
        let s = state
        guard s.depth > 0 else { throw CCLError.invalidUsage("swcclGroupEnd without swcclGroupStart") }
        s.depth -= 1
        if s.depth > 0 { return }
        let p2p = s.p2p, calls = s.calls
        s.p2p = []; s.calls = []
        try runPointToPoint(p2p)
        for (comm, name, body) in calls { try comm.run(name, body) }
    }

    static func record(_ op: PointToPoint) { state.p2p.append(op) }
    static func record(_ comm: Communicator, _ name: String, _ body: @escaping () throws(CCLError) -> Void) {
        state.calls.append((comm, name, body))
    }

    /// Posts every receive, then every send, of every communicator, then waits for all of them. Sends
    /// to self are paired with receives from self of the same communicator in call order and copied.
    private static func runPointToPoint(_ ops: [PointToPoint]) throws(CCLError) {
        guard !ops.isEmpty else { return }
        var pending: [(Communicator, Request)] = []
        var firstError: CCLError?
        // Self traffic first: the k-th send to self feeds the k-th receive from self.
        var seen: [ObjectIdentifier] = []
        for op in ops where !seen.contains(ObjectIdentifier(op.comm)) {
            let comm = op.comm
            seen.append(ObjectIdentifier(comm))
            let sends = ops.filter { $0.comm === comm && $0.send != nil && $0.to == comm.rank }.map { $0.send! }
            let recvs = ops.filter { $0.comm === comm && $0.recv != nil && $0.from == comm.rank }.map { $0.recv! }
            guard sends.count == recvs.count else {
                firstError = firstError ?? CCLError.invalidUsage("the group has \(sends.count) sends to self but \(recvs.count) receives from self").with(rank: comm.rank)
                continue
            }
            for (d, r) in zip(sends, recvs) {
                guard d.count == r.count else {
                    firstError = firstError ?? CCLError.invalidUsage("a send to self of \(d.count) bytes meets a receive from self of \(r.count)").with(rank: comm.rank)
                    break
                }
                if let src = d.baseAddress, let dst = r.baseAddress, r.count > 0, UnsafeRawPointer(dst) != src {
                    dst.copyMemory(from: src, byteCount: d.count)
                }
            }
        }
        func post(_ receives: Bool) {
            for op in ops where firstError == nil {
                do throws(CCLError) {
                    try op.comm.run(receives ? "recv" : "send") { () throws(CCLError) in
                        do throws(CCLError) {
                            if receives, let r = op.recv, op.from != op.comm.rank {
                                pending.append((op.comm, try op.comm.transport.irecv(from: op.from, tag: op.comm.p2pTag(op.from, sending: false), into: r)))
                            } else if !receives, let d = op.send, op.to != op.comm.rank {
                                pending.append((op.comm, try op.comm.transport.isend(to: op.to, tag: op.comm.p2pTag(op.to, sending: true), d)))
                            }
                        } catch { throw error.breaking }
                    }
                } catch { firstError = error }
            }
        }
        post(true)
        post(false)
        for (comm, q) in pending {
            do throws(CCLError) {
                try comm.run("group") { () throws(CCLError) in
                    do throws(CCLError) { try comm.transport.wait(q, deadline: .after(milliseconds: comm.timeoutMs)) }
                    catch { throw error.breaking }
                }
            } catch { if firstError == nil { firstError = error } }
        }
        if let e = firstError { throw e }
    }
}
