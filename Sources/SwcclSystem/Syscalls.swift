import Glibc
import CSwcclShims

/// Every system call SwiftCCL makes goes through this file: it retries `EINTR`, turns failures into a
/// typed `Errno`, and is the one place to look when porting or auditing what the library asks of the kernel.
package enum Sys {
    @inline(__always)
    package static func check(_ r: Int32) throws(Errno) -> Int32 {
        if r < 0 { throw Errno.current }
        return r
    }

    package static func retrying(_ body: () -> Int32) throws(Errno) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Errno.current
            if e != .interrupted { throw e }
        }
    }

    package static func retryingSize(_ body: () -> Int) throws(Errno) -> Int {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Errno.current
            if e != .interrupted { throw e }
        }
    }

    // MARK: sockets

    package static func socket(family: Int32, nonBlocking: Bool = true) throws(Errno) -> Int32 {
        var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        return try check(Glibc.socket(family, type, 0))
    }

    /// A connected pair of non-blocking Unix stream sockets (the fuzz harness feeds a transport's
    /// reader through one end).
    package static func socketPair() throws(Errno) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        _ = try check(Glibc.socketpair(AF_UNIX, type, 0, &fds))
        return (fds[0], fds[1])
    }

    package static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(Errno) {
        var v = value
        _ = try check(Glibc.setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)))
    }

    package static func bind(_ fd: Int32, _ addr: SocketAddress) throws(Errno) {
        var a = addr
        _ = try check(a.withSockaddr { Glibc.bind(fd, $0, $1) })
    }

    package static func listen(_ fd: Int32, backlog: Int32 = 256) throws(Errno) {
        _ = try check(Glibc.listen(fd, backlog))
    }

    /// Accepts one pending connection as a non-blocking socket; nil when none is pending.
    package static func accept(_ fd: Int32) throws(Errno) -> (Int32, SocketAddress)? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let r = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    cshim_accept4(fd, $0, &len)
                }
            }
            if r >= 0 { return (r, SocketAddress(storage: storage, length: len)) }
            let e = Errno.current
            if e == .interrupted || e == Errno(ECONNABORTED) { continue }
            if e == .again { return nil }
            throw e
        }
    }

    /// Starts a non-blocking connect; returns true if it completed at once.
    package static func connect(_ fd: Int32, _ addr: SocketAddress) throws(Errno) -> Bool {
        var a = addr
        let r = a.withSockaddr { Glibc.connect(fd, $0, $1) }
        if r == 0 { return true }
        let e = Errno.current
        if e == .inProgress || e == .interrupted { return false }
        throw e
    }

    /// The pending error of a socket (`SO_ERROR`), e.g. the outcome of a non-blocking connect.
    package static func socketError(_ fd: Int32) -> Errno? {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if Glibc.getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) < 0 { return Errno.current }
        return v == 0 ? nil : Errno(v)
    }

    package static func localAddress(_ fd: Int32) throws(Errno) -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try check(withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.getsockname(fd, $0, &len) }
        })
        return SocketAddress(storage: storage, length: len)
    }

    /// Non-blocking send; returns bytes written, 0 if the socket buffer is full.
    package static func send(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) throws(Errno) -> Int {
        while true {
            let r = Glibc.send(fd, p, n, Int32(MSG_NOSIGNAL))
            if r >= 0 { return r }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .again { return 0 }
            throw e
        }
    }

    /// Non-blocking gathered send of up to two pieces; returns bytes written, 0 if the buffer is full.
    package static func send(_ fd: Int32, _ p0: UnsafeRawPointer, _ n0: Int, _ p1: UnsafeRawPointer?, _ n1: Int) throws(Errno) -> Int {
        var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: p0), iov_len: n0),
                   iovec(iov_base: p1.map { UnsafeMutableRawPointer(mutating: $0) }, iov_len: n1))
        while true {
            let r = withUnsafeMutablePointer(to: &iov) { iovp -> Int in
                iovp.withMemoryRebound(to: iovec.self, capacity: 2) { v -> Int in
                    var msg = msghdr()
                    msg.msg_iov = v
                    msg.msg_iovlen = n1 > 0 ? 2 : 1
                    return Glibc.sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                }
            }
            if r >= 0 { return r }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .again { return 0 }
            throw e
        }
    }

    /// Non-blocking receive; returns bytes read, nil if nothing is available. 0 means the peer closed.
    package static func recv(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) throws(Errno) -> Int? {
        while true {
            let r = Glibc.recv(fd, p, n, 0)
            if r >= 0 { return r }
            let e = Errno.current
            if e == .interrupted { continue }
            if e == .again { return nil }
            throw e
        }
    }

    package static func close(_ fd: Int32) {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    package static func shutdown(_ fd: Int32) {
        if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Waits for events on `fds`, at most `timeoutMs` (-1: forever). Returns the number of ready entries.
    package static func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, timeoutMs: Int32) throws(Errno) -> Int {
        while true {
            let r = Glibc.poll(fds, nfds_t(count), timeoutMs)
            if r >= 0 { return Int(r) }
            let e = Errno.current
            if e == .interrupted { return 0 }
            throw e
        }
    }

    // MARK: wake-ups

    /// An eventfd used to wake a thread blocked in poll (abort, close).
    package static func eventFD() throws(Errno) -> Int32 {
        try check(cshim_eventfd())
    }

    package static func signal(eventFD fd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    package static func drain(eventFD fd: Int32) {
        var v: UInt64 = 0
        _ = Glibc.read(fd, &v, 8)
    }

    // MARK: time, randomness, files

    /// Monotonic clock in nanoseconds.
    @inline(__always)
    package static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    package static func sleep(nanos: UInt64) {
        var req = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        var rem = timespec()
        while nanosleep(&req, &rem) != 0 && errno == EINTR { req = rem }
    }

    package static func randomBytes(_ p: UnsafeMutableRawPointer, _ n: Int) throws(Errno) {
        var done = 0
        while done < n {
            let r = cshim_getrandom(p + done, n - done)
            if r < 0 {
                if errno == EINTR { continue }
                throw Errno.current
            }
            done += r
        }
    }

    /// The first line of a small text file, without the newline.
    package static func readLine(path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { _ = Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 255) }
        if n <= 0 { return nil }
        var line = String(decoding: buf[0..<n], as: UTF8.self)
        if let nl = line.firstIndex(of: "\n") { line = String(line[..<nl]) }
        return line
    }

    package static func deviceID(path: String) -> UInt64? {
        var dev: UInt64 = 0
        return cshim_stat_dev(path, &dev) == 0 ? dev : nil
    }

    package static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        if gethostname(&buf, 255) != 0 { return "?" }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    // MARK: shared memory and futexes

    /// Creates (exclusively, mode 0600) and maps a POSIX shared-memory segment of `bytes`, and returns
    /// it with its descriptor (kept open by the caller for the segment's liveness lock).
    /// `place` runs on the mapping before any page is allocated (e.g. to set its NUMA policy).
    package static func createSharedMemory(name: String, bytes: Int, place: (UnsafeMutableRawPointer, Int) -> Void = { _, _ in }) throws(Errno) -> (UnsafeMutableRawPointer, Int32) {
        let fd = try retrying { cshim_shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600) }
        var mapped: UnsafeMutableRawPointer?
        do throws(Errno) {
            _ = try retrying { ftruncate(fd, off_t(bytes)) }
            let p = try map(fd, bytes)
            mapped = p
            place(p, bytes)
            // Reserve the pages now: on a full tmpfs (a container's small /dev/shm) this fails with
            // ENOSPC here instead of SIGBUS at the first write.
            let r = posix_fallocate(fd, 0, off_t(bytes))
            if r != 0 { throw Errno(r) }
            return (p, fd)
        } catch {
            if let mapped { unmap(mapped, bytes: bytes) }
            _ = shm_unlink(name)
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// Maps an existing segment and returns it with its descriptor (for probing the owner's liveness
    /// lock); nil if it does not exist.
    package static func openSharedMemory(name: String, bytes: Int) throws(Errno) -> (UnsafeMutableRawPointer, Int32)? {
        let fd: Int32
        do { fd = try retrying { cshim_shm_open(name, O_RDWR | O_CLOEXEC, 0) } } catch {
            if error == Errno(ENOENT) { return nil }
            throw error
        }
        do throws(Errno) {
            var st = stat()
            _ = try check(fstat(fd, &st))
            guard Int(st.st_size) >= bytes else { throw Errno(EINVAL) }
            return (try map(fd, bytes), fd)
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
    }

    /// Names in a directory (without . and ..); empty if it cannot be read.
    package static func directoryEntries(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes SwiftCCL segments left in /dev/shm by processes that died before unlinking them (killed
    /// during init): a segment of this layout (`magic`) whose liveness lock nobody holds, or one that never
    /// got so far (no magic, no size) and is older than a minute. Segments of other users cannot be
    /// opened and are left alone, as are those of other versions. Returns the names removed.
    package static func reapDeadSegments(prefix: String, magic: UInt64) -> [String] {
        var removed: [String] = []
        for name in directoryEntries("/dev/shm") where name.hasPrefix(prefix) {
            let fd = cshim_shm_open("/" + name, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0)
            guard fd >= 0 else { continue }
            defer { _ = Glibc.close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, cshim_ofd_probe(fd) == 0 else { continue }
            var word: UInt64 = 0
            let got = withUnsafeMutableBytes(of: &word) { pread(fd, $0.baseAddress, 8, 0) }
            let age = time(nil) - st.st_mtim.tv_sec
            let dead = (got == 8 && UInt64(littleEndian: word) == magic) || ((got <= 0 || word == 0) && age > 60)
            guard dead, cshim_ofd_probe(fd) == 0 else { continue }
            if shm_unlink("/" + name) == 0 { removed.append(name) }
        }
        return removed
    }

    /// Takes the liveness lock of a segment this process owns: an open-file-description read lock that
    /// the kernel drops when the owner dies, in any PID or mount namespace. Returns the slot of the fork
    /// table (a forked child closes its copy of `fd`, so the lock lives exactly as long as the owner).
    package static func holdLivenessLock(_ fd: Int32) throws(Errno) -> Int32 {
        _ = try retrying { cshim_ofd_hold_read(fd) }
        return cshim_track_lock_fd(fd)
    }

    /// Closes a descriptor that holds a liveness lock (and forgets it in the fork table).
    package static func releaseLivenessLock(_ fd: Int32, slot: Int32) {
        cshim_untrack_lock_fd(slot, fd)
        _ = Glibc.close(fd)
    }

    /// Whether the owner of the segment open on `fd` still holds its liveness lock (it is alive, or a
    /// process it forked that did not run our fork handler still holds it); nil if the kernel cannot say.
    package static func livenessLockHeld(_ fd: Int32) -> Bool? {
        let r = cshim_ofd_probe(fd)
        return r < 0 ? nil : r == 1
    }

    /// The inode of this process's PID namespace; 0 if unknown (no /proc). Two processes can use each
    /// other's pids (kill, process_vm_readv) only when both know it and it is the same.
    package static let pidNamespace: UInt64 = cshim_pid_namespace()

    private static func map(_ fd: Int32, _ bytes: Int) throws(Errno) -> UnsafeMutableRawPointer {
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else { throw Errno.current }
        return p
    }

    package static func unmap(_ p: UnsafeMutableRawPointer, bytes: Int) { _ = munmap(p, bytes) }

    /// Lets same-user processes read this one's memory under Yama's ptrace scope 1 (for peers' CMA).
    package static func allowSameUserMemoryReads() { _ = cshim_allow_ptrace_any() }

    /// Copies `bytes` from `remote` in process `pid` into `local` (cross-memory attach), retrying
    /// partial copies; needs ptrace permission over `pid` (same user, Yama scope permitting).
    package static func readProcessMemory(pid: Int32, remote: UInt64, into local: UnsafeMutableRawPointer, bytes: Int) throws(Errno) {
        var done = 0
        while done < bytes {
            let n = cshim_process_vm_readv(pid, local + done, UnsafeRawPointer(bitPattern: UInt(remote) + UInt(done)), bytes - done)
            if n < 0 { if errno == EINTR { continue }; throw Errno.current }
            if n == 0 { throw Errno(EFAULT) }
            done += n
        }
    }
    package static func unlinkSharedMemory(name: String) { _ = shm_unlink(name) }

    /// Whether process `pid` exists (signal 0). A process of another user counts as alive.
    /// A zombie (killed, not yet reaped by its parent) counts as dead.
    package static func processAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno != ESRCH else { return false }
        // "pid (comm) S ...": the state follows the last parenthesis.
        guard let stat = readLine(path: "/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return true }
        let rest = stat[stat.index(after: close)...].drop { $0 == " " }
        return rest.first != "Z" && rest.first != "X"
    }

    /// Sleeps while `*word == expected`, at most `nanos`, or until a wake (spurious returns allowed).
    package static func futexWait(_ word: UnsafeMutablePointer<UInt32>, expected: UInt32, nanos: UInt64) {
        _ = cshim_futex_wait(word, expected, Int64(min(nanos, UInt64(Int64.max))))
    }

    package static func futexWake(_ word: UnsafeMutablePointer<UInt32>) { _ = cshim_futex_wake(word) }

    package static func getpid() -> Int32 { Glibc.getpid() }
    /// How many times this process's ancestry forked since the library was loaded (bumped in each child
    /// by a pthread_atfork handler): an object made under another generation belongs to a parent.
    @inline(__always) package static var forkGeneration: UInt64 { cshim_fork_generation() }
    /// Whether this thread is the one a forked child started with (the Swift runtime's cached thread
    /// id on it is its parent thread's; see `ForkSafety`).
    @inline(__always) package static var threadIsForkStale: Bool { cshim_thread_is_stale() != 0 }
    /// Runs `body` on the stand-in thread of a forked child's first thread and waits for it; false if
    /// that thread could not be started.
    package static func runOnProxyThread(_ body: () -> Void) -> Bool {
        withoutActuallyEscaping(body) { b -> Bool in
            var call = b
            return withUnsafeMutablePointer(to: &call) { ctx -> Bool in
                cshim_run_on_proxy({ raw in raw!.assumingMemoryBound(to: (() -> Void).self).pointee() }, ctx) == 0
            }
        }
    }

    /// Always gives the core away (a transport whose progress needs the kernel's own threads, e.g. Soft-RoCE).
    @usableFromInline package static func yieldCore() { _ = sched_yield() }
    package static func onlineCPUs() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
    package static func gettid() -> Int32 { cshim_gettid() }

    package static func environment(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        return String(cString: v)
    }

    /// Every `NAME=value` of the process environment.
    package static func environmentNames() -> [String] {
        var out: [String] = []
        var p = Glibc.environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { out.append(String(s[..<eq])) }
            p += 1
        }
        return out
    }

    // MARK: network interfaces

    package struct Interface {
        package var name: String
        package var address: SocketAddress
        package var isUp: Bool
        package var isLoopback: Bool
        package init(name: String, address: SocketAddress, isUp: Bool, isLoopback: Bool) {
            self.name = name; self.address = address; self.isUp = isUp; self.isLoopback = isLoopback
        }
    }

    package static func interfaces() throws(Errno) -> [Interface] {
        var head: UnsafeMutablePointer<ifaddrs>?
        _ = try check(getifaddrs(&head))
        defer { freeifaddrs(head) }
        var out: [Interface] = []
        var p = head
        while let ifa = p {
            defer { p = ifa.pointee.ifa_next }
            guard let sa = ifa.pointee.ifa_addr else { continue }
            let fam = Int32(sa.pointee.sa_family)
            guard fam == AF_INET || fam == AF_INET6 else { continue }
            let flags = ifa.pointee.ifa_flags
            let len = fam == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(sa), count: len))
            }
            out.append(Interface(name: String(cString: ifa.pointee.ifa_name),
                                 address: SocketAddress(storage: storage, length: socklen_t(len)),
                                 isUp: flags & UInt32(IFF_UP) != 0 && flags & UInt32(IFF_RUNNING) != 0,
                                 isLoopback: flags & UInt32(IFF_LOOPBACK) != 0))
        }
        return out
    }

    /// Resolves a host name or numeric address.
    package static func resolve(host: String, port: UInt16, family: Int32 = AF_UNSPEC) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0 else { return [] }
        defer { freeaddrinfo(res) }
        var out: [SocketAddress] = []
        var p = res
        while let ai = p {
            defer { p = ai.pointee.ai_next }
            guard let sa = ai.pointee.ai_addr else { continue }
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(sa), count: Int(ai.pointee.ai_addrlen)))
            }
            out.append(SocketAddress(storage: storage, length: ai.pointee.ai_addrlen))
        }
        return out
    }

    // MARK: threads

    /// Starts a detached thread running `body`.
    package static func startThread(_ body: @escaping @Sendable () -> Void) throws(Errno) {
        final class Box { let f: @Sendable () -> Void; init(_ f: @escaping @Sendable () -> Void) { self.f = f } }
        let ctx = Unmanaged.passRetained(Box(body)).toOpaque()
        var tid = pthread_t()
        let r = pthread_create(&tid, nil, { raw in
            let b = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            b.f()
            return nil
        }, ctx)
        if r != 0 {
            Unmanaged<Box>.fromOpaque(ctx).release()
            throw Errno(r)
        }
        pthread_detach(tid)
    }
}

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible, Equatable {
    package var storage: sockaddr_storage
    package var length: socklen_t

    package init(storage: sockaddr_storage, length: socklen_t) { self.storage = storage; self.length = length }

    package var family: Int32 { Int32(storage.ss_family) }

    package var port: UInt16 {
        get {
            withUnsafeBytes(of: storage) { raw in
                family == AF_INET6 ? UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
                                   : UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
            }
        }
        set {
            withUnsafeMutableBytes(of: &storage) { raw in
                raw.storeBytes(of: newValue.bigEndian, toByteOffset: 2, as: UInt16.self)
            }
        }
    }

    package mutating func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        let len = length
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, len) }
        }
    }

    /// Parses `1.2.3.4:port`, `[::1]:port`, or `host:port` (resolved).
    package static func parse(_ text: String, family: Int32 = AF_UNSPEC) -> SocketAddress? {
        var host = Substring(text)
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else { return nil }
        return Sys.resolve(host: String(host), port: port, family: family).first
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.description == b.description
    }

    package var hostText: String {
        var buf = [CChar](repeating: 0, count: 64)
        withUnsafeBytes(of: storage) { raw in
            if family == AF_INET6 {
                _ = inet_ntop(AF_INET6, raw.baseAddress! + 8, &buf, 64)
            } else {
                _ = inet_ntop(AF_INET, raw.baseAddress! + 4, &buf, 64)
            }
        }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    public var description: String {
        family == AF_INET6 ? "[\(hostText)]:\(port)" : "\(hostText):\(port)"
    }

    // Compact encoding used inside unique ids and endpoint addresses: family(1) port(2) address(16).
    package static let encodedSize = 19

    package func encode(into p: UnsafeMutableRawPointer) {
        p.storeBytes(of: UInt8(family == AF_INET6 ? 6 : 4), as: UInt8.self)
        p.storeBytes(of: port.bigEndian, toByteOffset: 1, as: UInt16.self)
        withUnsafeBytes(of: storage) { raw in
            if family == AF_INET6 {
                (p + 3).copyMemory(from: raw.baseAddress! + 8, byteCount: 16)
            } else {
                (p + 3).initializeMemory(as: UInt8.self, repeating: 0, count: 16)
                (p + 3).copyMemory(from: raw.baseAddress! + 4, byteCount: 4)
            }
        }
    }

    package static func decode(from p: UnsafeRawPointer) -> SocketAddress? {
        let fam = p.load(as: UInt8.self)
        let port = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 1, as: UInt16.self))
        var storage = sockaddr_storage()
        var length: socklen_t
        switch fam {
        case 4:
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(start: p + 3, count: 4)) }
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        case 6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(start: p + 3, count: 16)) }
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        default:
            return nil
        }
        return SocketAddress(storage: storage, length: length)
    }

    /// The same address with port 0 (for binding a new ephemeral listener on the same interface).
    package var withAnyPort: SocketAddress { var a = self; a.port = 0; return a }

    package var isLinkLocalV6: Bool {
        family == AF_INET6 && withUnsafeBytes(of: storage) { $0[8] == 0xfe && ($0[9] & 0xc0) == 0x80 }
    }
}
