import SwcclSystem
import SwcclCore

/// What the library knows of one backend before any endpoint exists: its name, whether this host can
/// run it (and why not), which peers it reaches, the cost model's figures, its knobs, and how to make
/// an endpoint. The communicator's transport choice, the cost model, `swccl-perf --transports`,
/// `SWCCL_TRANSPORTS`, `swccl-perf --env` and the conformance suite all read `TransportRegistry`;
/// a backend is added there with one line (docs/ARCHITECTURE.md, "Extending").
public struct TransportBackend: Sendable {
    public typealias Factory = @Sendable (TransportSetup) throws(CCLError) -> any Transport

    /// `tcp`, `shm`, `ib`: as `SWCCL_TRANSPORTS` and `swccl-perf --transport` spell it.
    public let name: String
    /// Why this host cannot run it (no RDMA device), or nil when it can.
    public let unavailable: @Sendable () -> String?
    /// Whether `SWCCL_TRANSPORTS=auto` leaves it out (e.g. `SWCCL_SHM_DISABLE=1`); naming it still uses it.
    public let disabled: @Sendable () -> Bool
    /// Whether it can connect this host to a peer on `peer` (shared memory: the same host only).
    public let reaches: @Sendable (_ local: HostIdentity, _ peer: HostIdentity) -> Bool
    /// The cost model's figures: per message step (ns) and per byte on one link (ns).
    public let alphaNanos: Double
    public let betaNanosPerByte: Double
    /// Whether its endpoints provide a symmetric window (`Transport.window`) when asked for one.
    public let providesWindow: Bool
    /// Whether it has a kernel wait of its own that serves its peers (a `poll` on sockets or a
    /// completion channel): a communicator that mixes backends sleeps in such a one.
    public let sleepsInKernel: Bool
    /// Which of its published addresses a shrunk communicator's new root may listen on (a TCP
    /// listener's), or nil.
    public let listenAddress: (@Sendable (EndpointAddress) -> SocketAddress?)?
    /// One line for `swccl-perf --transports` and the INFO log (`ib: 1 port: mlx5_0:1 …`).
    public let summary: @Sendable () -> String
    /// Its environment knobs (`swccl-perf --env`, the unknown-variable check).
    public let knobs: @Sendable () -> [KnobInfo]
    /// Makes an endpoint.
    public let make: Factory
    /// The variants the conformance suite runs (name and factory); by default the backend itself.
    public let conformanceVariants: [(name: String, make: Factory)]

    public init(name: String, unavailable: @escaping @Sendable () -> String? = { nil }, disabled: @escaping @Sendable () -> Bool = { false },
                reaches: @escaping @Sendable (HostIdentity, HostIdentity) -> Bool = { _, _ in true },
                alphaNanos: Double, betaNanosPerByte: Double, providesWindow: Bool = false, sleepsInKernel: Bool,
                listenAddress: (@Sendable (EndpointAddress) -> SocketAddress?)? = nil,
                summary: @escaping @Sendable () -> String, knobs: @escaping @Sendable () -> [KnobInfo],
                make: @escaping Factory, conformanceVariants: [(name: String, make: Factory)]? = nil) {
        self.name = name; self.unavailable = unavailable; self.disabled = disabled; self.reaches = reaches
        self.alphaNanos = alphaNanos; self.betaNanosPerByte = betaNanosPerByte; self.providesWindow = providesWindow
        self.sleepsInKernel = sleepsInKernel; self.listenAddress = listenAddress; self.summary = summary; self.knobs = knobs
        self.make = make; self.conformanceVariants = conformanceVariants ?? [(name, make)]
    }
}

