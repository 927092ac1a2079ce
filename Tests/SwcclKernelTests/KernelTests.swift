import SwiftCCL
import SwcclVerify
import XCTest

/// splitmix64, for reproducible random orders.
private struct TestRandom {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A buffer of `count` elements at `misalign` bytes past a 64-byte boundary, with guard bytes on
/// both sides.
private final class TestBuffer {
    static let guardBytes = 16
    static let guardValue: UInt8 = 0xA5
    let raw: UnsafeMutableRawPointer
    let ptr: UnsafeMutableRawPointer
    let bytes: Int

    init(count: Int, type: DataType, misalign: Int) {
        bytes = count * type.size
        raw = .allocate(byteCount: bytes + 2 * Self.guardBytes + 64, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: Self.guardValue, count: bytes + 2 * Self.guardBytes + 64)
        ptr = raw + 64 + misalign
    }

    deinit { raw.deallocate() }

    var guardsIntact: Bool {
        for i in 1...Self.guardBytes {
            if ptr.load(fromByteOffset: -i, as: UInt8.self) != Self.guardValue { return false }
            if ptr.load(fromByteOffset: bytes + i - 1, as: UInt8.self) != Self.guardValue { return false }
        }
        return true
    }
}

final class KernelTests: XCTestCase {
    /// Allreduce of `nranks` buffers in memory: fill, fold pairwise in a random tree with random
    /// aliasing (dst == a, dst == b, separate dst), divide for avg; returns the wrong-element count.
    private func simulate(type: DataType, op: ReduceOp, nranks: Int, count: Int, misalign: Int, seed: UInt64,
                          rng: inout TestRandom, file: StaticString = #filePath, line: UInt = #line) -> Int {
        var pool: [TestBuffer] = (0..<nranks).map { rank in
            let b = TestBuffer(count: count, type: type, misalign: misalign)
            Pattern.fill(b.ptr, count: count, type: type, op: op, seed: seed, rank: rank)
            return b
        }
        while pool.count > 1 {
            let i = rng.below(pool.count)
            var j = rng.below(pool.count - 1)
            if j >= i { j += 1 }
            let a = pool[i], b = pool[j]
            let result: TestBuffer
            switch rng.below(3) {
            case 0: result = a
            case 1: result = b
            default: result = TestBuffer(count: count, type: type, misalign: misalign)
            }
            ReductionKernels.reduce(dst: result.ptr, a: a.ptr, b: b.ptr, count: count, type: type, op: op)
            pool[i] = result
            pool.remove(at: j)
        }
        let got = pool[0]
        if op == .avg { ReductionKernels.divide(got.ptr, count: count, type: type, by: nranks) }
        XCTAssertTrue(got.guardsIntact, "\(type) \(op) wrote outside the buffer", file: file, line: line)
        let want = TestBuffer(count: count, type: type, misalign: 0)
        Pattern.expected(want.ptr, count: count, type: type, op: op, seed: seed, nranks: nranks)
        return Pattern.countWrong(got.ptr, want.ptr, count: count, type: type, op: op)
    }

    func testEveryTypeAndOpAgainstPattern() {
        var rng = TestRandom(state: 42)
        var runs = 0
        for type in DataType.allCases {
            for op in ReduceOp.allCases {
                for nranks in 1...9 {
                    for count in [0, 1, 7, 1000, 4099] {
                        for misalign in [0, 1] {
                            let seed = rng.next()
                            let wrong = simulate(type: type, op: op, nranks: nranks, count: count,
                                                 misalign: misalign, seed: seed, rng: &rng)
                            XCTAssertEqual(wrong, 0, "\(type) \(op) nranks=\(nranks) count=\(count) misalign=\(misalign) seed=\(seed)")
                            runs += 1
                        }
                    }
                }
            }
        }
        XCTAssertEqual(runs, 12 * 5 * 9 * 5 * 2)
    }

    /// The patterns are exact for up to 64 ranks whatever the reduction tree.
    func testSixtyFourRanks() {
        var rng = TestRandom(state: 7)
        for type in DataType.allCases {
            for op in ReduceOp.allCases {
                for nranks in [16, 33, 64] {
                    let seed = rng.next()
                    let wrong = simulate(type: type, op: op, nranks: nranks, count: 2051, misalign: nranks & 1,
                                         seed: seed, rng: &rng)
                    XCTAssertEqual(wrong, 0, "\(type) \(op) nranks=\(nranks) seed=\(seed)")
                }
            }
        }
    }

