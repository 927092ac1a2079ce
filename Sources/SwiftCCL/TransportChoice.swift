import SwcclSystem
import SwcclCore
import SwcclTransport
import SwcclBootstrap
import SwcclAlgorithms

/// How a communicator gets its transport, from `TransportRegistry` alone (no backend named here):
/// every candidate endpoint exists before the rendezvous (their addresses are published); once every
/// rank's host is known, every rank makes the same choice per pair and closes the rest.
struct TransportChoice {
    /// The candidates made, in registry order.
    private(set) var made: [(backend: TransportBackend, transport: any Transport)] = []
    let spec: String

    /// Makes the candidates `spec` (`SWCCL_TRANSPORTS`/`CommConfig.transports`) asks for: with `auto`
    /// every backend this host can run and that is not disabled (one that fails to start is left out
    /// with a warning, except the last, general one); a named one must start. A single rank makes
    /// only the registry's last (general) backend.
    init(spec rawSpec: String, rank: Int, size: Int, secret: [UInt8], window: WindowRequest) throws(CCLError) {
        spec = rawSpec.lowercased()
        let registry = TransportRegistry.backends
        let wanted = Set(spec.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty })
        let auto = wanted.isEmpty || wanted.contains("auto")
        let known = Set(["auto"] + registry.map(\.name))
        guard wanted.isSubset(of: known) else {
            throw CCLError.invalidArgument("transports \"\(spec)\": choose from \((["auto"] + registry.map(\.name)).joined(separator: ", ")) (a comma-separated list)")
        }
        let setup = TransportSetup(rank: rank, nranks: size, secret: secret, window: window)
        do throws(CCLError) {
            if size == 1 {
                let general = registry[registry.count - 1]
                made.append((general, try general.make(setup)))
                return
            }
            for (i, b) in registry.enumerated() {
                let general = i == registry.count - 1
                guard auto ? (general || (!b.disabled() && b.unavailable() == nil)) : wanted.contains(b.name) else { continue }
                do throws(CCLError) { made.append((b, try b.make(setup))) } catch {
                    if !auto || general { throw error }
                    Log.warn(.net, "rank \(rank): no \(b.name) transport (\(error.cause)); using the others")
                }
            }
        } catch {
            close()
            throw error
        }
    }

    /// The addresses to publish, by backend name.
    var published: [(name: String, address: EndpointAddress)] { made.map { ($0.backend.name, $0.transport.localAddress) } }

    func close() { for m in made { m.transport.close() } }

    /// Per pair, the same decision on both sides: the first candidate (registry order) that both
    /// published and that reaches the peer. Returns the communicator's transport and the peers to
    /// connect; closes the candidates no pair uses.
    func choose(rank me: Int, infos: [RankInfo]) throws(CCLError) -> (transport: any Transport, peers: [PeerInfo]) {
        let size = infos.count
        if size == 1 { return (made[0].transport, []) }
        var choice = [Int](repeating: -1, count: size)  // index in `made`
        for i in infos where i.rank != me {
            guard let k = made.indices.first(where: { k in
                let b = made[k].backend
                return i.transports.contains { $0.name == b.name } && b.reaches(.local, i.host)
            }) else {
                throw CCLError.invalidUsage("no transport reaches rank \(i.rank) (\(i.host.hostname)) with SWCCL_TRANSPORTS=\(spec): it offers \(i.transports.map(\.name).joined(separator: ", ")), this rank \(published.map(\.name).joined(separator: ", "))")
            }
            choice[i.rank] = k
        }
        let used = made.indices.filter { choice.contains($0) }
        for k in made.indices where !used.contains(k) { made[k].transport.close() }
        let peers = infos.compactMap { info -> PeerInfo? in
            guard info.rank != me, let a = info.transports.first(where: { $0.name == made[choice[info.rank]].backend.name }) else { return nil }
            return PeerInfo(rank: info.rank, address: a.address, host: info.host)
        }
        if used.count == 1 { return (made[used[0]].transport, peers) }
        let route = choice.map { $0 < 0 ? -1 : used.firstIndex(of: $0)! }
        // Sleep in the last (most general) backend with a kernel wait of its own that serves peers.
        let sleeper = used.lastIndex { made[$0].backend.sleepsInKernel } ?? 0
        return (PerPeerTransport(backends: used.map { made[$0].transport }, route: route, sleeper: sleeper), peers)
    }

    /// Each rank's address a shrunk communicator's new root may listen on (nil if it published none).
    static func listenAddresses(_ infos: [RankInfo]) -> [SocketAddress?] {
        infos.map { i in
            TransportRegistry.backends.lazy.compactMap { b in
                b.listenAddress.flatMap { decode in i.transports.first { $0.name == b.name }.flatMap { decode($0.address) } }
            }.first
        }
    }
}

extension CostModel {
    /// The model for a backend of the registry by name (`tcp`, `shm`, `ib`), from the figures it declares.
    package static func named(_ transport: String) -> CostModel? {
        TransportRegistry.named(transport).map(forBackend)
    }

    /// The algorithm a communicator of `ranks` ranks over `transport` would pick for `bytes`, with this
    /// process's `SWCCL_ALGO` and `SWCCL_MODEL_*` settings (for tools and tests).
    package static func selectionForTesting(_ kind: CollectiveKind, bytes: Int, ranks: Int, transport: String) -> String {
        guard var m = CostModel.named(transport) else { return "?" }
        if Knobs.alphaMicros.value > 0 { m.alpha = Knobs.alphaMicros.value * 1e-6 }
        if Knobs.bandwidthGBs.value > 0 { m.beta = 1 / (Knobs.bandwidthGBs.value * 1e9) }
        if Knobs.reduceGBs.value > 0 { m.gamma = 1 / (Knobs.reduceGBs.value * 1e9) }
        let rules = AlgorithmRules(Knobs.algo.value)
        if let f = rules.forced(kind, bytes: bytes), m.predict(kind, f, bytes: bytes, ranks: ranks) != nil { return f.rawValue }
        return m.best(kind, bytes: bytes, ranks: ranks).rawValue
    }
}
