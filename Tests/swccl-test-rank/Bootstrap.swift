// Bootstrap scenarios: a job under siege by strangers on every listening port, late ranks, a root
// that dies, a rank that dies during the rendezvous. Ranks take their rank, size and rendezvous from
// SWCCL_RANK / SWCCL_SIZE / SWCCL_COMM_ID (rank 0 runs the root), as under a launcher.
import Glibc
import SwiftCCLTesting
import SwcclVerify

@MainActor func delayFromEnvironment() {
    if let ms = env("SWCCL_TEST_DELAY_MS").flatMap({ Int($0) }), ms > 0 { usleep(useconds_t(ms * 1000)) }
}

/// Kills this process with SIGALRM after `ms` (a rank that dies at a chosen moment of its init).
@MainActor func dieAfter(ms: Int) {
    var t = itimerval()
    t.it_value.tv_sec = ms / 1000
    t.it_value.tv_usec = (ms % 1000) * 1000
    setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &t, nil)
}

/// Inits from the environment and runs a while (allreduces, a split) while a stranger process attacks
/// every listening port of the job; everything must succeed. With SWCCL_TEST_ROLE=stranger this
/// process is the stranger instead.
@MainActor func besiegedScenario() {
    if env("SWCCL_TEST_ROLE") == "stranger" { strangerMain() }
    delayFromEnvironment()
    let comm: Communicator
    do { comm = try Communicator.fromEnvironment(config: CommConfig(timeoutMs: timeoutMs)) }
    catch { say("FAIL init under strangers: \(error)"); exit(1) }
    var rounds = 0
    while rounds < 60 {  // the same number on every rank (about a second here)
        var xs = [Int32](repeating: Int32(comm.rank + 1), count: 100_003)
        do { try comm.allReduce(&xs, op: .sum) } catch { check(false, "allreduce \(rounds) under strangers: \(error)"); break }
        check(xs.allSatisfy { $0 == Int32(size * (size + 1) / 2) }, "allreduce \(rounds) result")
        rounds += 1
    }
    // A split makes a new root and new listeners while the stranger keeps scanning.
    do {
        if let sub = try comm.split(color: 0, key: -comm.rank) {
            var ys = [Int64](repeating: 1, count: 1000)
            try sub.allReduce(&ys, op: .sum)
            check(ys.allSatisfy { $0 == Int64(size) }, "allreduce on the split")
            sub.destroy()
        } else { check(false, "split gave no communicator") }
    } catch { check(false, "split under strangers: \(error)") }
    say("\(rounds) allreduces under strangers")
    comm.destroy()
    finish()
}

/// The processes of this test run (siblings: same parent), but not this one.
@MainActor func siblingPids() -> [Int32] {
    let me = getpid(), parent = getppid()
    var out: [Int32] = []
    guard let d = opendir("/proc") else { return [] }
    defer { closedir(d) }
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let pid = Int32(name), pid != me, let f = fopen("/proc/\(pid)/stat", "r") else { continue }
        var line = [CChar](repeating: 0, count: 1024)
        let ok = fgets(&line, 1024, f) != nil
        fclose(f)
        guard ok else { continue }
        let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        // pid (comm) state ppid ...: the command may contain spaces; take what follows the last ')'.
        guard let close = text.lastIndex(of: ")") else { continue }
        let fields = text[text.index(after: close)...].split(separator: " ")
        if fields.count > 1, Int32(fields[1]) == parent { out.append(pid) }
    }
    return out
}

/// TCP ports on which `pids` listen: their socket inodes matched against /proc/net/tcp{,6} in LISTEN.
@MainActor func listeningPorts(of pids: [Int32]) -> Set<Int> {
    var inodes = Set<String>()
    for pid in pids {
        guard let d = opendir("/proc/\(pid)/fd") else { continue }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            var buf = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/\(pid)/fd/\(name)", &buf, 255)
            guard n > 0 else { continue }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("socket:[") { inodes.insert(String(target.dropFirst(8).dropLast())) }
        }
        closedir(d)
    }
    var ports = Set<Int>()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let f = fopen(table, "r") else { continue }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, 512, f) != nil {
            let fields = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.split(separator: " ")
            guard fields.count > 9, fields[3] == "0A", inodes.contains(String(fields[9])),
                  let colon = fields[1].lastIndex(of: ":"), let port = Int(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
            ports.insert(port)
        }
        fclose(f)
    }
    return ports
}

