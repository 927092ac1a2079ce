import Glibc
import CSwcclShims
import SwcclSystem

extension Knobs {
    package static let numa = Knob.bool("SWCCL_NUMA", default: true,
        "place each rank's shared-memory receive buffers on its own NUMA node (needs libnuma.so.1, loaded at run time)")
}

/// NUMA placement through libnuma, loaded with dlopen (as NCCL does with its optional libraries), so
/// the library still runs where libnuma is not installed; then nothing is placed and INFO says why.
package enum NUMA {
    private struct Library: @unchecked Sendable { var fns = cshim_numa_t() }
    private static let loaded: (library: Library?, why: String) = {
        guard Knobs.numa.value else { return (nil, "disabled by SWCCL_NUMA=0") }
        var lib = Library()
        switch cshim_numa_load(&lib.fns) {
        case 0: return (lib, "")
        case -1: return (nil, "libnuma.so.1 not found")
        case -2: return (nil, "libnuma.so.1 lacks a needed function")
        default: return (nil, "the kernel has no NUMA support")
        }
    }()

    /// Whether placement is possible, and if not, why.
    package static var available: Bool { loaded.library != nil }
    package static var unavailableReason: String { loaded.why }

    /// The node of the CPU this thread runs on now (nil without libnuma).
    package static func currentNode() -> Int? {
        guard var lib = loaded.library else { return nil }
        let cpu = cshim_getcpu()
        guard cpu >= 0 else { return nil }
        let node = cshim_numa_node_of_cpu(&lib.fns, cpu)
        return node >= 0 ? Int(node) : nil
    }

    /// Sets the memory policy of `bytes` at `p` to `node` (pages not yet allocated will come from it).
    package static func bind(_ p: UnsafeMutableRawPointer, bytes: Int, node: Int) -> Bool {
        guard var lib = loaded.library, node >= 0, node <= Int(cshim_numa_max_node(&lib.fns)) else { return false }
        cshim_numa_tonode(&lib.fns, p, bytes, Int32(node))
        return true
    }

    /// One line per node from sysfs: its CPUs and memory ("node0: cpus 0-1, 23.4 GiB").
    package static func topology() -> [String] {
        var lines: [String] = []
        for node in 0..<1024 {
            let dir = "/sys/devices/system/node/node\(node)"
            guard let cpus = Sys.readLine(path: dir + "/cpulist") else { if node > 0 { break }; continue }
            var mem = ""
            if let total = Sys.readLine(path: dir + "/meminfo"), let kb = total.split(separator: " ").compactMap({ Int($0) }).dropFirst().first {
                mem = ", \(fixed(Double(kb) / 1_048_576, 1)) GiB"
            }
            lines.append("node\(node): cpus \(cpus)\(mem)")
        }
        return lines
    }
}
