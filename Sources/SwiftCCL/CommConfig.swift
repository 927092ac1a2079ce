/// Settings of one communicator. Unset fields take the environment's value, then the library default.
public struct CommConfig: Sendable {
    /// Deadline of every blocking step; nil or <= 0: `SWCCL_TIMEOUT_MS`.
    public var timeoutMs: Int?
    /// `auto`, or a list such as `tcp`; nil: `SWCCL_TRANSPORTS`.
    public var transports: String?
    /// Shown in logs and errors.
    public var name: String?
    /// Forces algorithms, in `SWCCL_ALGO`'s syntax (`ring`, `allreduce:tree`,
    /// `allreduce:0-4K:recdbl;4K-inf:ring`); nil: `SWCCL_ALGO`, else the cost model's choice.
    public var algorithm: String?

    public init(timeoutMs: Int? = nil, transports: String? = nil, name: String? = nil, algorithm: String? = nil) {
        self.timeoutMs = timeoutMs; self.transports = transports; self.name = name; self.algorithm = algorithm
    }
}

/// Element types with a `DataType`, for the typed Swift API.
public protocol CCLElement: Sendable { static var dataType: DataType { get } }
extension Int8: CCLElement { public static var dataType: DataType { .int8 } }
extension UInt8: CCLElement { public static var dataType: DataType { .uint8 } }
extension Int32: CCLElement { public static var dataType: DataType { .int32 } }
extension UInt32: CCLElement { public static var dataType: DataType { .uint32 } }
extension Int64: CCLElement { public static var dataType: DataType { .int64 } }
extension UInt64: CCLElement { public static var dataType: DataType { .uint64 } }
extension Float16: CCLElement { public static var dataType: DataType { .float16 } }
extension Float: CCLElement { public static var dataType: DataType { .float32 } }
extension Double: CCLElement { public static var dataType: DataType { .float64 } }