    /// fp8 sums must exercise non-zero combinations, not only zeros.
    func testPatternsAreNotTrivial() {
        for type in DataType.allCases {
            for op in ReduceOp.allCases {
                let count = 4096
                let a = TestBuffer(count: count, type: type, misalign: 0)
                let b = TestBuffer(count: count, type: type, misalign: 0)
                Pattern.fill(a.ptr, count: count, type: type, op: op, seed: 1, rank: 0)
                Pattern.fill(b.ptr, count: count, type: type, op: op, seed: 1, rank: 1)
                let s = type.size
                var bothNonZero = 0, differ = 0
                for i in 0..<count {
                    var x: UInt64 = 0, y: UInt64 = 0
                    for k in 0..<s {
                        x |= UInt64(a.ptr.load(fromByteOffset: i * s + k, as: UInt8.self)) << UInt64(8 * k)
                        y |= UInt64(b.ptr.load(fromByteOffset: i * s + k, as: UInt8.self)) << UInt64(8 * k)
                    }
                    let magMask: UInt64 = type.isFloatingPoint ? (s == 8 ? UInt64.max >> 1 : (1 << UInt64(8 * s - 1)) - 1) : UInt64.max
                    if x & magMask != 0 && y & magMask != 0 { bothNonZero += 1 }
                    if x != y { differ += 1 }
                }
                // e5m2 sum: 1/8 of the indices are active, 2/3 of those are non-zero per rank (~4.4 %).
                XCTAssertGreaterThan(bothNonZero, count / 40, "\(type) \(op)")
                XCTAssertGreaterThan(differ, count / 20, "\(type) \(op)")
            }
        }
    }

    func testFillIsAFunctionOfTheIndex() {
        for type in DataType.allCases {
            for op in ReduceOp.allCases {
                let whole = TestBuffer(count: 100, type: type, misalign: 0)
                let part = TestBuffer(count: 60, type: type, misalign: 1)
                Pattern.fill(whole.ptr, count: 100, type: type, op: op, seed: 9, rank: 3)
                Pattern.fill(part.ptr, count: 60, type: type, op: op, seed: 9, rank: 3, offset: 40)
                XCTAssertEqual(Pattern.countWrong(whole.ptr + 40 * type.size, part.ptr, count: 60, type: type, op: .sum), 0)
                let e1 = TestBuffer(count: 100, type: type, misalign: 0)
                let e2 = TestBuffer(count: 60, type: type, misalign: 0)
                Pattern.expected(e1.ptr, count: 100, type: type, op: op, seed: 9, nranks: 5)
                Pattern.expected(e2.ptr, count: 60, type: type, op: op, seed: 9, nranks: 5, offset: 40)
                XCTAssertEqual(Pattern.countWrong(e1.ptr + 40 * type.size, e2.ptr, count: 60, type: type, op: .sum), 0)
                // another rank or seed gives other data
                Pattern.fill(part.ptr, count: 60, type: type, op: op, seed: 9, rank: 4, offset: 40)
                XCTAssertGreaterThan(Pattern.countWrong(whole.ptr + 40 * type.size, part.ptr, count: 60, type: type, op: .sum), 0)
            }
        }
    }

    func testCountWrongDetectsErrors() {
        for type in DataType.allCases {
            for op in ReduceOp.allCases {
                let count = 50
                let want = TestBuffer(count: count, type: type, misalign: 0)
                let got = TestBuffer(count: count, type: type, misalign: 1)
                Pattern.expected(want.ptr, count: count, type: type, op: op, seed: 3, nranks: 4)
                got.ptr.copyMemory(from: want.ptr, byteCount: count * type.size)
                XCTAssertEqual(Pattern.countWrong(got.ptr, want.ptr, count: count, type: type, op: op), 0)
                // flip the second-highest bit (top exponent bit for floats) of elements 3 and 17
                for i in [3, 17] {
                    let at = i * type.size + type.size - 1
                    got.ptr.storeBytes(of: got.ptr.load(fromByteOffset: at, as: UInt8.self) ^ 0x40, toByteOffset: at, as: UInt8.self)
                }
                XCTAssertEqual(Pattern.countWrong(got.ptr, want.ptr, count: count, type: type, op: op), 2, "\(type) \(op)")
            }
        }
        // ulp tolerance for float avg only; +0 == -0
        var a: [Float] = [1, 0, 2], b: [Float] = [Float(1).nextUp.nextUp, -0.0, Float(2).nextUp.nextUp.nextUp]
        XCTAssertEqual(Pattern.countWrong(&a, &b, count: 3, type: .float32, op: .avg), 1)
        XCTAssertEqual(Pattern.countWrong(&a, &b, count: 3, type: .float32, op: .sum), 2)
        var h: [UInt16] = [0x0001, 0x3C00], g: [UInt16] = [0x8001, 0x3C01]  // across zero: 2 ulp
        XCTAssertEqual(Pattern.countWrong(&h, &g, count: 2, type: .float16, op: .avg), 0)
        XCTAssertEqual(Pattern.countWrong(&h, &g, count: 2, type: .float16, op: .max), 2)
    }

