import SwiftCCL

/// Deterministic test data for reducing collectives, in the spirit of nccl-tests' data checks.
///
/// Element `i` of rank `r`'s input is a function of `(seed, r, offset + i)` only (a splitmix64 hash),
/// so every rank can fill its own buffer and anyone can compute the exact allreduce result without
/// seeing the other ranks' data. The values are chosen per type and operation so that **every
/// reduction order and every tree gives a bit-exact result** for up to 64 ranks: each partial
/// result of any subset of ranks is exactly representable in the element type.
///
/// Values per operation (floating-point types):
/// - sum / avg: `k * scale` with a small integer `k`; with 64 ranks every partial sum needs at most
///   this many significand bits:
///   - float32: `k` in -512...512, scale 1/8 (64·512 = 2^15 units ≤ 2^24)
///   - float64: `k` in -2^20...2^20, scale 2^-10 (2^26 units ≤ 2^53)
///   - float16: `k` in -32...32, scale 1/2 (64·32 = 2^11 units: exact up to 2048)
///   - bfloat16: `k` in -4...4, scale 1/4 (64·4 = 2^8 units: exact up to 256)
///   - fp8 e4m3 (4 significant bits, integers exact up to 16): `k` in {-1, 0, 1}, scale 1/2, but at a
///     given index only one group of 16 ranks (`rank / 16 % 4 == (index + seed) % 4`) is non-zero,
///     so any partial sum has at most 16 units.
///   - fp8 e5m2 (3 significant bits, integers exact up to 8): `k` in {-1, 0, 1}, scale 1, with one
///     active group of 8 ranks (`rank / 8 % 8 == (index + seed) % 8`): at most 8 units.
///   So for fp8 most elements are 0 (3/4 for e4m3, 7/8 for e5m2, whatever the number of ranks);
///   every rank is still non-zero on its share of the indices, and the ranks of one group are
///   non-zero together, so the kernels do combine non-zero values.
/// - prod: `±2^j`, random sign on every rank. float32, float64 and bfloat16: `j = ±1` with
///   probability 1/8, else 0 (products stay within 2^±64). float16 and both fp8 types: `j` in
///   {-1, 0, 1} only for one active group of 8 ranks per index (`rank / 8 % 8 == (index + seed) % 8`),
///   0 elsewhere, so every partial product lies in 2^-8...2^8 (exact even in e4m3: 2^-9...448).
/// - max / min: uniformly random encodings (NaN encodings replaced by finite ones, ±inf possible).
/// - avg: the sum data; the expected value is the exact sum divided by `nranks` in Double, rounded
///   once to the type (nearest even). Implementations divide in the element type (or in float),
///   so `countWrong` accepts 2 ulp for floating-point avg.
///
/// Integer types: sum / avg / max / min use uniformly random values (wrapping arithmetic is
/// order-independent; avg is the wrapped sum divided by `nranks`, truncating). prod uses small
/// factors (mostly ±1, sometimes ±3, ±5 or 2), multiplied with wrapping.
///
/// Beyond 64 ranks the groups repeat and exactness of floating-point sum/prod is no longer
/// guaranteed (integers, max and min stay exact).
public enum Pattern {
    /// Writes rank `rank`'s input for a reducing collective: element `i` is
    /// `value(seed, rank, offset + i)` encoded in `type`. Unaligned buffers are fine.
    public static func fill(_ buf: UnsafeMutableRawPointer, count: Int, type: DataType, op: ReduceOp,
                            seed: UInt64, rank: Int, offset: Int = 0) {
        guard count > 0 else { return }
        let stream = RankStream(seed: seed, rank: rank)
        if let rule = FloatRule.of(type) {
            switch op {
            case .sum, .avg:
                writeBits(buf, count: count, bytes: rule.format.bytes) { i in
                    let index = offset &+ i
                    return rule.sumBits(rule.sumUnits(stream.hash(index), rank: rank, index: index, seed: seed))
                }
            case .prod:
                writeBits(buf, count: count, bytes: rule.format.bytes) { i in
                    let index = offset &+ i
                    let f = rule.prodFactor(stream.hash(index), rank: rank, index: index, seed: seed)
                    return rule.prodBits(negative: f.negative, exponent: f.exponent)
                }
            case .max, .min:
                writeBits(buf, count: count, bytes: rule.format.bytes) { i in
                    rule.format.randomFinite(stream.hash(offset &+ i))
                }
            }
            return
        }
        switch type {
        case .int8: fillInts(buf, count, op, stream, offset, Int8.self)
        case .uint8: fillInts(buf, count, op, stream, offset, UInt8.self)
        case .int32: fillInts(buf, count, op, stream, offset, Int32.self)
        case .uint32: fillInts(buf, count, op, stream, offset, UInt32.self)
        case .int64: fillInts(buf, count, op, stream, offset, Int64.self)
        case .uint64: fillInts(buf, count, op, stream, offset, UInt64.self)
        default: break
        }
    }