/// Attacks every listening port of the job's processes as they appear, and holds its connections
/// until the job ends: silent connections, HTTP garbage, a truncated hello, a huge announced length,
/// and hellos forged with the secret anyone can compute from SWCCL_COMM_ID (the root's, the
/// out-of-band listener's and the transports' formats, on every port).
@MainActor func strangerMain() -> Never {
    let root = env("SWCCL_COMM_ID") ?? ""
    let jobSize = Int(env("SWCCL_SIZE") ?? "2") ?? 2
    // What a stranger can compute: the id of host:port without the job's secret.
    unsetenv("SWCCL_JOB_SECRET")
    let forged: [UInt8]
    do { forged = try UniqueID.fromCommID(root).secretBytes } catch { say("FAIL stranger: \(error)"); exit(1) }
    guard let colon = root.lastIndex(of: ":"), let rootPort = Int(root[root.index(after: colon)...]) else { say("FAIL stranger: SWCCL_COMM_ID=\(root)"); exit(1) }
    let limit = Clock.nanos() + UInt64(Double(env("SWCCL_TEST_STRANGER_S") ?? "40") ?? 40) * 1_000_000_000
    var attacked = Set<Int>()
    var held: [Int32] = []
    var sawJob = false
    while Clock.nanos() < limit {
        let pids = siblingPids()
        if sawJob && pids.isEmpty { break }  // the job is over
        if !pids.isEmpty { sawJob = true }
        var ports = listeningPorts(of: pids)
        ports.insert(rootPort)
        for port in ports.sorted() where !attacked.contains(port) {
            let a = "127.0.0.1:\(port)"
            guard let first = RawSocket.open(to: a, connectMs: 50) else { continue }  // not listening yet
            held.append(first)
            for _ in 0..<3 { if let fd = RawSocket.open(to: a) { held.append(fd) } }  // silent
            let attacks: [[UInt8]] = [
                Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8),                                   // garbage, then silence
                Array(RawSocket.bootstrapHello(secret: forged, rank: 1, size: jobSize).prefix(20)),  // truncated
                [0xf0, 0xff, 0xff, 0x7f] + [UInt8](repeating: 7, count: 64),                     // huge length
                RawSocket.bootstrapHello(secret: forged, rank: 1, size: jobSize),                 // forged, as rank 1
                RawSocket.outOfBandHello(secret: forged, rank: 1),                                // forged out-of-band hello
            ] + (0..<jobSize).map { RawSocket.tcpHello(secret: forged, from: 0, to: $0, nranks: jobSize) }  // forged "rank 0"
            for bytes in attacks { if let fd = RawSocket.open(to: a, bytes) { held.append(fd) } }
            attacked.insert(port)
        }
        usleep(20_000)
    }
    for fd in held { RawSocket.close(fd) }
    say("attacked ports \(attacked.sorted()) with \(held.count) connections")
    check(attacked.contains(rootPort), "the stranger reached the bootstrap root")
    check(attacked.count >= 3, "the stranger reached the ranks' listeners too (\(attacked.count) ports)")
    finish()
}

/// One rank arrives late (SWCCL_TEST_LATE_RANK, after SWCCL_TEST_DELAY_MS): every other rank's init
/// must fail naming it and the cause; the late one must name rank 0, the root, as unreachable. Every
/// process exits at once after its error, as a program would.
@MainActor func lateScenario() {
    if env("SWCCL_TEST_ROLE") == "forger" { forgerMain() }
    let late = Int(env("SWCCL_TEST_LATE_RANK") ?? "-1") ?? -1
    delayFromEnvironment()
    do {
        let c = try Communicator.fromEnvironment(config: CommConfig(timeoutMs: timeoutMs))
        check(false, "init succeeded although rank \(late) was late")
        c.abort()
    } catch {
        say("init failed: \(error)")
        let text = error.description
        if let expected = env("SWCCL_TEST_EXPECT") {
            check(text.contains(expected), "the error says \"\(expected)\": \(text)")
        } else if rank == late {
            check(error.peer == 0, "the late rank's error names rank 0 (peer \(String(describing: error.peer)))")
            check(text.contains("rank 0 (the bootstrap root at "), "the late rank's error says rank 0 is the root: \(text)")
        } else {
            check(error.peer == late, "the error names rank \(late) as the culprit (peer \(String(describing: error.peer)))")
            check(text.contains("ranks [\(late)] of \(size) did not reach the bootstrap root"), "the error says rank \(late) did not arrive: \(text)")
            check(error.kind == .timeout, "a timeout error (got \(error.kind))")
        }
    }
    finish()
}

