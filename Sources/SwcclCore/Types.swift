import SwcclSystem

/// Limits every layer checks against.
package enum Limits {
    /// Largest communicator this build accepts.
    package static let maxRanks = 1 << 16
}

/// Element types a collective can carry. Raw values equal `swcclDataType_t` in `include/swccl.h`.
public enum DataType: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case int8 = 0, uint8 = 1, int32 = 2, uint32 = 3, int64 = 4, uint64 = 5
    case float16 = 6, float32 = 7, float64 = 8, bfloat16 = 9, float8e4m3 = 10, float8e5m2 = 11

    /// Size of one element in bytes.
    @inlinable public var size: Int {
        switch self {
        case .int8, .uint8, .float8e4m3, .float8e5m2: return 1
        case .float16, .bfloat16: return 2
        case .int32, .uint32, .float32: return 4
        case .int64, .uint64, .float64: return 8
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .float16, .float32, .float64, .bfloat16, .float8e4m3, .float8e5m2: return true
        default: return false
        }
    }

    /// The name nccl-tests prints (and `swccl-perf -d` accepts).
    public var description: String {
        switch self {
        case .int8: return "int8"
        case .uint8: return "uint8"
        case .int32: return "int32"
        case .uint32: return "uint32"
        case .int64: return "int64"
        case .uint64: return "uint64"
        case .float16: return "half"
        case .float32: return "float"
        case .float64: return "double"
        case .bfloat16: return "bfloat16"
        case .float8e4m3: return "f8e4m3"
        case .float8e5m2: return "f8e5m2"
        }
    }

    public init?(name: String) {
        guard let t = DataType.allCases.first(where: { $0.description == name }) else { return nil }
        self = t
    }
}

/// Reduction operators. Raw values equal `swcclRedOp_t` in `include/swccl.h`.
public enum ReduceOp: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case sum = 0, prod = 1, max = 2, min = 3, avg = 4

    public var description: String {
        switch self {
        case .sum: return "sum"
        case .prod: return "prod"
        case .max: return "max"
        case .min: return "min"
        case .avg: return "avg"
        }
    }

    public init?(name: String) {
        guard let o = ReduceOp.allCases.first(where: { $0.description == name }) else { return nil }
        self = o
    }
}

/// Opaque transport address bytes (at most 128), exchanged at bootstrap.
public struct EndpointAddress: Sendable, Equatable {
    public static let maxBytes = 128
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { precondition(bytes.count <= EndpointAddress.maxBytes); self.bytes = bytes }
}