    /// Writes the exact allreduce result of ranks `0..<nranks` (as filled by `fill` with the same
    /// seed, type and op): wrapping sum/product for integers, truncating wrapped-sum / nranks for
    /// integer avg, the exact value for floating-point sum/prod/max/min, and the exact sum / nranks
    /// rounded once to the type for floating-point avg. Does nothing if `nranks < 1`.
    public static func expected(_ buf: UnsafeMutableRawPointer, count: Int, type: DataType, op: ReduceOp,
                                seed: UInt64, nranks: Int, offset: Int = 0) {
        guard count > 0, nranks > 0 else { return }
        let streams = (0..<nranks).map { RankStream(seed: seed, rank: $0) }
        streams.withUnsafeBufferPointer { st in
            if let rule = FloatRule.of(type) {
                expectedFloats(buf, count, op, rule, st, seed, offset)
                return
            }
            switch type {
            case .int8: expectedInts(buf, count, op, st, offset, Int8.self)
            case .uint8: expectedInts(buf, count, op, st, offset, UInt8.self)
            case .int32: expectedInts(buf, count, op, st, offset, Int32.self)
            case .uint32: expectedInts(buf, count, op, st, offset, UInt32.self)
            case .int64: expectedInts(buf, count, op, st, offset, Int64.self)
            case .uint64: expectedInts(buf, count, op, st, offset, UInt64.self)
            default: break
            }
        }
    }

    /// Number of elements of `got` that differ from `want`: bitwise (0 ulp, but +0 equals -0 and
    /// any NaN equals any NaN for floating-point types), except floating-point avg where a distance
    /// of up to 2 ulp is accepted (measured on the type's own encoding, across zero too).
    public static func countWrong(_ got: UnsafeRawPointer, _ want: UnsafeRawPointer, count: Int,
                                  type: DataType, op: ReduceOp) -> Int {
        guard count > 0 else { return 0 }
        guard let format = FloatFormat.of(type) else {
            return countMismatches(got, want, count: count, bytes: type.size) { $0 != $1 }
        }
        let tolerance: UInt64 = op == .avg ? 2 : 0
        return countMismatches(got, want, count: count, bytes: format.bytes) {
            !format.close($0, $1, tolerance: tolerance)
        }
    }
}

// MARK: - Hashing

