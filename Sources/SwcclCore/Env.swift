import Glibc
import SwcclSystem

/// Describes one environment variable SwiftCCL reads: its name, default and meaning.
public struct KnobInfo: Sendable {
    public let name: String
    public let defaultText: String
    public let help: String
    /// The value in force (the environment's, else the default).
    public let currentText: String
    package init(name: String, defaultText: String, help: String, currentText: String) {
        self.name = name; self.defaultText = defaultText; self.help = help; self.currentText = currentText
    }
}

/// One environment knob, read once at first use. Each is declared beside the code that uses it, as a
/// `static let` in an extension of `Knobs`, and listed in `Knobs.all` so `swccl-perf --env` can print
/// every one. A value that cannot be parsed is reported at WARN and the default is used.
@usableFromInline package struct Knob<Value: Sendable>: Sendable {
    package let name: String
    package let defaultValue: Value
    package let help: String
    /// The environment's value, if set and valid.
    @usableFromInline package let override: Value?
    package var value: Value { override ?? defaultValue }
    package var isSet: Bool { override != nil }

    /// `logsItself`: the knob is one of the log's own (its level): a bad value is reported straight to
    /// stderr, since reporting it through the log would need the knob being read (a one-time
    /// initialisation waiting on itself: a hang at 100 % CPU).
    package init(_ name: String, default defaultValue: Value, _ help: String, logsItself: Bool = false, parse: (String) -> Value?) {
        self.name = name
        self.defaultValue = defaultValue
        self.help = help
        if let text = Sys.environment(name), !text.isEmpty {
            if let v = parse(text) {
                override = v
            } else {
                override = nil
                let message = "ignoring \(name)=\(Log.oneLine(text)): cannot be parsed; using the default \(defaultValue)"
                if logsItself { Log.writeUnconditionally(.warn, .env, message) } else { Log.warn(.env, message) }
            }
        } else {
            override = nil
        }
    }

    package var info: KnobInfo {
        KnobInfo(name: name, defaultText: "\(defaultValue)", help: help, currentText: "\(value)")
    }
}

extension Knob where Value == Int {
    package static func int(_ name: String, default d: Int, _ help: String) -> Knob<Int> {
        Knob(name, default: d, help, parse: { Int($0.trimmingSpaces) })
    }
}

extension Knob where Value == Double {
    package static func double(_ name: String, default d: Double, _ help: String) -> Knob<Double> {
        Knob(name, default: d, help, parse: { Double($0.trimmingSpaces).flatMap { $0.isFinite && $0 >= 0 ? $0 : nil } })
    }
}

extension Knob where Value == String {
    package static func string(_ name: String, default d: String, _ help: String) -> Knob<String> {
        Knob(name, default: d, help, parse: { $0 })
    }
}

extension Knob where Value == Bool {
    package static func bool(_ name: String, default d: Bool, _ help: String) -> Knob<Bool> {
        Knob(name, default: d, help, parse: { t in
            switch t.trimmingSpaces.lowercased() {
            case "1", "true", "yes", "on": return true
            case "0", "false", "no", "off": return false
            default: return nil
            }
        })
    }
}

/// Namespace of all environment knobs. Each file that reads a variable adds its `static let` here.
@usableFromInline package enum Knobs {
    /// This layer's knobs (logging, launchers, interfaces, NUMA). Each layer lists its own
    /// (`Knobs.core`, `Knobs.bootstrap`, `Knobs.transport`, each backend's in `TransportRegistry`,
    /// `Knobs.algorithms`); `Knobs.all` joins them at the top.
    package static var core: [KnobInfo] {
        [Log.levelKnob.info, Log.subsysKnob.info, Log.fileKnob.info, Knobs.rank.info, Knobs.size.info,
         Knobs.socketIfname.info, Knobs.socketFamily.info, Knobs.numa.info]
    }

    /// Variables that a launcher sets, the benchmark scripts or the Python package read (the
    /// swccl-perf to run, the library to load, ...), and that are not knobs of their own.
    package static let reservedNames: Set<String> = ["SWCCL_LOCAL_RANK", "SWCCL_JOB_ID", "SWCCL_PERF", "SWCCL_LIBRARY",
                                                      "SWCCL_NO_TORCH", "SWCCL_SUITE_START"]
    /// Prefixes of variables read by swccl-perf, the tests and the Python package's torch backend
    /// (`SWCCL_TORCH_NATIVE`, `SWCCL_PY_NO_EVENTS`, ...: docs/ENVIRONMENT.md), not by the library.
    package static let reservedPrefixes = ["SWCCL_PERF_", "SWCCL_TEST_", "SWCCL_TORCH_", "SWCCL_PY_"]
}

extension String {
    package var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}