    func testKernelSemantics() {
        func run<T>(_ type: DataType, _ op: ReduceOp, _ a: [T], _ b: [T]) -> [T] {
            var d = a
            d.withUnsafeMutableBytes { dp in
                a.withUnsafeBytes { ap in
                    b.withUnsafeBytes { bp in
                        ReductionKernels.reduce(dst: dp.baseAddress!, a: ap.baseAddress!, b: bp.baseAddress!,
                                                count: a.count, type: type, op: op)
                    }
                }
            }
            return d
        }
        XCTAssertEqual(run(.int8, .sum, [Int8]([127, -128]), [1, -1]), [-128, 127])
        XCTAssertEqual(run(.uint8, .prod, [UInt8]([16, 3]), [16, 5]), [0, 15])
        XCTAssertEqual(run(.int32, .max, [Int32]([-5, 7]), [3, -9]), [3, 7])
        XCTAssertEqual(run(.uint64, .min, [UInt64]([.max, 1]), [2, 0]), [2, 0])
        XCTAssertEqual(run(.int64, .avg, [Int64]([.max, 1]), [1, 2]), [.min, 3])
        XCTAssertEqual(run(.float32, .sum, [Float]([1.5, -2]), [2.25, 2]), [3.75, 0])
        XCTAssertEqual(run(.float64, .prod, [Double]([3, -0.5]), [0.25, 8]), [0.75, -4])
        XCTAssertEqual(run(.float16, .sum, [UInt16]([0x3C00, 0x7BFF]), [0x4000, 0x7BFF]), [0x4200, 0x7C00])
        XCTAssertEqual(run(.bfloat16, .max, [UInt16]([0x3F80, 0xBF80]), [0x4000, 0xC000]), [0x4000, 0xBF80])
        XCTAssertEqual(run(.float8e4m3, .sum, [UInt8]([0x38, 0x7E]), [0x38, 0x7E]), [0x40, 0x7E])  // 448+448 saturates
        XCTAssertEqual(run(.float8e5m2, .min, [UInt8]([0x3C, 0xFC]), [0x40, 0x7C]), [0x3C, 0xFC])   // -inf

        // in place, dst == a == b
        var x: [Float] = [1, 2, 3]
        x.withUnsafeMutableBytes { p in
            ReductionKernels.reduce(dst: p.baseAddress!, a: p.baseAddress!, b: p.baseAddress!, count: 3, type: .float32, op: .sum)
        }
        XCTAssertEqual(x, [2, 4, 6])

        // avg finalisation
        var ints: [Int8] = [-7, 7, 100]
        ints.withUnsafeMutableBytes { ReductionKernels.divide($0.baseAddress!, count: 3, type: .int8, by: 2) }
        XCTAssertEqual(ints, [-3, 3, 50])
        var bytes: [UInt8] = [255, 10]
        bytes.withUnsafeMutableBytes { ReductionKernels.divide($0.baseAddress!, count: 2, type: .uint8, by: 300) }
        XCTAssertEqual(bytes, [0, 0])
        var halves: [UInt16] = [0x4200, 0x3C00]  // 3, 1
        halves.withUnsafeMutableBytes { ReductionKernels.divide($0.baseAddress!, count: 2, type: .float16, by: 2) }
        XCTAssertEqual(halves, [0x3E00, 0x3800])
        var doubles: [Double] = [1, 3]
        doubles.withUnsafeMutableBytes { ReductionKernels.divide($0.baseAddress!, count: 2, type: .float64, by: 3) }
        XCTAssertEqual(doubles, [1.0 / 3.0, 1])
        // count 0 and negative counts are no-ops
        x.withUnsafeMutableBytes { p in
            ReductionKernels.reduce(dst: p.baseAddress!, a: p.baseAddress!, b: p.baseAddress!, count: -1,
                                    type: .float16, op: .sum)
            ReductionKernels.divide(p.baseAddress!, count: -5, type: .float8e4m3, by: 3)
        }
        XCTAssertEqual(x, [2, 4, 6])
    }

    /// expected() for 1 Mi elements and 64 ranks (timing printed, not asserted: shared machine).
    func testExpectedSpeed() {
        let count = 1 << 20
        for type in [DataType.float32, .float16, .int32] {
            let buf = TestBuffer(count: count, type: type, misalign: 0)
            let clock = ContinuousClock()
            let t = clock.measure {
                Pattern.expected(buf.ptr, count: count, type: type, op: .sum, seed: 5, nranks: 64)
            }
            let f = clock.measure {
                Pattern.fill(buf.ptr, count: count, type: type, op: .sum, seed: 5, rank: 3)
            }
            print("Pattern.expected \(type) sum 1 Mi x 64 ranks: \(t); fill 1 Mi: \(f)")
        }
    }
}
