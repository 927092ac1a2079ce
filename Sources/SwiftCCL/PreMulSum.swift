import SwcclCore
import SwcclAlgorithms

/// A pre-multiplied sum (NCCL's `ncclRedOpCreatePreMulSum`): each rank's input is multiplied by a
/// scalar of the collective's type before the sum, e.g. to average gradients with a scale factor.
/// The scalar is either copied now or read from memory at every operation. A plain value (no
/// reference inside): a collective call that carries one is copied without reference counting.
public struct PreMulSum: @unchecked Sendable {
    public let type: DataType
    /// The scalar's bytes copied at creation (the first `type.size` bytes; every type fits).
    private let immediate: UInt64
    private let pointer: UnsafeRawPointer?

    /// The scalar's bytes (one element of `type`) copied now.
    public init(type: DataType, scalarBytes: UnsafeRawPointer) {
        self.type = type
        var bits: UInt64 = 0
        withUnsafeMutableBytes(of: &bits) { $0.baseAddress!.copyMemory(from: scalarBytes, byteCount: min(type.size, 8)) }
        immediate = bits
        pointer = nil
    }

    /// The scalar read from `scalarAt` each time an operation uses it.
    public init(type: DataType, readingScalarAt scalarAt: UnsafeRawPointer) {
        self.type = type
        immediate = 0
        pointer = scalarAt
    }

    public static func of(_ value: Float) -> PreMulSum { withUnsafeBytes(of: value) { PreMulSum(type: .float32, scalarBytes: $0.baseAddress!) } }
    public static func of(_ value: Double) -> PreMulSum { withUnsafeBytes(of: value) { PreMulSum(type: .float64, scalarBytes: $0.baseAddress!) } }

    func check(_ t: DataType) throws(CCLError) {
        guard t == type else { throw CCLError.invalidArgument("the pre-multiplied sum was made for \(type), not \(t)") }
    }

    /// dst = src × scalar, in the type's own arithmetic (`dst` may be `src`).
    func scale(into dst: UnsafeMutableRawPointer, from src: UnsafeRawPointer, count: Int) {
        let es = type.size
        let chunk = 4096
        let pattern = UnsafeMutableRawPointer.allocate(byteCount: chunk * es, alignment: 64)
        defer { pattern.deallocate() }
        for i in 0..<chunk {
            if let p = pointer { (pattern + i * es).copyMemory(from: p, byteCount: es) }
            else { withUnsafeBytes(of: immediate) { (pattern + i * es).copyMemory(from: $0.baseAddress!, byteCount: es) } }
        }
        let mul = Reduction.kernel(type, .prod)
        var off = 0
        while off < count {
            let n = min(chunk, count - off)
            mul(dst + off * es, src + off * es, pattern, n)
            off += n
        }
    }
}
