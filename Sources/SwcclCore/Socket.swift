import Glibc
import SwcclSystem

/// Blocking-with-deadline socket helpers over non-blocking sockets, used by the bootstrap and by every
/// TCP handshake. All waits are bounded by a `Deadline` and woken early by an abort eventfd.
package enum SocketIO {
    /// The cause of an error when the other end closed a connection (callers that know who it was
    /// replace it with a sentence naming them).
    package static let closedByPeer = "connection closed by the peer"

    /// Opens a listening socket on `address` (port 0 picks one).
    package static func listen(on address: SocketAddress) throws(CCLError) -> (fd: Int32, address: SocketAddress) {
        do throws(Errno) {
            let fd = try Sys.socket(family: address.family)
            do {
                try Sys.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
                try Sys.bind(fd, address)
                try Sys.listen(fd)
                return (fd, try Sys.localAddress(fd))
            } catch {
                Sys.close(fd)
                throw error
            }
        } catch {
            throw CCLError(.systemError, "cannot listen on \(address): \(error)", errno: error)
        }
    }

    package static func tune(_ fd: Int32) {
        try? Sys.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    /// Waits until `fd` is ready for `events` or the deadline passes; returns false on timeout.
    package static func waitFor(_ fd: Int32, events: Int16, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) -> Bool {
        var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: abortFD, events: Int16(POLLIN), revents: 0)]
        while true {
            let left = deadline.remainingMs
            if left == 0 { return false }
            let n: Int
            do throws(Errno) { n = try fds.withUnsafeMutableBufferPointer { (b) throws(Errno) -> Int in try Sys.poll(b.baseAddress!, abortFD >= 0 ? 2 : 1, timeoutMs: left) } }
            catch { throw CCLError.system("poll", error) }
            if n == 0 { continue }
            if abortFD >= 0 && fds[1].revents != 0 { throw CCLError(.invalidUsage, "aborted") }
            if fds[0].revents != 0 { return true }
        }
    }

    /// Connects to `address`, retrying refused or unreachable attempts with backoff until `deadline`.
    package static func connect(to address: SocketAddress, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) -> Int32 {
        var backoffMs: UInt64 = 1
        var lastError = Errno(ETIMEDOUT)
        while !deadline.hasPassed {
            let fd: Int32
            do { fd = try Sys.socket(family: address.family) } catch { throw CCLError.system("socket", error) }
            do {
                var done = try Sys.connect(fd, address)
                if !done {
                    if try waitFor(fd, events: Int16(POLLOUT), deadline: deadline, abortFD: abortFD) {
                        if let e = Sys.socketError(fd) { throw e }
                        done = true
                    }
                }
                if done { tune(fd); return fd }
                Sys.close(fd)
                break
            } catch let e as Errno {
                Sys.close(fd)
                lastError = e
            } catch {
                Sys.close(fd)
                throw asCCLError(error)
            }
            let wait = min(backoffMs, UInt64(max(deadline.remainingMs, 0)))
            Sys.sleep(nanos: wait * 1_000_000)
            backoffMs = min(backoffMs * 2, 200)
        }
        throw CCLError(.timeout, "could not connect to \(address) before the deadline (last error: \(lastError))",
                       peerAddress: address.description, errno: lastError)
    }

    /// Accepts one connection before `deadline`, or nil on timeout.
    package static func accept(_ listenFD: Int32, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) -> (Int32, SocketAddress)? {
        while true {
            do {
                if let c = try Sys.accept(listenFD) { tune(c.0); return c }
            } catch { throw CCLError.system("accept", error) }
            if !(try waitFor(listenFD, events: Int16(POLLIN), deadline: deadline, abortFD: abortFD)) { return nil }
        }
    }

    package static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) {
        var off = 0
        while off < bytes.count {
            let n: Int
            do throws(Errno) { n = try Sys.send(fd, bytes.baseAddress! + off, bytes.count - off) }
            catch { throw CCLError(.remoteError, "send failed: \(error)", errno: error) }
            off += n
            if off < bytes.count && n == 0 {
                if !(try waitFor(fd, events: Int16(POLLOUT), deadline: deadline, abortFD: abortFD)) {
                    throw CCLError(.timeout, "timed out sending \(bytes.count) bytes")
                }
            }
        }
    }

    package static func writeAll(_ fd: Int32, _ bytes: [UInt8], deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) {
        try bytes.withUnsafeBytes { b in catching { () throws(CCLError) in try writeAll(fd, b, deadline: deadline, abortFD: abortFD) } }.get()
    }

    package static func readAll(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) {
        var off = 0
        while off < bytes.count {
            let r: Int?
            do throws(Errno) { r = try Sys.recv(fd, bytes.baseAddress! + off, bytes.count - off) }
            catch { throw CCLError(.remoteError, "receive failed: \(error)", errno: error) }
            if let n = r {
                if n == 0 { throw CCLError(.remoteError, closedByPeer) }
                off += n
            } else if !(try waitFor(fd, events: Int16(POLLIN), deadline: deadline, abortFD: abortFD)) {
                throw CCLError(.timeout, "timed out waiting for \(bytes.count - off) more bytes")
            }
        }
    }

    package static func read(_ fd: Int32, count: Int, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        try buf.withUnsafeMutableBytes { b in catching { () throws(CCLError) in try readAll(fd, b, deadline: deadline, abortFD: abortFD) } }.get()
        return buf
    }

    /// A length-prefixed message (u32 length, then the bytes), at most `max` bytes.
    package static func sendMessage(_ fd: Int32, _ bytes: [UInt8], deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) {
        var w = ByteWriter()
        w.blob(bytes)
        try writeAll(fd, w.bytes, deadline: deadline, abortFD: abortFD)
    }

    package static func receiveMessage(_ fd: Int32, max: Int = 64 << 20, deadline: Deadline, abortFD: Int32 = -1) throws(CCLError) -> [UInt8] {
        var r = ByteReader(try read(fd, count: 4, deadline: deadline, abortFD: abortFD))
        let n = Int(try r.u32())
        guard n <= max else { throw CCLError(.remoteError, "message of \(n) bytes exceeds the limit of \(max)") }
        return try read(fd, count: n, deadline: deadline, abortFD: abortFD)
    }
}