@inline(__always)
private func mix64(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// splitmix64 stream of one (seed, rank): `hash(index)` is the index-th output.
private struct RankStream {
    let base: UInt64

    init(seed: UInt64, rank: Int) {
        base = mix64(mix64(seed) &+ UInt64(truncatingIfNeeded: rank) &* 0x9E37_79B9_7F4A_7C15)
    }

    @inline(__always)
    func hash(_ index: Int) -> UInt64 {
        mix64(base &+ UInt64(truncatingIfNeeded: index) &* 0xD1B5_4A32_D192_ED03)
    }
}

/// Uniform integer in 0..<n from the high half of a hash.
@inline(__always)
private func uniform(_ h: UInt64, _ n: Int) -> Int {
    Int(truncatingIfNeeded: ((h >> 32) &* UInt64(truncatingIfNeeded: n)) >> 32)
}

// MARK: - Floating-point formats

/// A binary floating-point encoding (sign, exponent, mantissa) of 1, 2, 4 or 8 bytes.
private struct FloatFormat {
    let bytes: Int
    let manBits: Int
    let expBits: Int
    let bias: Int
    /// Magnitude bits of the largest finite value.
    let maxFinite: UInt64
    /// Magnitude bits of infinity; nil for e4m3 (no infinities, saturating, only 0x7F is NaN).
    let inf: UInt64?
    /// Magnitude bits of the canonical quiet NaN.
    let nan: UInt64

    var signBit: UInt64 { 1 << UInt64(bytes * 8 - 1) }

    static let f16 = FloatFormat(bytes: 2, manBits: 10, expBits: 5, bias: 15, maxFinite: 0x7BFF, inf: 0x7C00, nan: 0x7E00)
    static let bf16 = FloatFormat(bytes: 2, manBits: 7, expBits: 8, bias: 127, maxFinite: 0x7F7F, inf: 0x7F80, nan: 0x7FC0)
    static let e4m3 = FloatFormat(bytes: 1, manBits: 3, expBits: 4, bias: 7, maxFinite: 0x7E, inf: nil, nan: 0x7F)
    static let e5m2 = FloatFormat(bytes: 1, manBits: 2, expBits: 5, bias: 15, maxFinite: 0x7B, inf: 0x7C, nan: 0x7E)
    static let f32 = FloatFormat(bytes: 4, manBits: 23, expBits: 8, bias: 127, maxFinite: 0x7F7F_FFFF,
                                 inf: 0x7F80_0000, nan: 0x7FC0_0000)
    static let f64 = FloatFormat(bytes: 8, manBits: 52, expBits: 11, bias: 1023, maxFinite: 0x7FEF_FFFF_FFFF_FFFF,
                                 inf: 0x7FF0_0000_0000_0000, nan: 0x7FF8_0000_0000_0000)

    static func of(_ type: DataType) -> FloatFormat? {
        switch type {
        case .float16: return f16
        case .bfloat16: return bf16
        case .float8e4m3: return e4m3
        case .float8e5m2: return e5m2
        case .float32: return f32
        case .float64: return f64
        default: return nil
        }
    }

    @inline(__always)
    func magnitude(_ bits: UInt64) -> UInt64 { bits & (signBit &- 1) }

    @inline(__always)
    func isNaN(_ bits: UInt64) -> Bool {
        let m = magnitude(bits)
        if let inf { return m > inf }
        return m == signBit &- 1
    }

    /// Total-order key of a non-NaN encoding (-0 and +0 both map to 0).
    @inline(__always)
    func key(_ bits: UInt64) -> Int64 {
        let m = Int64(truncatingIfNeeded: magnitude(bits))
        return bits & signBit != 0 ? -m : m
    }

    /// A random encoding that is not NaN (NaNs get the top exponent bit cleared).
    @inline(__always)
    func randomFinite(_ h: UInt64) -> UInt64 {
        var bits = bytes == 8 ? h : h & ((1 << UInt64(bytes * 8)) &- 1)
        if isNaN(bits) { bits ^= 1 << UInt64(manBits + expBits - 1) }
        return bits
    }

    /// `x` rounded to nearest even; overflow gives ±inf (or ±max for e4m3).
    func encode(_ x: Double) -> UInt64 {
        if x.isNaN { return nan }
        let sign: UInt64 = x.sign == .minus ? signBit : 0
        let a = x.magnitude
        let overflow = sign | (inf ?? maxFinite)
        if a == 0 { return sign }
        if a.isInfinite { return overflow }
        let minExp = 1 - bias
        let e = Swift.max(Int(a.exponent), minExp)
        if e > bias + 2 { return overflow }
        // a / 2^(e - manBits) is exact in Double; the rounded quotient is the significand in
        // units of the format's ulp at exponent e (subnormals included, carries roll over).
        let n = (a / Double(sign: .plus, exponent: e - manBits, significand: 1)).rounded(.toNearestOrEven)
        let mag = UInt64(e - minExp) << UInt64(manBits) + UInt64(n)
        return mag > maxFinite ? overflow : sign | mag
    }

    /// Equal, both zero, both NaN, or at most `tolerance` encodings apart (across zero too).
    @inline(__always)
    func close(_ g: UInt64, _ w: UInt64, tolerance: UInt64) -> Bool {
        if g == w { return true }
        let gn = isNaN(g), wn = isNaN(w)
        if gn || wn { return gn && wn }
        let mg = magnitude(g), mw = magnitude(w)
        if (g ^ w) & signBit == 0 {
            return (mg > mw ? mg - mw : mw - mg) <= tolerance
        }
        return mg <= tolerance && mw <= tolerance && mg + mw <= tolerance
    }
}

/// Ranks `r` with `(r >> shift) & mask == (index + seed) & mask` are active at `index`.
private struct RankGroups {
    let shift: Int
    let mask: UInt64

    @inline(__always)
    func active(rank: Int, index: Int, seed: UInt64) -> Bool {
        (UInt64(truncatingIfNeeded: rank) >> UInt64(shift)) & mask
            == (UInt64(truncatingIfNeeded: index) &+ seed) & mask
    }
}

/// How values are drawn for one floating-point type (see `Pattern`).
private struct FloatRule {
    let format: FloatFormat
    let sumRange: Int
    let sumScale: Double
    let sumGroups: RankGroups?
    /// nil: every rank has j = ±1 with probability 1/8.
    let prodGroups: RankGroups?
    /// Encodings of k * sumScale for k in -sumRange...sumRange (empty if sumRange is large).
    let sumTable: [UInt64]

    init(_ format: FloatFormat, sumRange: Int, sumScale: Double, sumGroups: RankGroups?, prodGroups: RankGroups?) {
        self.format = format
        self.sumRange = sumRange
        self.sumScale = sumScale
        self.sumGroups = sumGroups
        self.prodGroups = prodGroups
        sumTable = sumRange <= 64 ? (-sumRange...sumRange).map { format.encode(Double($0) * sumScale) } : []
    }

    static let f32 = FloatRule(.f32, sumRange: 512, sumScale: 0.125, sumGroups: nil, prodGroups: nil)
    static let f64 = FloatRule(.f64, sumRange: 1 << 20, sumScale: 0x1p-10, sumGroups: nil, prodGroups: nil)
    static let f16 = FloatRule(.f16, sumRange: 32, sumScale: 0.5, sumGroups: nil,
                               prodGroups: RankGroups(shift: 3, mask: 7))
    static let bf16 = FloatRule(.bf16, sumRange: 4, sumScale: 0.25, sumGroups: nil, prodGroups: nil)
    static let e4m3 = FloatRule(.e4m3, sumRange: 1, sumScale: 0.5, sumGroups: RankGroups(shift: 4, mask: 3),
                                prodGroups: RankGroups(shift: 3, mask: 7))
    static let e5m2 = FloatRule(.e5m2, sumRange: 1, sumScale: 1, sumGroups: RankGroups(shift: 3, mask: 7),
                                prodGroups: RankGroups(shift: 3, mask: 7))

    static func of(_ type: DataType) -> FloatRule? {
        switch type {
        case .float16: return f16
        case .bfloat16: return bf16
        case .float8e4m3: return e4m3
        case .float8e5m2: return e5m2
        case .float32: return f32
        case .float64: return f64
        default: return nil
        }
    }

    /// The sum value of one rank at one index, in units of `sumScale`.
    @inline(__always)
    func sumUnits(_ h: UInt64, rank: Int, index: Int, seed: UInt64) -> Int {
        if let g = sumGroups, !g.active(rank: rank, index: index, seed: seed) { return 0 }
        return uniform(h, 2 &* sumRange &+ 1) &- sumRange
    }

    @inline(__always)
    func sumBits(_ units: Int) -> UInt64 {
        if !sumTable.isEmpty { return sumTable[units &+ sumRange] }
        return encodeExact(Double(units) * sumScale)
    }

    /// The prod factor of one rank at one index: (-1)^negative * 2^exponent.
    @inline(__always)
    func prodFactor(_ h: UInt64, rank: Int, index: Int, seed: UInt64) -> (negative: Bool, exponent: Int) {
        let negative = h & 1 != 0
        if let g = prodGroups {
            guard g.active(rank: rank, index: index, seed: seed) else { return (negative, 0) }
            return (negative, uniform(h, 3) &- 1)
        }
        guard (h >> 8) & 7 == 0 else { return (negative, 0) }
        return (negative, (h >> 12) & 1 == 0 ? 1 : -1)
    }

    @inline(__always)
    func prodBits(negative: Bool, exponent: Int) -> UInt64 {
        encodeExact(Double(sign: negative ? .minus : .plus, exponent: exponent, significand: 1))
    }

    /// Encoding of a value known to be representable (fast paths for float32/float64).
    @inline(__always)
    func encodeExact(_ x: Double) -> UInt64 {
        switch format.bytes {
        case 8: return x.bitPattern
        case 4: return UInt64(Float(x).bitPattern)
        default: return format.encode(x)
        }
    }
}

// MARK: - Loops

@inline(__always)
private func writeBits(_ buf: UnsafeMutableRawPointer, count: Int, bytes: Int, _ value: (Int) -> UInt64) {
    switch bytes {
    case 1:
        for i in 0..<count { buf.storeBytes(of: UInt8(truncatingIfNeeded: value(i)), toByteOffset: i, as: UInt8.self) }
    case 2:
        for i in 0..<count { buf.storeBytes(of: UInt16(truncatingIfNeeded: value(i)), toByteOffset: 2 &* i, as: UInt16.self) }
    case 4:
        for i in 0..<count { buf.storeBytes(of: UInt32(truncatingIfNeeded: value(i)), toByteOffset: 4 &* i, as: UInt32.self) }
    default:
        for i in 0..<count { buf.storeBytes(of: value(i), toByteOffset: 8 &* i, as: UInt64.self) }
    }
}

@inline(__always)
private func countMismatches(_ got: UnsafeRawPointer, _ want: UnsafeRawPointer, count: Int, bytes: Int,
                             _ differ: (UInt64, UInt64) -> Bool) -> Int {
    var wrong = 0
    switch bytes {
    case 1:
        for i in 0..<count {
            let g = got.load(fromByteOffset: i, as: UInt8.self), w = want.load(fromByteOffset: i, as: UInt8.self)
            if g != w && differ(UInt64(g), UInt64(w)) { wrong += 1 }
        }
    case 2:
        for i in 0..<count {
            let g = got.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self)
            let w = want.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self)
            if g != w && differ(UInt64(g), UInt64(w)) { wrong += 1 }
        }
    case 4:
        for i in 0..<count {
            let g = got.loadUnaligned(fromByteOffset: 4 &* i, as: UInt32.self)
            let w = want.loadUnaligned(fromByteOffset: 4 &* i, as: UInt32.self)
            if g != w && differ(UInt64(g), UInt64(w)) { wrong += 1 }
        }
    default:
        for i in 0..<count {
            let g = got.loadUnaligned(fromByteOffset: 8 &* i, as: UInt64.self)
            let w = want.loadUnaligned(fromByteOffset: 8 &* i, as: UInt64.self)
            if g != w && differ(g, w) { wrong += 1 }
        }
    }
    return wrong
}

