import CSwcclKernels
import SwcclSystem
import SwcclCore
import SwcclTransport

// Element-wise reduction kernels.
//
// Integer and float32/float64 kernels are Swift loops, one per (type, op), specialised at compile
// time: every table entry is a non-generic closure that calls the generic `@inline(__always)` loop.
// float16, bfloat16 and the two fp8 types are reduced by the C target CSwcclKernels (F16C for
// float16, computed in float, rounded to nearest even).
//
// Semantics:
//   - integers: wrapping `&+` / `&*`; avg finalisation is truncating division of the wrapped sum.
//   - floats: IEEE in the element type; max is `a > b ? a : b`, min is `a < b ? a : b` (so a NaN
//     in `a` is not propagated, as with x86 maxps/minps); avg divides in the element type
//     (in float for the C types).
//   - `dst` may be identical to `a` and/or `b` (in place); partial overlap is not allowed.
//   - Buffers need no alignment (unaligned loads/stores; they cost nothing on x86).
//   - A count <= 0 does nothing. Nothing here traps or allocates.

/// dst[i] = a[i] op b[i] for count elements of `type`; avg is reduced as sum (divide later with `Reduction.divide`).
package typealias ReduceKernel = @Sendable (_ dst: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Void

package enum Reduction {
    /// Kernels indexed by `type.rawValue * 5 + op.rawValue`.
    private static let table: [ReduceKernel] = makeTable()

    /// The kernel for `type` and `op` (`.avg` gives the sum kernel).
    @inline(__always)
    package static func kernel(_ type: DataType, _ op: ReduceOp) -> ReduceKernel {
        table[Int(type.rawValue) &* 5 &+ Int(op.rawValue)]
    }

    /// Finalises an avg: `buf[i] = buf[i] / n` in the element type (truncating for integers, in float
    /// with round-to-nearest-even for the 8/16-bit float types). Does nothing if count <= 0 or n <= 1.
    package static func divide(_ buf: UnsafeMutableRawPointer, count: Int, type: DataType, by n: Int) {
        guard count > 0, n > 1 else { return }
        switch type {
        case .int8: divideLoop(buf, count, n, Int8.self)
        case .uint8: divideLoop(buf, count, n, UInt8.self)
        case .int32: divideLoop(buf, count, n, Int32.self)
        case .uint32: divideLoop(buf, count, n, UInt32.self)
        case .int64: divideLoop(buf, count, n, Int64.self)
        case .uint64: divideLoop(buf, count, n, UInt64.self)
        case .float32: divideLoop(buf, count, n, Float.self)
        case .float64: divideLoop(buf, count, n, Double.self)
        case .float16: sck_scale_f16(buf, count, Float(n))
        case .bfloat16: sck_scale_bf16(buf, count, Float(n))
        case .float8e4m3: sck_scale_f8e4m3(buf, count, Float(n))
        case .float8e5m2: sck_scale_f8e5m2(buf, count, Float(n))
        }
    }

    // MARK: - Table

    private static func makeTable() -> [ReduceKernel] {
        var table: [ReduceKernel] = []
        table.reserveCapacity(DataType.allCases.count * 5)
        for type in DataType.allCases.sorted(by: { $0.rawValue < $1.rawValue }) {
            precondition(Int(type.rawValue) * 5 == table.count, "DataType raw values must be 0..<n")
            table.append(contentsOf: row(type))
        }
        return table
    }

    /// The five kernels of one type in `ReduceOp` raw-value order: sum, prod, max, min, avg (= sum).
    private static func row(_ type: DataType) -> [ReduceKernel] {
        switch type {
        case .int8:
            return [{ reduceLoop($0, $1, $2, $3, Int8.add) }, { reduceLoop($0, $1, $2, $3, Int8.mul) },
                    { reduceLoop($0, $1, $2, $3, Int8.maximum) }, { reduceLoop($0, $1, $2, $3, Int8.minimum) },
                    { reduceLoop($0, $1, $2, $3, Int8.add) }]
        case .uint8:
            return [{ reduceLoop($0, $1, $2, $3, UInt8.add) }, { reduceLoop($0, $1, $2, $3, UInt8.mul) },
                    { reduceLoop($0, $1, $2, $3, UInt8.maximum) }, { reduceLoop($0, $1, $2, $3, UInt8.minimum) },
                    { reduceLoop($0, $1, $2, $3, UInt8.add) }]
        case .int32:
            return [{ reduceLoop($0, $1, $2, $3, Int32.add) }, { reduceLoop($0, $1, $2, $3, Int32.mul) },
                    { reduceLoop($0, $1, $2, $3, Int32.maximum) }, { reduceLoop($0, $1, $2, $3, Int32.minimum) },
                    { reduceLoop($0, $1, $2, $3, Int32.add) }]
        case .uint32:
            return [{ reduceLoop($0, $1, $2, $3, UInt32.add) }, { reduceLoop($0, $1, $2, $3, UInt32.mul) },
                    { reduceLoop($0, $1, $2, $3, UInt32.maximum) }, { reduceLoop($0, $1, $2, $3, UInt32.minimum) },
                    { reduceLoop($0, $1, $2, $3, UInt32.add) }]
        case .int64:
            return [{ reduceLoop($0, $1, $2, $3, Int64.add) }, { reduceLoop($0, $1, $2, $3, Int64.mul) },
                    { reduceLoop($0, $1, $2, $3, Int64.maximum) }, { reduceLoop($0, $1, $2, $3, Int64.minimum) },
                    { reduceLoop($0, $1, $2, $3, Int64.add) }]
        case .uint64:
            return [{ reduceLoop($0, $1, $2, $3, UInt64.add) }, { reduceLoop($0, $1, $2, $3, UInt64.mul) },
                    { reduceLoop($0, $1, $2, $3, UInt64.maximum) }, { reduceLoop($0, $1, $2, $3, UInt64.minimum) },
                    { reduceLoop($0, $1, $2, $3, UInt64.add) }]
        case .float32:
            return [{ reduceLoop($0, $1, $2, $3, Float.add) }, { reduceLoop($0, $1, $2, $3, Float.mul) },
                    { reduceLoop($0, $1, $2, $3, Float.maximum) }, { reduceLoop($0, $1, $2, $3, Float.minimum) },
                    { reduceLoop($0, $1, $2, $3, Float.add) }]
        case .float64:
            return [{ reduceLoop($0, $1, $2, $3, Double.add) }, { reduceLoop($0, $1, $2, $3, Double.mul) },
                    { reduceLoop($0, $1, $2, $3, Double.maximum) }, { reduceLoop($0, $1, $2, $3, Double.minimum) },
                    { reduceLoop($0, $1, $2, $3, Double.add) }]
        case .float16:
            return [{ if $3 > 0 { sck_reduce_f16(Int32(SCK_OP_SUM), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f16(Int32(SCK_OP_PROD), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f16(Int32(SCK_OP_MAX), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f16(Int32(SCK_OP_MIN), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f16(Int32(SCK_OP_SUM), $0, $1, $2, $3) } }]
        case .bfloat16:
            return [{ if $3 > 0 { sck_reduce_bf16(Int32(SCK_OP_SUM), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_bf16(Int32(SCK_OP_PROD), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_bf16(Int32(SCK_OP_MAX), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_bf16(Int32(SCK_OP_MIN), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_bf16(Int32(SCK_OP_SUM), $0, $1, $2, $3) } }]
        case .float8e4m3:
            return [{ if $3 > 0 { sck_reduce_f8e4m3(Int32(SCK_OP_SUM), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e4m3(Int32(SCK_OP_PROD), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e4m3(Int32(SCK_OP_MAX), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e4m3(Int32(SCK_OP_MIN), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e4m3(Int32(SCK_OP_SUM), $0, $1, $2, $3) } }]
        case .float8e5m2:
            return [{ if $3 > 0 { sck_reduce_f8e5m2(Int32(SCK_OP_SUM), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e5m2(Int32(SCK_OP_PROD), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e5m2(Int32(SCK_OP_MAX), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e5m2(Int32(SCK_OP_MIN), $0, $1, $2, $3) } },
                    { if $3 > 0 { sck_reduce_f8e5m2(Int32(SCK_OP_SUM), $0, $1, $2, $3) } }]
        }
    }
}

/// Public entry points to the kernels, for tests and tools (tests run in release, without `@testable`).
public enum ReductionKernels {
    /// `dst[i] = a[i] op b[i]` for `count` elements of `type`. `.avg` reduces as sum: finish with
    /// `divide(_:count:type:by:)`. `dst` may be identical to `a` and/or `b`; no alignment needed.
    public static func reduce(dst: UnsafeMutableRawPointer, a: UnsafeRawPointer, b: UnsafeRawPointer,
                              count: Int, type: DataType, op: ReduceOp) {
        guard count > 0 else { return }
        Reduction.kernel(type, op)(dst, a, b, count)
    }

    /// `buf[i] = buf[i] / n` in the element type (the avg finalisation). No-op if count <= 0 or n <= 1.
    public static func divide(_ buf: UnsafeMutableRawPointer, count: Int, type: DataType, by n: Int) {
        Reduction.divide(buf, count: count, type: type, by: n)
    }
}

// MARK: - Element operations

/// An element type reduced by a Swift loop.
package protocol ReducibleElement: BitwiseCopyable {
    static func add(_ a: Self, _ b: Self) -> Self
    static func mul(_ a: Self, _ b: Self) -> Self
    static func maximum(_ a: Self, _ b: Self) -> Self
    static func minimum(_ a: Self, _ b: Self) -> Self
    /// `x / n` for the avg finalisation; `n >= 1`.
    static func divide(_ x: Self, by n: Int) -> Self
}

extension ReducibleElement where Self: FixedWidthInteger {
    @inline(__always) package static func add(_ a: Self, _ b: Self) -> Self { a &+ b }
    @inline(__always) package static func mul(_ a: Self, _ b: Self) -> Self { a &* b }
    @inline(__always) package static func maximum(_ a: Self, _ b: Self) -> Self { a > b ? a : b }
    @inline(__always) package static func minimum(_ a: Self, _ b: Self) -> Self { a < b ? a : b }
}

extension ReducibleElement where Self: FixedWidthInteger & SignedInteger {
    /// Truncating; computed in Int64 so that `n` larger than `Self.max` cannot trap.
    @inline(__always) package static func divide(_ x: Self, by n: Int) -> Self {
        Self(truncatingIfNeeded: Int64(x) / Int64(n))
    }
}

extension ReducibleElement where Self: FixedWidthInteger & UnsignedInteger {
    @inline(__always) package static func divide(_ x: Self, by n: Int) -> Self {
        Self(truncatingIfNeeded: UInt64(x) / UInt64(n))
    }
}

extension ReducibleElement where Self: BinaryFloatingPoint {
    @inline(__always) package static func add(_ a: Self, _ b: Self) -> Self { a + b }
    @inline(__always) package static func mul(_ a: Self, _ b: Self) -> Self { a * b }
    @inline(__always) package static func maximum(_ a: Self, _ b: Self) -> Self { a > b ? a : b }
    @inline(__always) package static func minimum(_ a: Self, _ b: Self) -> Self { a < b ? a : b }
    @inline(__always) package static func divide(_ x: Self, by n: Int) -> Self { x / Self(n) }
}

extension Int8: ReducibleElement {}
extension UInt8: ReducibleElement {}
extension Int32: ReducibleElement {}
extension UInt32: ReducibleElement {}
extension Int64: ReducibleElement {}
extension UInt64: ReducibleElement {}
extension Float: ReducibleElement {}
extension Double: ReducibleElement {}

// MARK: - Loops

/// `dst[i] = op(a[i], b[i])`. Four aliasing variants: when dst == a the loop reads `dst` itself, so
/// LLVM's run-time overlap check (which rejects identical pointers and would fall back to a scalar
/// loop) only compares dst with the other source.
@inline(__always)
private func reduceLoop<T: ReducibleElement>(
    _ dst: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int,
    _ op: (T, T) -> T
) {
    guard count > 0 else { return }
    let s = MemoryLayout<T>.stride
    let d = UnsafeRawPointer(dst)
    if d == a {
        if d == b {
            for i in 0..<count {
                let x = d.loadUnaligned(fromByteOffset: i &* s, as: T.self)
                dst.storeBytes(of: op(x, x), toByteOffset: i &* s, as: T.self)
            }
        } else {
            for i in 0..<count {
                let x = d.loadUnaligned(fromByteOffset: i &* s, as: T.self)
                let y = b.loadUnaligned(fromByteOffset: i &* s, as: T.self)
                dst.storeBytes(of: op(x, y), toByteOffset: i &* s, as: T.self)
            }
        }
    } else if d == b {
        for i in 0..<count {
            let x = a.loadUnaligned(fromByteOffset: i &* s, as: T.self)
            let y = d.loadUnaligned(fromByteOffset: i &* s, as: T.self)
            dst.storeBytes(of: op(x, y), toByteOffset: i &* s, as: T.self)
        }
    } else {
        for i in 0..<count {
            let x = a.loadUnaligned(fromByteOffset: i &* s, as: T.self)
            let y = b.loadUnaligned(fromByteOffset: i &* s, as: T.self)
            dst.storeBytes(of: op(x, y), toByteOffset: i &* s, as: T.self)
        }
    }
}

@inline(__always)
private func divideLoop<T: ReducibleElement>(_ buf: UnsafeMutableRawPointer, _ count: Int, _ n: Int, _: T.Type) {
    let s = MemoryLayout<T>.stride
    for i in 0..<count {
        let x = buf.loadUnaligned(fromByteOffset: i &* s, as: T.self)
        buf.storeBytes(of: T.divide(x, by: n), toByteOffset: i &* s, as: T.self)
    }
}
