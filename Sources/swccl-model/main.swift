// swccl-model — the algorithm-selection cost model as a simulator: for rank counts and sizes far
// beyond one machine, which algorithm the library would pick and the busbw the model predicts.
// The same `CostModel` code the library runs at every call; see docs/SCALING.md.
import Glibc
import SwiftCCL

func fail(_ message: String) -> Never {
    let b = Array("swccl-model: \(message)\n".utf8)
    _ = b.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

let usage = """
usage: swccl-model [options]                 tables of the winning algorithm per rank count and size
       swccl-model --choose COLL NRANKS BYTES   the algorithm the library picks (one word)
       swccl-model --algorithms COLL          the algorithms of a collective
options:
  -c, --collective C    all_reduce all_gather reduce_scatter broadcast reduce alltoall | all (default all_reduce)
  --ranks LIST          comma-separated rank counts (default 2,4,8,...,4096)
  -b, --minbytes B      smallest size (default 8)
  -e, --maxbytes B      largest size (default 1G)
  -f, --stepfactor F    size multiplier (default 8)
  --transport T         whose advertised figures to use (default tcp)
  --alpha-us A          latency per step in µs (default: the transport's)
  --bw-gbs B            link bandwidth in GB/s (default: the transport's)
  --reduce-gbs G        reduction throughput in GB/s (default: the library's)
  --overlap             pipelined algorithms overlap transfers with reductions (NIC or DMA moves data)
  --markdown            markdown tables (for docs/SCALING.md)
  --matrix              one markdown table: sizes down, rank counts across, "winner busbw" in each cell
  --all-algorithms      also the predicted time of every algorithm
"""

func parseBytes(_ s: String) -> Int? {
    var digits = Substring(s.lowercased()), shift = 0
    if let last = digits.last, let k = ["k": 10, "m": 20, "g": 30][String(last)] { shift = k; digits = digits.dropLast() }
    guard let v = Int(digits), v >= 0 else { return nil }
    return v << shift
}

func fmt(_ v: Double, _ d: Int) -> String {
    var s = 1.0
    for _ in 0..<d { s *= 10 }
    let r = (v * s).rounded() / s
    var t = "\(r)"
    if let dot = t.firstIndex(of: ".") {
        let decimals = t.distance(from: dot, to: t.endIndex) - 1
        if decimals < d { t += String(repeating: "0", count: d - decimals) }
    }
    return t
}

func kind(_ name: String) -> CollectiveKind {
    guard let k = CollectiveKind(name: name) else { fail("unknown collective \(name)") }
    return k
}

var args = Array(CommandLine.arguments.dropFirst())
var collectives: [CollectiveKind] = [.allreduce]
var ranks = (1...12).map { 1 << $0 }
var minBytes = 8, maxBytes = 1 << 30
var factor = 8
var transport = "tcp"
var alphaUs: Double?, bwGBs: Double?, reduceGBs: Double?
var markdown = false, everyAlgorithm = false, overlap = false, matrix = false

if args.first == "--algorithms" {
    guard args.count == 2 else { fail("--algorithms COLL") }
    print(kind(args[1]).algorithms.map(\.rawValue).joined(separator: " "))
    exit(0)
}
var choose: (CollectiveKind, Int, Int)?
var i = 0
@MainActor func value() -> String {
    i += 1
    guard i < args.count else { fail("\(args[i - 1]) needs a value") }
    return args[i]
}
while i < args.count {
    switch args[i] {
    case "-h", "--help": print(usage); exit(0)
    case "--choose":
        guard i + 3 < args.count, let n = Int(args[i + 2]), n >= 1, let b = parseBytes(args[i + 3]) else { fail("--choose COLL NRANKS BYTES") }
        choose = (kind(args[i + 1]), n, b)
        i += 3
    case "-c", "--collective":
        let v = value()
        collectives = v == "all" ? CollectiveKind.allCases.filter { $0.algorithms.count > 1 } : [kind(v)]
    case "--ranks":
        let v = value()
        ranks = v.split(separator: ",").map { guard let n = Int($0), n >= 1 else { fail("bad rank count \($0)") }; return n }
    case "-b", "--minbytes": guard let b = parseBytes(value()) else { fail("bad size") }; minBytes = max(b, 1)
    case "-e", "--maxbytes": guard let b = parseBytes(value()) else { fail("bad size") }; maxBytes = b
    case "-f", "--stepfactor": guard let f = Int(value()), f >= 2 else { fail("step factor must be >= 2") }; factor = f
    case "--transport": transport = value()
    case "--alpha-us": alphaUs = Double(value())
    case "--bw-gbs": bwGBs = Double(value())
    case "--reduce-gbs": reduceGBs = Double(value())
    case "--markdown": markdown = true
    case "--matrix": matrix = true
    case "--overlap": overlap = true
    case "--all-algorithms": everyAlgorithm = true
    default: fail("unknown option \(args[i])\n\(usage)")
    }
    i += 1
}

guard var model = CostModel.named(transport) else { fail("no cost figures for transport \(transport)") }
if let a = alphaUs { model.alpha = a * 1e-6 }
if let b = bwGBs { model.beta = 1 / (b * 1e9) }
if let g = reduceGBs { model.gamma = 1 / (g * 1e9) }
if overlap { model.overlapsReduction = true }

if let (k, n, b) = choose {
    // The library's own rule, including SWCCL_ALGO and the SWCCL_MODEL_* knobs of this environment.
    print(CostModel.selectionForTesting(k, bytes: b, ranks: n, transport: transport))
    exit(0)
}

if matrix {
    for k in collectives {
        print("### \(k.rawValue): winner and predicted busbw (GB/s); model: \(model)\n")
        print("| size |" + ranks.map { " \($0) ranks |" }.joined())
        print("|---:|" + ranks.map { _ in "---|" }.joined())
        var b = minBytes
        while b <= maxBytes {
            var row = "| \(formatBytes(b)) |"
            for n in ranks {
                let w = model.best(k, bytes: b, ranks: n)
                let t = model.predict(k, w, bytes: b, ranks: n) ?? 0
                row += " \(w.rawValue) \(fmt(t > 0 ? Double(b) / t / 1e9 * k.busFactor(n) : 0, 2)) |"
            }
            print(row)
            if b > maxBytes / factor { break }
            b *= factor
        }
        print("")
    }
    exit(0)
}

for k in collectives {
    let algos = k.algorithms
    let heading = "\(k.rawValue), model: \(model)"
    if markdown { print("### \(heading)\n") } else { print("# \(heading)") }
    for n in ranks {
        if markdown {
            var h = "| \(n) ranks | winner | time µs | busbw GB/s |"
            var sep = "|---:|---|---:|---:|"
            if everyAlgorithm { for a in algos { h += " \(a.rawValue) µs |"; sep += "---:|" } }
            print(h); print(sep)
        } else {
            print("# \(n) ranks\n#       size  winner        time(us)  busbw(GB/s)" + (everyAlgorithm ? algos.map { "  " + $0.rawValue }.joined() : ""))
        }
        var b = minBytes
        while b <= maxBytes {
            let w = model.best(k, bytes: b, ranks: n)
            let t = model.predict(k, w, bytes: b, ranks: n) ?? 0
            let busbw = t > 0 ? Double(b) / t / 1e9 * k.busFactor(n) : 0
            let others = algos.map { model.predict(k, $0, bytes: b, ranks: n).map { fmt($0 * 1e6, 1) } ?? "-" }
            if markdown {
                print("| \(formatBytes(b)) | \(w.rawValue) | \(fmt(t * 1e6, 1)) | \(fmt(busbw, 2)) |" + (everyAlgorithm ? others.map { " \($0) |" }.joined() : ""))
            } else {
                let cols = [formatBytes(b), w.rawValue, fmt(t * 1e6, 1), fmt(busbw, 2)]
                print(" " + cols.enumerated().map { String(repeating: " ", count: max(0, [11, 14, 14, 12][$0.offset] - $0.element.count)) + $0.element }.joined(separator: " ")
                      + (everyAlgorithm ? others.map { "  " + $0 }.joined() : ""))
            }
            if b > maxBytes / factor { break }
            b *= factor
        }
        print("")
    }
}