private let intProdFactors: [Int64] = [1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 3, -3, 5, -5, 2, -1]

@inline(__always)
private func intValue<T: FixedWidthInteger>(_ h: UInt64, _ op: ReduceOp, _: T.Type) -> T {
    op == .prod ? T(truncatingIfNeeded: intProdFactors[Int(h & 15)]) : T(truncatingIfNeeded: h)
}

private func fillInts<T: FixedWidthInteger>(_ buf: UnsafeMutableRawPointer, _ count: Int, _ op: ReduceOp,
                                            _ stream: RankStream, _ offset: Int, _: T.Type) {
    let s = MemoryLayout<T>.stride
    for i in 0..<count {
        buf.storeBytes(of: intValue(stream.hash(offset &+ i), op, T.self), toByteOffset: i &* s, as: T.self)
    }
}

private func expectedInts<T: FixedWidthInteger>(_ buf: UnsafeMutableRawPointer, _ count: Int, _ op: ReduceOp,
                                                _ st: UnsafeBufferPointer<RankStream>, _ offset: Int, _: T.Type) {
    let s = MemoryLayout<T>.stride
    let n = st.count
    for i in 0..<count {
        let index = offset &+ i
        var acc = intValue(st[0].hash(index), op, T.self)
        switch op {
        case .sum, .avg:
            for r in 1..<n { acc &+= intValue(st[r].hash(index), op, T.self) }
            if op == .avg && n > 1 {
                acc = T.isSigned
                    ? T(truncatingIfNeeded: Int64(truncatingIfNeeded: acc) / Int64(n))
                    : T(truncatingIfNeeded: UInt64(truncatingIfNeeded: acc) / UInt64(n))
            }
        case .prod:
            for r in 1..<n { acc &*= intValue(st[r].hash(index), op, T.self) }
        case .max:
            for r in 1..<n { acc = Swift.max(acc, intValue(st[r].hash(index), op, T.self)) }
        case .min:
            for r in 1..<n { acc = Swift.min(acc, intValue(st[r].hash(index), op, T.self)) }
        }
        buf.storeBytes(of: acc, toByteOffset: i &* s, as: T.self)
    }
}