/// A rank dies (SIGALRM after SWCCL_TEST_DIE_MS) while it waits in the rendezvous, before every rank
/// arrived (rank SWCCL_SIZE-1 is never started). If it is rank 0, the root dies with it: the others
/// must say that rank 0, the bootstrap root, closed the connection. Otherwise the root must name the
/// dead rank at once, not at the timeout.
@MainActor func diesInRendezvousScenario() {
    let victim = Int(env("SWCCL_TEST_VICTIM") ?? "0") ?? 0
    if rank == victim { dieAfter(ms: Int(env("SWCCL_TEST_DIE_MS") ?? "1000") ?? 1000) }
    let t0 = Clock.nanos()
    do {
        let c = try Communicator.fromEnvironment(config: CommConfig(timeoutMs: timeoutMs))
        check(false, "init succeeded although rank \(victim) died")
        c.abort()
    } catch {
        let ms = Int((Clock.nanos() - t0) / 1_000_000)
        say("init failed after \(ms) ms: \(error)")
        let text = error.description
        check(error.peer == victim, "the error names rank \(victim) (peer \(String(describing: error.peer)))")
        if victim == 0 {
            check(text.contains("rank 0 (the bootstrap root at ") && text.contains("closed the connection"), "the error says rank 0, the root, closed the connection: \(text)")
        } else {
            check(text.contains("rank \(victim) (at ") && text.contains("closed its connection to the bootstrap root"), "the error says rank \(victim) left the rendezvous: \(text)")
        }
        check(ms < timeoutMs / 2, "the error comes well before the timeout (\(ms) ms of \(timeoutMs))")
    }
    finish()
}

/// A stranger who claims rank 1 at the root, as soon as it listens, with the secret anyone can compute
/// from SWCCL_COMM_ID, and holds the connection for 3 s.
@MainActor func forgerMain() -> Never {
    let root = env("SWCCL_COMM_ID") ?? ""
    unsetenv("SWCCL_JOB_SECRET")
    let forged: [UInt8]
    do { forged = try UniqueID.fromCommID(root).secretBytes } catch { say("FAIL forger: \(error)"); exit(1) }
    let until = Clock.nanos() + 10_000_000_000
    if let claimed = env("SWCCL_TEST_FORGED_INFO_RANK").flatMap({ Int($0) }) {
        // The whole way: admitted by the root, then into rank 0's out-of-band channel.
        while Clock.nanos() < until {
            if let fds = RawSocket.forgeRank(at: root, secret: forged, rank: 1, size: Int(env("SWCCL_SIZE") ?? "2") ?? 2, infoRank: claimed) {
                say("forged rank 1, claiming rank \(claimed) in its rank information, up to the out-of-band channel")
                usleep(3_000_000)
                fds.forEach { RawSocket.close($0) }
                finish()
            }
            usleep(10_000)
        }
        say("FAIL the forger never got into the job")
        exit(1)
    }
    while Clock.nanos() < until {
        if let fd = RawSocket.open(to: root, RawSocket.bootstrapHello(secret: forged, rank: 1, size: Int(env("SWCCL_SIZE") ?? "2") ?? 2), connectMs: 20) {
            say("forged a hello as rank 1")
            usleep(3_000_000)
            RawSocket.close(fd)
            finish()
        }
        usleep(10_000)
    }
    say("FAIL the forger never reached the root")
    exit(1)
}
