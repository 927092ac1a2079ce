import Glibc
import CSwcclVerbs
import SwcclSystem
import SwcclCore
import SwcclTransport

/// The RDMA ports this host offers to the verbs transport: libibverbs loaded at run time, every
/// device's active ports filtered by `SWCCL_IB_HCA`, and on each the GID to use (`SWCCL_IB_GID_INDEX`,
/// else the RoCE v2 GID of the interface's address family, else index 0 on InfiniBand). When there
/// are none, `unavailableReason` says why (no rdma-core, no device, all filtered out, disabled).
package struct VerbsPort: Sendable, Equatable, CustomStringConvertible {
    package let device: String
    package let port: Int
    package let gidIndex: Int
    /// The GID in IPv6 notation (an IPv4-mapped address for RoCE v2 over IPv4).
    package let gid: String
    package let linkLayer: String  // "Ethernet" (RoCE) or "InfiniBand"
    package let gidType: String    // "RoCE v2", "RoCE v1" or "IB"
    package let mtu: Int

    package var description: String { "\(device):\(port) \(linkLayer) GID[\(gidIndex)] \(gid) (\(gidType)), MTU \(mtu)" }
}

/// `SWCCL_IB_HCA` as NCCL_IB_HCA: a comma-separated list of `device[:port]` entries matched as name
/// prefixes; a leading `^` excludes the listed ones instead, a leading `=` matches names exactly.
package struct HCAFilter: Sendable, Equatable {
    package let exclude: Bool
    package let exact: Bool
    package let entries: [(name: String, port: Int?)]

    package init(_ spec: String) {
        var s = Substring(spec.trimmingSpaces)
        var exclude = false, exact = false
        if s.hasPrefix("^") { exclude = true; s = s.dropFirst() }
        if s.hasPrefix("=") { exact = true; s = s.dropFirst() }
        self.exclude = exclude
        self.exact = exact
        entries = s.split(separator: ",").compactMap { item in
            let parts = item.split(separator: ":", maxSplits: 1).map { String($0).trimmingSpaces }
            guard let name = parts.first, !name.isEmpty else { return nil }
            return (name, parts.count > 1 ? Int(parts[1]) : nil)
        }
    }

    /// Whether `device` port `port` may be used.
    package func admits(_ device: String, port: Int) -> Bool {
        guard !entries.isEmpty else { return true }
        let listed = entries.contains { e in
            (exact ? device == e.name : device.hasPrefix(e.name)) && (e.port == nil || e.port == port)
        }
        return exclude ? !listed : listed
    }

    package static func == (a: HCAFilter, b: HCAFilter) -> Bool {
        a.exclude == b.exclude && a.exact == b.exact && a.entries.map(\.name) == b.entries.map(\.name) && a.entries.map(\.port) == b.entries.map(\.port)
    }
}

