import Glibc
import SwcclSystem

extension Knobs {
    package static let socketIfname = Knob.string("SWCCL_SOCKET_IFNAME", default: "",
        "network interfaces for TCP and bootstrap: prefix list (eth,ib), ^ excludes (^docker,lo), = exact (=eth0)")
    package static let socketFamily = Knob.string("SWCCL_SOCKET_FAMILY", default: "", "AF_INET or AF_INET6 to force an address family")
}

/// Parses and applies an interface specification in NCCL's syntax: a comma list of name prefixes;
/// a leading `^` turns it into an exclusion list; a leading `=` requires exact names.
package struct InterfaceFilter: Sendable {
    package var names: [String]
    package var exclude: Bool
    package var exact: Bool

    package init(_ spec: String) {
        var s = Substring(spec.trimmingSpaces)
        exclude = s.hasPrefix("^")
        if exclude { s = s.dropFirst() }
        exact = s.hasPrefix("=")
        if exact { s = s.dropFirst() }
        names = s.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
    }

    package func matches(_ name: String) -> Bool {
        let hit = names.contains { exact ? name == $0 : name.hasPrefix($0) }
        return exclude ? !hit : hit
    }
}

package enum InterfaceChoice {
    /// Picks the address to listen on. With a specification, the first up interface matching it; without,
    /// the first up interface that is not loopback, `docker*` or `veth*`, else loopback. IPv4 before IPv6
    /// unless a family is forced; IPv6 link-local addresses are skipped.
    package static func choose(from interfaces: [Sys.Interface], spec: String, family: String) throws(CCLError) -> (name: String, address: SocketAddress) {
        let fam: Int32?
        switch family.uppercased() {
        case "": fam = nil
        case "AF_INET", "INET", "IPV4", "4": fam = AF_INET
        case "AF_INET6", "INET6", "IPV6", "6": fam = AF_INET6
        default: throw CCLError.invalidArgument("SWCCL_SOCKET_FAMILY=\(family) is not AF_INET or AF_INET6")
        }
        let usable = interfaces.filter { $0.isUp && !$0.address.isLinkLocalV6 && (fam == nil || $0.address.family == fam) }
        let ordered = usable.filter { $0.address.family == AF_INET } + usable.filter { $0.address.family == AF_INET6 }
        let available = Set(interfaces.filter(\.isUp).map(\.name)).sorted().joined(separator: ", ")
        if !spec.trimmingSpaces.isEmpty {
            let filter = InterfaceFilter(spec)
            guard let hit = ordered.first(where: { filter.matches($0.name) }) else {
                throw CCLError.invalidArgument("SWCCL_SOCKET_IFNAME=\(spec)\(fam != nil ? " with SWCCL_SOCKET_FAMILY=\(family)" : "") matches no interface that is up (up: \(available.isEmpty ? "none" : available))")
            }
            return (hit.name, hit.address)
        }
        let skip = InterfaceFilter("lo,docker,veth")
        if let hit = ordered.first(where: { !skip.matches($0.name) && !$0.isLoopback }) { return (hit.name, hit.address) }
        if let lo = ordered.first { return (lo.name, lo.address) }
        throw CCLError(.systemError, "no usable network interface is up (up: \(available.isEmpty ? "none" : available))")
    }

    /// The address this process listens on, from the knobs; computed once.
    package static func local() throws(CCLError) -> (name: String, address: SocketAddress) {
        let list: [Sys.Interface]
        do { list = try Sys.interfaces() } catch { throw CCLError.system("getifaddrs", error) }
        return try choose(from: list, spec: Knobs.socketIfname.value, family: Knobs.socketFamily.value)
    }
}

/// Interface selection as a pure function, for tests and tools: which interface SwiftCCL would pick
/// from a given list under a given `SWCCL_SOCKET_IFNAME` / `SWCCL_SOCKET_FAMILY`.
package enum InterfaceSelection {
    package struct Candidate: Sendable {
        package var name: String, address: String, isUp: Bool, isLoopback: Bool
        package init(name: String, address: String, isUp: Bool = true, isLoopback: Bool = false) {
            self.name = name; self.address = address; self.isUp = isUp; self.isLoopback = isLoopback
        }
    }

    /// The chosen interface's name. `address` of each candidate is numeric (`10.0.0.1`, `fd00::1`).
    package static func choose(from candidates: [Candidate], spec: String, family: String = "") throws(CCLError) -> String {
        let list = candidates.compactMap { c -> Sys.Interface? in
            let text = c.address.contains(":") ? "[\(c.address)]:0" : "\(c.address):0"
            guard let a = SocketAddress.parse(text) else { return nil }
            return Sys.Interface(name: c.name, address: a, isUp: c.isUp, isLoopback: c.isLoopback)
        }
        return try InterfaceChoice.choose(from: list, spec: spec, family: family).name
    }

    /// The interface and address this process would listen on now.
    package static func current() throws(CCLError) -> String {
        let c = try InterfaceChoice.local()
        return "\(c.name) \(c.address.hostText)"
    }
}
