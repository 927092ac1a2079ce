// What C passes as settings: swcclConfig_t, data types and reduction operators.
import CSwcclHeader
import Glibc
import Synchronization
import SwiftCCL

func dataType(_ t: swcclDataType_t) -> DataType? { DataType(rawValue: Int32(bitPattern: t.rawValue)) }
func reduceOp(_ o: swcclRedOp_t) -> ReduceOp? { ReduceOp(rawValue: Int32(bitPattern: o.rawValue)) }

/// What a swcclConfig_t says: the communicator's settings, and whether calls on it block (nil: not
/// set, so the default — or, for a split, the parent's).
struct Options {
    var config = CommConfig()
    var blocking: Bool?
}

/// The configuration a caller passed, checked for SWCCL_CONFIG_INITIALIZER. Only the fields that
/// lie within the caller's `size` are read: a struct compiled against an older header is shorter.
func readOptions(_ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> Result<Options, CCLError> {
    guard let config else { return .success(Options()) }
    let size = config.pointee.size
    guard config.pointee.magic == SWCCL_CONFIG_MAGIC, size >= 16, size <= 4096 else {
        return .failure(.invalidArgument("the config struct was not initialised with SWCCL_CONFIG_INITIALIZER (bad size or magic)"))
    }
    func has<T>(_ field: KeyPath<swcclConfig_t, T>) -> Bool {
        size >= MemoryLayout<swcclConfig_t>.offset(of: field)! + MemoryLayout<T>.size
    }
    let undef = CInt.min  // SWCCL_CONFIG_UNDEF_INT (Swift does not import that macro)
    var o = Options()
    let c = config.pointee
    if has(\.timeoutMs) { o.config.timeoutMs = Int(c.timeoutMs) > 0 ? Int(c.timeoutMs) : nil }
    if has(\.transports), let t = c.transports { o.config.transports = String(cString: t) }
    if has(\.commName), let n = c.commName { o.config.name = String(cString: n) }
    if has(\.blocking), c.blocking != undef {
        guard c.blocking == 0 || c.blocking == 1 else {
            return .failure(.invalidArgument("config.blocking is \(c.blocking): 1 (calls block, the default) or 0 (nonblocking: swcclInProgress, then poll swcclCommGetAsyncError)"))
        }
        o.blocking = c.blocking == 1
    }
    // cgaClusterSize, minCTAs, maxCTAs: CUDA launch settings, meaningless on host memory (accepted).
    if has(\.netName), let p = c.netName {
        let name = String(cString: p)
        let t: String
        switch name.lowercased() {
        case "socket", "tcp": t = "shm,tcp"
        case "ib", "verbs": t = "shm,ib"
        default:
            return .failure(.invalidArgument("config.netName \"\(name)\" is not a network here: \"Socket\" (TCP between hosts) or \"IB\" (RDMA verbs between hosts); ranks on one host use shared memory either way"))
        }
        if let given = o.config.transports {
            return .failure(.invalidArgument("config.netName \"\(name)\" and config.transports \"\(given)\" are both set: set one (netName \"\(name)\" means transports \"\(t)\")"))
        }
        o.config.transports = t
    }
    if has(\.splitShare), c.splitShare != undef {
        guard c.splitShare == 0 || c.splitShare == 1 else {
            return .failure(.invalidArgument("config.splitShare is \(c.splitShare): 0 or 1"))
        }
        // Accepted: a split communicator always has connections of its own here (nothing to share).
    }
    return .success(o)
}

/// The settings alone (callers that have no use for `blocking`).
func readConfig(_ config: UnsafeMutablePointer<swcclConfig_t>?, operation: String) -> Result<CommConfig, CCLError> {
    readOptions(config, operation: operation).map(\.config)
}
