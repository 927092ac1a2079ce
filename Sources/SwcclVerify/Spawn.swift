import Glibc

/// Starting and reaping helper processes (local ranks of swccl-perf, ranks of the multi-process tests).
public struct ChildProcess: Sendable {
    public let pid: pid_t

    /// Waits for the process; returns its exit code, or 128 + signal number if a signal ended it.
    public func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return -1 }
        }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Non-blocking: the exit code if the process has ended.
    public func poll() -> Int32? {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r != pid { return nil }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    public func signal(_ sig: Int32) { _ = kill(pid, sig) }
}

public enum Spawn {
    /// This program's own path.
    public static var selfExecutable: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, 4095)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Starts `path` with `args`, the current environment plus `env` (a nil value removes a variable),
    /// standard output and error appended to `output` if given.
    public static func start(_ path: String, _ args: [String], env: [String: String?] = [:], output: String? = nil) throws -> ChildProcess {
        var environment: [String: String] = [:]
        var p = environ
        while let e = p.pointee {
            let s = String(cString: e)
            if let eq = s.firstIndex(of: "=") { environment[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        for (k, v) in env { environment[k] = v }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let output {
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var pid: pid_t = 0
        let r = posix_spawn(&pid, path, &actions, nil, argv, envp)
        if r != 0 { throw SpawnError(message: "cannot start \(path): \(String(cString: strerror(r)))") }
        return ChildProcess(pid: pid)
    }

    public struct SpawnError: Error, CustomStringConvertible { public let message: String; public var description: String { message } }
}

/// Wall-clock helpers for benchmarks and tests.
public enum Clock {
    public static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