package enum VerbsDevices {
    /// The usable ports, probed once per process; empty with a reason when there are none.
    package static let probed: (ports: [VerbsPort], why: String) = probe()

    package static var ports: [VerbsPort] { probed.ports }
    package static var unavailableReason: String { probed.why }

    package static func probe() -> (ports: [VerbsPort], why: String) {
        if Knobs.ibDisable.value { return ([], "disabled by SWCCL_IB_DISABLE=1") }
        var why = [CChar](repeating: 0, count: 256)
        guard cswccl_verbs_load(&why, why.count) == 0 else {
            return ([], why.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        var n: Int32 = 0
        guard let list = cswccl_ibv_get_device_list(&n) else {
            return ([], "no RDMA devices: ibv_get_device_list: \(Errno.current) (no RDMA support in this kernel?)")
        }
        defer { cswccl_ibv_free_device_list(list) }
        guard n > 0 else { return ([], "no RDMA devices (ibv_get_device_list found none)") }
        let filter = HCAFilter(Knobs.ibHCA.value)
        let wantIPv4 = Knobs.socketFamily.value.uppercased() != "AF_INET6"
        var ports: [VerbsPort] = []
        var seen: [String] = []
        for i in 0..<Int(n) {
            guard let dev = list[i] else { continue }
            let name = String(cString: cswccl_ibv_get_device_name(dev))
            guard let ctx = cswccl_ibv_open_device(dev) else { seen.append("\(name): cannot open (\(Errno.current))"); continue }
            defer { _ = cswccl_ibv_close_device(ctx) }
            var attr = ibv_device_attr()
            guard cswccl_ibv_query_device(ctx, &attr) == 0 else { seen.append("\(name): cannot query"); continue }
            for p in 1...max(Int(attr.phys_port_cnt), 1) {
                var pa = ibv_port_attr()
                guard cswccl_ibv_query_port(ctx, UInt8(p), &pa) == 0 else { continue }
                guard cswccl_port_is_active(&pa) != 0 else { seen.append("\(name):\(p) not active"); continue }
                guard filter.admits(name, port: p) else { seen.append("\(name):\(p) excluded by SWCCL_IB_HCA"); continue }
                let ethernet = cswccl_port_is_ethernet(&pa) != 0
                guard let gid = chooseGID(ctx, port: p, tableSize: Int(pa.gid_tbl_len), ethernet: ethernet, ipv4: wantIPv4) else {
                    seen.append("\(name):\(p) has no usable GID"); continue
                }
                ports.append(VerbsPort(device: name, port: p, gidIndex: gid.index, gid: gid.text, linkLayer: ethernet ? "Ethernet" : "InfiniBand",
                                       gidType: gid.type, mtu: Int(cswccl_port_mtu_bytes(&pa))))
            }
        }
        return (ports, ports.isEmpty ? "no usable RDMA port (\(seen.joined(separator: "; ")))" : "")
    }

    /// `SWCCL_IB_GID_INDEX` if set; else on RoCE the first RoCE v2 GID of the address family (an
    /// IPv4-mapped one for IPv4), then any RoCE v2, then RoCE v1; on InfiniBand index 0.
    package static func chooseGID(_ ctx: UnsafeMutablePointer<ibv_context>, port: Int, tableSize: Int, ethernet: Bool, ipv4: Bool)
        -> (index: Int, text: String, type: String)?
    {
        var entries: [(index: Int, bytes: [UInt8], type: String)] = []
        for i in 0..<max(tableSize, 1) {
            var e = ibv_gid_entry()
            guard cswccl_ibv_query_gid_ex(ctx, UInt32(port), UInt32(i), &e) == 0 else { continue }
            let (raw, type) = withUnsafePointer(to: &e) { p in
                (Array(UnsafeBufferPointer(start: cswccl_gid_bytes(p), count: 16)),
                 cswccl_gid_entry_is_roce_v2(p) != 0 ? "RoCE v2" : cswccl_gid_entry_is_roce_v1(p) != 0 ? "RoCE v1" : "IB")
            }
            guard raw.contains(where: { $0 != 0 }) else { continue }
            entries.append((i, raw, type))
        }
        func pick(_ e: (index: Int, bytes: [UInt8], type: String)) -> (Int, String, String) { (e.index, gidText(e.bytes), e.type) }
        let forced = Knobs.ibGidIndex.value
        if forced >= 0 { return entries.first { $0.index == forced }.map(pick) }
        guard ethernet else { return entries.first.map(pick) }
        let mapped = { (b: [UInt8]) in b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xff && b[11] == 0xff }
        return (entries.first { $0.type == "RoCE v2" && mapped($0.bytes) == ipv4 }
            ?? entries.first { $0.type == "RoCE v2" } ?? entries.first { $0.type == "RoCE v1" }).map(pick)
    }

    /// Opens the device of `port` (nil with errno set if it is gone).
    package static func open(_ port: VerbsPort) -> UnsafeMutablePointer<ibv_context>? {
        var n: Int32 = 0
        guard let list = cswccl_ibv_get_device_list(&n) else { return nil }
        defer { cswccl_ibv_free_device_list(list) }
        for i in 0..<Int(n) {
            guard let dev = list[i], String(cString: cswccl_ibv_get_device_name(dev)) == port.device else { continue }
            return cswccl_ibv_open_device(dev)
        }
        Glibc.errno = ENODEV
        return nil
    }

    /// A GID in IPv6 text form (`::ffff:10.0.0.1` for IPv4-mapped ones).
    package static func gidText(_ b: [UInt8]) -> String {
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { $0.copyBytes(from: b) }
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil else { return b.map { String($0, radix: 16) }.joined(separator: ":") }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// One line for INFO and `swccl-perf --transports`.
    package static var summary: String {
        ports.isEmpty ? "ib: unavailable: \(unavailableReason)" : "ib: " + ports.map(\.description).joined(separator: "; ")
    }
}
