import Glibc
import SwcclSystem

/// A listening socket whose newcomers are all served at once: every pending connection is accepted as
/// soon as it arrives and read in one `poll(2)` together with all the others, each into a buffer no
/// larger than its hello needs and against its own deadline. A silent or slow stranger (a port scanner,
/// a health check) therefore delays nobody; it is dropped when its deadline passes, when it sends
/// something that is not a hello, or — beyond `maxPending` connections that have not finished their
/// hello — to make room (the oldest goes first). Every drop is logged with the stranger's address.
///
/// Used by every listening port of the library: the bootstrap root (also the shrink's root), rank 0's
/// out-of-band listener and `SocketMesh` (the TCP and verbs listeners).
package struct HelloListener {
    /// What a listener makes of the bytes a newcomer has sent so far.
    package enum Verdict {
        /// Not enough yet: read until the connection has sent this many bytes in all.
        case need(Int)
        /// A complete hello of this many bytes (nothing beyond it is read).
        case hello(Int)
        /// Not one of ours: drop it, logging this cause.
        case reject(String)
    }

    package enum Event {
        /// A newcomer's complete hello; the caller now owns `fd`.
        case hello(fd: Int32, from: SocketAddress, bytes: [UInt8])
        /// One of the caller's own descriptors (`watch`) is readable or hung up.
        case watched(index: Int)
        case timeout
    }

    private struct Pending {
        package var fd: Int32
        package var from: SocketAddress
        package var bytes: [UInt8]
        package var need: Int
        package var deadline: Deadline
    }

    package let listenFD: Int32
    /// Readable when the owner aborts (-1: none).
    package let wakeFD: Int32
    /// For logs: whose listener this is ("bootstrap root", "rank 3: TCP listener").
    package let owner: String
    /// How long a newcomer may take to send its whole hello.
    package let helloMs: Int
    /// Connections held at once that have not finished their hello.
    package let maxPending: Int
    private var pending: [Pending] = []
    /// After EMFILE/ENFILE: the listener is left alone until then (its backlog waits in the kernel).
    private var acceptPausedUntil = Deadline(nanos: 0)
    private var pollSet: [pollfd] = []

    package static let defaultHelloMs = 5000
    package static let defaultMaxPending = 64

    package init(listenFD: Int32, wakeFD: Int32 = -1, owner: String, helloMs: Int = defaultHelloMs, maxPending: Int = defaultMaxPending) {
        self.listenFD = listenFD
        self.wakeFD = wakeFD
        self.owner = owner
        self.helloMs = helloMs
        self.maxPending = max(1, maxPending)
    }

    package var pendingCount: Int { pending.count }

    /// Drops every connection still pending (the caller is done with the listener).
    package mutating func closeAll() {
        for p in pending { Sys.close(p.fd) }
        pending.removeAll()
    }

    private mutating func drop(_ i: Int, _ why: String) {
        let p = pending.remove(at: i)
        Sys.close(p.fd)
        Log.warn(.net, "\(owner): dropped a connection from \(p.from): \(why)")
    }

    /// Serves the listener and every pending newcomer until a newcomer completes a hello that `judge`
    /// accepts, one of `watch` (the caller's own descriptors, polled for input) is ready, or `deadline`.
    /// Throws only when the owner aborts (`wakeFD`) or `poll` itself fails.
    package mutating func next(until deadline: Deadline, watch: [Int32] = [], judge: ([UInt8]) -> Verdict) throws(CCLError) -> Event {
        while true {
            let now = Sys.monotonicNanos()
            var i = 0
            while i < pending.count {
                if pending[i].deadline.nanos <= now { drop(i, "no complete hello within \(helloMs) ms") } else { i += 1 }
            }
            var wait = deadline
            for p in pending where p.deadline < wait { wait = p.deadline }
            let listening = acceptPausedUntil.nanos <= now
            if !listening && acceptPausedUntil < wait { wait = acceptPausedUntil }
            pollSet.removeAll(keepingCapacity: true)
            pollSet.append(pollfd(fd: listening ? listenFD : -1, events: Int16(POLLIN), revents: 0))
            pollSet.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            for fd in watch { pollSet.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            for p in pending { pollSet.append(pollfd(fd: p.fd, events: Int16(POLLIN), revents: 0)) }
            let n: Int
            do throws(Errno) { n = try pollSet.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, b.count, timeoutMs: wait.remainingMs) } }
            catch { throw CCLError.system("\(owner): poll", error) }
            if wakeFD >= 0 && pollSet[1].revents != 0 { throw CCLError(.invalidUsage, "aborted") }
            if n == 0 {
                if deadline.hasPassed { return .timeout }
                continue
            }
            for (k, _) in watch.enumerated() where pollSet[2 + k].revents != 0 { return .watched(index: k) }
            // Readable newcomers (the poll set lists them in `pending` order after the watched ones).
            var readable: [Int32] = []
            for (k, p) in pending.enumerated() where pollSet[2 + watch.count + k].revents != 0 { readable.append(p.fd) }
            for fd in readable {
                guard let i = pending.firstIndex(where: { $0.fd == fd }) else { continue }
                if let e = read(i, judge: judge) { return e }
            }
            if listening && pollSet[0].revents != 0 {
                if let e = acceptAll(judge: judge) { return e }
            }
        }
    }

    /// Accepts every connection the kernel has queued; reads at once what each has already sent (a real
    /// peer writes its hello right after connecting, so it usually completes here).
    private mutating func acceptAll(judge: ([UInt8]) -> Verdict) -> Event? {
        while true {
            let accepted: (Int32, SocketAddress)?
            do throws(Errno) { accepted = try Sys.accept(listenFD) } catch {
                if error == Errno(EMFILE) || error == Errno(ENFILE) || error == Errno(ENOBUFS) || error == Errno(ENOMEM) {
                    Log.warn(.net, "\(owner): cannot accept connections for now (\(error)); retrying in 100 ms")
                    acceptPausedUntil = .after(milliseconds: 100)
                } else {
                    Log.warn(.net, "\(owner): accept failed: \(error)")
                }
                return nil
            }
            guard let (fd, from) = accepted else { return nil }
            SocketIO.tune(fd)
            if pending.count >= maxPending {
                drop(0, "\(maxPending) connections were waiting for a hello at once; the oldest made room for a new one")
            }
            guard case .read(let first) = Self.step([], judge: judge) else { Sys.close(fd); continue }
            pending.append(Pending(fd: fd, from: from, bytes: [], need: first, deadline: .after(milliseconds: helloMs)))
            if let e = read(pending.count - 1, judge: judge) { return e }
        }
    }

    /// Reads what newcomer `i` has sent, no further than its hello needs, and judges it.
    private mutating func read(_ i: Int, judge: ([UInt8]) -> Verdict) -> Event? {
        while true {
            let have = pending[i].bytes.count, want = pending[i].need - have
            if want > 0 {
                var chunk = [UInt8](repeating: 0, count: want)
                let r: Int?
                let fd = pending[i].fd
                do throws(Errno) { r = try chunk.withUnsafeMutableBytes { b in catching { () throws(Errno) -> Int? in try Sys.recv(fd, b.baseAddress!, want) } }.get() }
                catch { drop(i, "receive failed: \(error)"); return nil }
                guard let got = r else { return nil }  // nothing more for now
                if got == 0 {
                    drop(i, have == 0 ? "closed without sending anything" : "closed after \(have) bytes, before its hello was complete")
                    return nil
                }
                pending[i].bytes += chunk[0..<got]
                if got < want { return nil }
            }
            switch Self.step(pending[i].bytes, judge: judge) {
            case .read(let n):
                pending[i].need = n
            case .accept(let n):
                let p = pending.remove(at: i)
                return .hello(fd: p.fd, from: p.from, bytes: Array(p.bytes.prefix(n)))
            case .drop(let why):
                drop(i, why)
                return nil
            }
        }
    }

    /// What a listener does next with the bytes a newcomer has sent so far.
    package enum Step: Equatable {
        /// Read until it has sent this many bytes in all (more than it has).
        case read(Int)
        /// Its hello is the first this many bytes (all of them there).
        case accept(Int)
        /// Drop it, logging this cause.
        case drop(String)
    }

    /// The most a newcomer is ever read before its hello is complete, whatever a judge asks for.
    package static let maxHelloBytes = 1 << 20

    /// Judges `bytes` and checks the judge's answer (pure: the fuzz harness drives it with arbitrary
    /// bytes, as `read` does with what a connection sent). A judge that asks for no more than is there,
    /// for more than `maxHelloBytes`, or accepts more than is there, drops the newcomer.
    package static func step(_ bytes: [UInt8], judge: ([UInt8]) -> Verdict) -> Step {
        switch judge(bytes) {
        case .need(let n):
            guard n > bytes.count, n <= maxHelloBytes else { return .drop("malformed hello") }
            return .read(n)
        case .hello(let n):
            guard n > 0, n <= bytes.count else { return .drop("malformed hello") }
            return .accept(n)
        case .reject(let why):
            return .drop(why)
        }
    }
}

/// Compares secrets in time independent of where they differ.
package func secretsEqual(_ a: some Collection<UInt8>, _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}
