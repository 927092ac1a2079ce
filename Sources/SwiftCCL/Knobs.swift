import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclAlgorithms

extension Knobs {
    static let timeoutMs = Knob.int("SWCCL_TIMEOUT_MS", default: 120_000,
        "deadline in milliseconds of every blocking step (connect, rendezvous, each wait of a collective)")
    static let transports = Knob.string("SWCCL_TRANSPORTS", default: "auto", "transports to use: auto, or a list like shm,tcp / tcp")
}

extension Knobs {
    /// Every knob, for listing (`swccl-perf --env`) and for the unknown-variable check: each layer's
    /// own list, joined here.
    package static var all: [KnobInfo] {
        core + bootstrap + [timeoutMs.info, transports.info] + algorithms + transport + TransportRegistry.knobs
    }

    /// Warns once about `SWCCL_*` variables that nothing reads (usually a typo).
    static func warnUnknownVariables() {
        _ = unknownCheck
    }

    private static let unknownCheck: Bool = {
        let known = Set(all.map(\.name)).union(reservedNames)
        for name in Sys.environmentNames() where name.hasPrefix("SWCCL_") && !known.contains(name)
            && !reservedPrefixes.contains(where: { name.hasPrefix($0) }) {
            Log.warn(.env, "unknown environment variable \(name) is ignored")
        }
        return true
    }()
}
