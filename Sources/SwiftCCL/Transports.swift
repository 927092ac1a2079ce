import SwcclTCP
import SwcclSHM
import SwcclVerbs
import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// Every backend of this build, in order of preference: each pair of ranks takes the first one that
/// both ranks published and that reaches the peer (shared memory on one host, else verbs where both
/// have a port, else TCP). The last one reaches every peer and is the one a single rank uses.
package enum TransportRegistry {
    package static let backends: [TransportBackend] = [SHMTransport.backend, VerbsTransport.backend, TCPTransport.backend]

    package static func named(_ name: String) -> TransportBackend? { backends.first { $0.name == name } }

    /// Why a backend (or a conformance variant, e.g. `shm-cma`) cannot run on this machine, or nil.
    package static func unavailable(_ name: String) -> String? {
        backends.first { b in b.conformanceVariants.contains { $0.name == name } }?.unavailable()
    }

    /// Every backend's knobs.
    static var knobs: [KnobInfo] { backends.flatMap { $0.knobs() } }
}