private func expectedFloats(_ buf: UnsafeMutableRawPointer, _ count: Int, _ op: ReduceOp, _ rule: FloatRule,
                            _ st: UnsafeBufferPointer<RankStream>, _ seed: UInt64, _ offset: Int) {
    let n = st.count
    let format = rule.format
    switch op {
    case .sum, .avg:
        let average = op == .avg
        writeBits(buf, count: count, bytes: format.bytes) { i in
            let index = offset &+ i
            var units = 0
            for r in 0..<n { units &+= rule.sumUnits(st[r].hash(index), rank: r, index: index, seed: seed) }
            let sum = Double(units) * rule.sumScale
            return average ? format.encode(sum / Double(n)) : format.encode(sum)
        }
    case .prod:
        writeBits(buf, count: count, bytes: format.bytes) { i in
            let index = offset &+ i
            var negative = false
            var exponent = 0
            for r in 0..<n {
                let f = rule.prodFactor(st[r].hash(index), rank: r, index: index, seed: seed)
                negative = negative != f.negative
                exponent &+= f.exponent
            }
            return format.encode(Double(sign: negative ? .minus : .plus, exponent: exponent, significand: 1))
        }
    case .max, .min:
        let wantMax = op == .max
        writeBits(buf, count: count, bytes: format.bytes) { i in
            let index = offset &+ i
            var best = format.randomFinite(st[0].hash(index))
            var bestKey = format.key(best)
            for r in 1..<n {
                let bits = format.randomFinite(st[r].hash(index))
                let k = format.key(bits)
                if wantMax ? k > bestKey : k < bestKey {
                    best = bits
                    bestKey = k
                }
            }
            return best
        }
    }
}
