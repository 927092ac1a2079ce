import Glibc
import Synchronization
import SwcclSystem

/// Diagnostic output controlled by `SWCCL_DEBUG` (`WARN`, `INFO`, `TRACE`), `SWCCL_DEBUG_SUBSYS`
/// (comma list of subsystems, `^` to exclude, default all) and `SWCCL_DEBUG_FILE` (`%h` host, `%p` pid).
package enum Log {
    package enum Level: Int, Sendable, Comparable {
        case none = 0, warn = 1, info = 2, trace = 3
        package static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    package enum Subsystem: String, Sendable {
        case initialization = "INIT", bootstrap = "BOOTSTRAP", net = "NET", coll = "COLL", env = "ENV", api = "API", tuning = "TUNING"
    }

    package static let levelKnob = Knob<Level>("SWCCL_DEBUG", default: .warn, "log level: NONE, WARN, INFO or TRACE (VERSION prints the version)", logsItself: true, parse: { t in
        switch t.trimmingSpaces.uppercased() {
        case "NONE": return Level.none
        case "WARN", "VERSION": return .warn
        case "INFO": return .info
        case "TRACE": return .trace
        default: return nil
        }
    })
    package static let subsysKnob = Knob.string("SWCCL_DEBUG_SUBSYS", default: "ALL", "subsystems to log: INIT,BOOTSTRAP,NET,COLL,ENV,API; ^ excludes")
    package static let fileKnob = Knob.string("SWCCL_DEBUG_FILE", default: "", "write the log to this file (%h host, %p pid) instead of stderr")

    package static var level: Level { levelKnob.value }

    private static let subsystems: (include: Set<String>?, exclude: Set<String>) = {
        let text = subsysKnob.value.uppercased()
        if text == "ALL" || text.isEmpty { return (nil, []) }
        if text.hasPrefix("^") {
            return (nil, Set(text.dropFirst().split(separator: ",").map { String($0).trimmingSpaces }))
        }
        return (Set(text.split(separator: ",").map { String($0).trimmingSpaces }), [])
    }()

    private static let output: Int32 = {
        let pattern = fileKnob.value
        if pattern.isEmpty { return 2 }
        var path = ""
        var it = pattern.makeIterator()
        while let c = it.next() {
            if c == "%" {
                switch it.next() {
                case "h": path += Host.name ?? "host"
                case "p": path += String(Sys.getpid())
                case let other?: path += "%" + String(other)
                case nil: path += "%"
                }
            } else { path.append(c) }
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        return fd >= 0 ? fd : 2
    }()

    @inline(__always)
    package static func enabled(_ l: Level, _ s: Subsystem) -> Bool {
        guard l <= level else { return false }
        let (inc, exc) = subsystems
        if let inc, !inc.contains(s.rawValue) { return false }
        return !exc.contains(s.rawValue)
    }

    package static func warn(_ s: Subsystem, _ message: @autoclosure () -> String) { write(.warn, s, message) }
    package static func info(_ s: Subsystem, _ message: @autoclosure () -> String) { write(.info, s, message) }
    package static func trace(_ s: Subsystem, _ message: @autoclosure () -> String) { write(.trace, s, message) }

    private static func write(_ l: Level, _ s: Subsystem, _ message: () -> String) {
        guard enabled(l, s) else { return }
        writeUnconditionally(l, s, message())
    }

    /// Writes a line whatever the level (for the log's own configuration errors: the level knob cannot
    /// be consulted while it is being read; the output file's knob never fails to parse).
    package static func writeUnconditionally(_ l: Level, _ s: Subsystem, _ text: String) {
        let out = output
        let tag = l == .warn ? "WARN" : l == .info ? "INFO" : "TRACE"
        let line = "\(Host.name.map(oneLine) ?? "?"):\(Sys.getpid()):\(Sys.gettid()) SWCCL \(tag) \(s.rawValue) \(oneLine(text))\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(out, $0.baseAddress, $0.count) }
    }

    /// `text` on one line: control characters (a newline in a host name or a variable) become spaces.
    package static func oneLine(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else { return text }
        return String(decoding: text.utf8.map { $0 < 0x20 || $0 == 0x7f ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
    }
}
