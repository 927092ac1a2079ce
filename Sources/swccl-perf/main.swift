// swccl-perf: the bandwidth benchmark, read like nccl-tests (see docs/PERFORMANCE.md and the spec in
// shared/spec/swccl-perf.md). Starts its own local ranks as processes unless a launcher started it.
import Glibc
import Synchronization
import SwiftCCL
import SwcclVerify

func eprint(_ s: String) { var b = Array(s.utf8); _ = b.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) } }

/// The collectives swccl-perf measures, with nccl-tests' size conventions and bus-bandwidth factors.
enum Collective: String {
    case allReduce = "all_reduce", allGather = "all_gather", reduceScatter = "reduce_scatter", broadcast, reduce
    case allToAll = "alltoall", sendRecv = "sendrecv", gather, scatter, barrier

    var reduces: Bool { self == .allReduce || self == .reduce || self == .reduceScatter }
    var rooted: Bool { self == .broadcast || self == .reduce || self == .gather || self == .scatter }
    var hasInPlace: Bool { self != .allToAll && self != .sendRecv && self != .barrier }
    /// Whether `size` is the whole array of n blocks (all-gather etc.) rather than one rank's buffer.
    var sizeIsTotal: Bool { [.allGather, .reduceScatter, .allToAll, .gather, .scatter].contains(self) }

    /// The library's name for this collective where it has a choice of algorithms.
    var library: CollectiveKind? {
        switch self {
        case .allReduce: .allreduce
        case .allGather: .allgather
        case .reduceScatter: .reducescatter
        case .broadcast: .broadcast
        case .reduce: .reduce
        case .allToAll: .alltoall
        default: nil
        }
    }

    func busFactor(_ n: Int) -> Double {
        switch self {
        case .allReduce: return n > 1 ? 2 * Double(n - 1) / Double(n) : 0
        case .allGather, .reduceScatter, .allToAll, .gather, .scatter: return Double(n - 1) / Double(n)
        case .broadcast, .reduce, .sendRecv: return 1
        case .barrier: return 0
        }
    }
}

extension String {
    var replacingUnderscores: String { String(filter { $0 != "_" }) == "allreduce" ? "all_reduce" : self }
}

struct Options {
    var collective = ""
    var kind = Collective.allReduce
    var np = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    var minBytes = 8
    var maxBytes = 64 << 20
    var stepFactor = 2.0
    var stepBytes = 0
    var iters = 20
    var warmup = 5
    var check = 1
    var types: [DataType] = [.float32]
    var ops: [ReduceOp] = [.sum]
    var root = 0
    var algo = "auto"
    var transport = "auto"
    var unalign = 0
    var jsonFile: String?
    var timeoutS = 0.0
    var plotFile: String?
    var compareFile: String?
    var title: String?
    /// Whether -np was given (a launcher ignores it, with a warning).
    var npGiven = false
    /// nccl-tests' -t (threads per process) and -g (GPUs per thread): t × g ranks.
    var threads: Int?
    var gpus: Int?
    /// nccl-tests' -m: operations per timed iteration, issued in one group.
    var aggIters = 1
    /// nccl-tests' -R: register the send and receive buffers with the communicator.
    var register = 0
    /// One line each for the header: flags accepted for nccl-tests' sake and what became of them.
    var notes: [String] = []
}

@MainActor func fail(_ message: String, code: Int32 = 2) -> Never {
    eprint("swccl-perf: \(message)\n")
    exit(code)
}

/// `-a`'s choices per collective, from the library's table of algorithms (`Algorithm.specs`), wrapped
/// under the option's text.
let algorithmChoices: String = {
    let items = [Collective.allReduce, .allGather, .reduceScatter, .broadcast, .reduce].compactMap { c -> String? in
        guard let k = c.library, k.algorithms.count > 1 else { return nil }
        return c.rawValue + " " + k.algorithms.map(\.rawValue).joined(separator: " ")
    }
    var lines: [String] = [], line = ""
    for (i, item) in items.enumerated() {
        let piece = item + (i + 1 < items.count ? ";" : "")
        if !line.isEmpty && line.count + 1 + piece.count > 76 { lines.append(line); line = "" }
        line += (line.isEmpty ? "" : " ") + piece
    }
    lines.append(line)
    return lines.map { String(repeating: " ", count: 24) + $0 }.joined(separator: "\n")
}()

let usage = """
usage: swccl-perf <collective> [options]
  collective: all_reduce | all_gather | reduce_scatter | broadcast | reduce | alltoall | sendrecv
              | gather | scatter | barrier
  -np N                 local ranks to start as processes (default: one per core); ignored (with a
                        warning) when a launcher started the process: srun, mpirun, torchrun, PMI
  -t, --nthreads N      nccl-tests' threads per process and GPUs per thread: without a launcher,
  -g, --ngpus N         t × g local ranks (as -np); under a launcher each process is one rank (1 only)
  -b, --minbytes SIZE   smallest size (default 8); K, M, G suffixes
  -e, --maxbytes SIZE   largest size (default 64M)
  -f, --stepfactor F    multiply size by F each step (default 2)
  -i, --stepbytes N     add N bytes each step instead
  -n, --iters N         timed iterations per size (default 20)
  -w, --warmup_iters N  untimed iterations first (default 5)
  -m, --agg_iters N     operations per timed iteration, issued in one group (default 1)
  -c, --check N         check results on N iterations (default 1; 0 disables: #wrong shows N/A)
  -d, --datatype T      int8 uint8 int32 uint32 int64 uint64 half float double bfloat16 f8e4m3 f8e5m2 | all
  -o, --op OP           sum prod min max avg | all
  -r, --root R          root rank (rooted collectives)
  -a, --algo A          auto (the cost model) or one of the collective's algorithms:
\(algorithmChoices)
  --transport T         auto (per pair: shm on one host, else ib where both have an RDMA port, else tcp), shm, ib, tcp
  -u, --unalign N       offset buffers by N elements
  -J, --output_file F   also write every row as JSON lines
  --plot F.svg          draw bus bandwidth against size (out-of-place) as an SVG chart
  --compare F.json      add the series of F (JSON lines: {"series":NAME,"size":B,"busbw":GBPS}, or
                        rows of another run's -J) to the chart
  --title T             the chart's title
  -T, --timeout S       fail if one size takes longer than S seconds, naming the stuck rank
  -R, --local_register N  1 or 2: register the send and receive buffers with the communicator first
  -z, --blocking N      accepted for nccl-tests' command lines, ignored: they mean nothing on CPU
  -G, --cudagraph N     (calls block until done, there are no CUDA graphs, times are host clock
  -C, --report_cputime N  times, ranks initialise in parallel); the header says so when one is not 0
  -p, --parallel_init N
  Long options also take the form --name=value. Each row ends with the algorithm that ran.
  --env                 list every SWCCL_* environment variable and exit
  --transports          list the transports this host offers (RDMA ports with their GIDs) and exit

       swccl-perf plot --compare F.json --plot F.svg [--title T]
                        draw the series of F.json only (no ranks are started)
"""

@MainActor func parseSize(_ s: String) -> Int? {
    var t = s.uppercased()
    var mult = 1
    if t.hasSuffix("B") { t.removeLast() }
    switch t.last {
    case "K": mult = 1 << 10; t.removeLast()
    case "M": mult = 1 << 20; t.removeLast()
    case "G": mult = 1 << 30; t.removeLast()
    default: break
    }
    guard let v = Int(t), v >= 0 else { return nil }
    return v * mult
}

/// The options that take a value, by every name (for `--name=value`).
let valueOptions: Set<String> = ["-np", "-b", "--minbytes", "-e", "--maxbytes", "-f", "--stepfactor", "-i", "--stepbytes",
    "-n", "--iters", "-w", "--warmup_iters", "-c", "--check", "-d", "--datatype", "-o", "--op", "-r", "--root",
    "-a", "--algo", "--transport", "-u", "--unalign", "-J", "--output_file", "-T", "--timeout", "--plot", "--compare",
    "--title", "-t", "--nthreads", "-g", "--ngpus", "-m", "--agg_iters", "-R", "--local_register", "-z", "--blocking",
    "-G", "--cudagraph", "-C", "--report_cputime", "-p", "--parallel_init"]

/// `--name=value` (and `-x=value`) as two arguments.
func splitEquals(_ args: [String]) -> [String] {
    var out: [String] = []
    for a in args {
        if a.hasPrefix("-"), let eq = a.firstIndex(of: "="), valueOptions.contains(String(a[..<eq])) {
            out.append(String(a[..<eq])); out.append(String(a[a.index(after: eq)...]))
        } else {
            out.append(a)
        }
    }
    return out
}

@MainActor func parseOptions(_ rawArgs: [String]) -> Options {
    let args = splitEquals(rawArgs)
    var o = Options()
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { fail("\(args[i - 1]) needs a value\n\(usage)") }
        return args[i]
    }
    func int(_ s: String) -> Int { guard let v = Int(s) else { fail("not a number: \(s)") }; return v }
    while i < args.count {
        let a = args[i]
        switch a {
        case "-h", "--help": print(usage); exit(0)
        case "--transports":
            for b in TransportRegistry.backends { print(b.summary()) }
            exit(0)
        case "--env":
            for k in Knobs.all { print("\(k.name)=\(k.currentText)    (default \(k.defaultText.isEmpty ? "unset" : k.defaultText)) \(k.help)") }
            exit(0)
        case "-np": o.np = int(value()); o.npGiven = true
        case "-t", "--nthreads": o.threads = int(value())
        case "-g", "--ngpus": o.gpus = int(value())
        case "-m", "--agg_iters": o.aggIters = int(value())
        case "-R", "--local_register": o.register = int(value())
        case "-z", "--blocking":
            let v = int(value())
            if v != 0 { o.notes.append("-z \(v) ignored: SwiftCCL's calls return once the operation is complete on the calling rank (always blocking)") }
        case "-G", "--cudagraph":
            let v = int(value())
            if v != 0 { o.notes.append("-G \(v) ignored: there are no CUDA graphs on CPU") }
        case "-C", "--report_cputime":
            let v = int(value())
            if v != 0 { o.notes.append("-C \(v) ignored: times are host (CPU) clock times already") }
        case "-p", "--parallel_init":
            let v = int(value())
            if v != 0 { o.notes.append("-p \(v) ignored: every rank is its own process and initialises in parallel already") }
        case "-b", "--minbytes": guard let v = parseSize(value()) else { fail("bad size") }; o.minBytes = v
        case "-e", "--maxbytes": guard let v = parseSize(value()) else { fail("bad size") }; o.maxBytes = v
        case "-f", "--stepfactor": guard let v = Double(value()), v > 1 else { fail("step factor must be > 1") }; o.stepFactor = v
        case "-i", "--stepbytes": guard let v = parseSize(value()), v > 0 else { fail("bad step") }; o.stepBytes = v
        case "-n", "--iters": o.iters = int(value())
        case "-w", "--warmup_iters": o.warmup = int(value())
        case "-c", "--check": o.check = int(value())
        case "-d", "--datatype":
            let v = value()
            if v == "all" { o.types = DataType.allCases } else {
                guard let t = DataType(name: v) ?? (v == "float16" ? .float16 : v == "float32" ? .float32 : v == "float64" ? .float64 : nil) else { fail("unknown datatype \(v)") }
                o.types = [t]
            }
        case "-o", "--op":
            let v = value()
            if v == "all" { o.ops = ReduceOp.allCases } else {
                guard let op = ReduceOp(name: v) else { fail("unknown op \(v)") }
                o.ops = [op]
            }
        case "-r", "--root": o.root = int(value())
        case "-a", "--algo": o.algo = value()
        case "--transport": o.transport = value()
        case "-u", "--unalign": o.unalign = int(value())
        case "-J", "--output_file": o.jsonFile = value()
        case "-T", "--timeout": guard let v = Double(value()), v > 0 else { fail("bad timeout") }; o.timeoutS = v
        case "--plot": o.plotFile = value()
        case "--compare": o.compareFile = value()
        case "--title": o.title = value()
        default:
            if a.hasPrefix("-") { fail("unknown option \(a)\n\(usage)") }
            guard o.collective.isEmpty else { fail("unexpected argument \(a)") }
            o.collective = a
        }
        i += 1
    }
    guard !o.collective.isEmpty else { fail("which collective?\n\(usage)") }
    if o.collective == "plot" {
        guard let out = o.plotFile, let input = o.compareFile else { fail("plot needs --compare F.json and --plot F.svg") }
        do {
            let series = try readSeries(input)
            guard !series.isEmpty else { fail("\(input) holds no points") }
            guard writeFile(out, svgChart(title: o.title ?? "bus bandwidth", series: series)) else { fail("cannot write \(out)") }
        } catch { fail("\(error)") }
        exit(0)
    }
    guard let c = Collective(rawValue: o.collective) ?? Collective(rawValue: o.collective.replacingUnderscores) else {
        fail("unknown collective \(o.collective)\n\(usage)")
    }
    o.kind = c
    if !c.reduces { o.ops = [.sum] }
    guard o.np >= 1 else { fail("-np must be at least 1") }
    if let t = o.threads, t < 1 { fail("-t (threads per process) must be at least 1, not \(t)") }
    if let g = o.gpus, g < 1 { fail("-g (GPUs per thread) must be at least 1, not \(g)") }
    guard o.aggIters >= 1 else { fail("-m (operations per timed iteration) must be at least 1, not \(o.aggIters)") }
    guard (0...2).contains(o.register) else { fail("-R takes 0 (no registration), 1 (local) or 2 (symmetric), not \(o.register)") }
    if o.register == 2 { o.notes.append("-R 2: SwiftCCL has no symmetric (window) registration; the buffers are registered locally, as -R 1") }
    if o.register > 0 { o.notes.append("-R \(o.register): send and receive buffers registered with the communicator (Communicator.register, swcclCommRegister): nothing to do over TCP, a mapping for shared memory, ibv_reg_mr for verbs") }
    if o.threads != nil || o.gpus != nil {
        let perProcess = (o.threads ?? 1) * (o.gpus ?? 1)
        if o.npGiven && perProcess != o.np && perProcess != 1 {
            fail("-np \(o.np) and -t \(o.threads ?? 1) -g \(o.gpus ?? 1) (\(perProcess) ranks) disagree: give one of them")
        }
        if !o.npGiven { o.np = perProcess }
    }
    guard o.iters >= 1, o.warmup >= 0, o.check >= 0, o.unalign >= 0 else { fail("iterations must be positive") }
    guard o.minBytes <= o.maxBytes else { fail("minbytes > maxbytes") }
    guard ["auto", "tcp", "shm", "ib"].contains(o.transport) else { fail("unknown transport \(o.transport) (auto, shm, ib, tcp)") }
    if let why = TransportRegistry.named(o.transport)?.unavailable() { fail("transport \(o.transport) is not available on this host: \(why)") }
    if o.algo != "auto" {
        if o.algo.count == 1, o.algo.allSatisfy(\.isNumber) {
            fail("-a \(o.algo): swccl-perf's -a chooses the algorithm (auto, ring, tree, …); nccl-tests' -a/--average has no equivalent here (the time is always the slowest rank's mean)")
        }
        guard let a = Algorithm(name: o.algo.lowercased()) else {
            fail("unknown algorithm \(o.algo): auto, \(Algorithm.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let k = c.library, k.algorithms.contains(a) else {
            fail("\(c.rawValue) has no \(a.rawValue) algorithm (it has \(c.library?.algorithms.map(\.rawValue).joined(separator: ", ") ?? "one"))")
        }
        o.algo = a.rawValue
    }
    return o
}

// MARK: - process layout

let arguments = Array(CommandLine.arguments.dropFirst())
var options = parseOptions(arguments)
let isChild = getenv("SWCCL_PERF_CHILD") != nil
let launched = !isChild && LaunchEnvironment.isLaunched
var children: [ChildProcess] = []

/// Under a launcher: this process' rank and the number of ranks, known before the communicator is made.
let launch: LaunchEnvironment? = {
    guard launched else { return nil }
    do { return try LaunchEnvironment.detect() } catch { fail("\(error)", code: 1) }
}()
/// This process' rank as far as it is known before the communicator exists (rank 0 prints).
let earlyRank = isChild ? Int(String(cString: getenv("SWCCL_PERF_RANK")))! : launch?.rank ?? 0

/// An invocation error found on every rank alike: rank 0 says it, every rank exits.
@MainActor func failAll(_ message: String) -> Never {
    if earlyRank == 0 { eprint("swccl-perf: \(message)\n") }
    exit(2)
}

if let l = launch {
    if options.npGiven && l.rank == 0 {
        eprint("swccl-perf: warning: -np \(options.np) is ignored: \(l.source) started this process as rank 0 of \(l.size) (every process is one rank)\n")
    }
    let perProcess = (options.threads ?? 1) * (options.gpus ?? 1)
    if perProcess > 1 {
        failAll("-t \(options.threads ?? 1) -g \(options.gpus ?? 1) asks for \(perProcess) ranks per process, but under a launcher (\(l.source)) every process is one rank: start \(perProcess)× as many processes (srun -n, mpirun -np, torchrun --nproc-per-node) with -g 1")
    }
    options.np = l.size
}
// The root must be a rank: say so before anything starts (every rank finds the same).
if options.kind.rooted && !(0..<options.np).contains(options.root) {
    failAll("-r \(options.root): the root must be a rank between 0 and \(options.np - 1) (\(options.np) ranks)")
}

if !isChild && !launched && getenv("SWCCL_SOCKET_IFNAME") == nil {
    // All ranks are local: loopback is the right interface and keeps the benchmark off the network.
    setenv("SWCCL_SOCKET_IFNAME", "lo", 1)
}

let config = CommConfig(timeoutMs: options.timeoutS > 0 ? Int(options.timeoutS * 1000) : nil,
                        transports: options.transport == "auto" ? nil : options.transport,
                        name: "swccl-perf", algorithm: options.algo == "auto" ? nil : "\(options.kind.library!.rawValue):\(options.algo)")

@MainActor func makeCommunicator() -> Communicator {
    do {
        if isChild {
            let id = try UniqueID(hex: String(cString: getenv("SWCCL_PERF_ID")))
            return try Communicator(id: id, rank: Int(String(cString: getenv("SWCCL_PERF_RANK")))!,
                                    size: Int(String(cString: getenv("SWCCL_PERF_SIZE")))!, config: config)
        }
        if launched { return try Communicator.fromEnvironment(config: config) }
        let id = try UniqueID.make()
        for r in 1..<max(options.np, 1) {
            children.append(try Spawn.start(Spawn.selfExecutable, arguments, env: [
                "SWCCL_PERF_CHILD": "1", "SWCCL_PERF_RANK": String(r), "SWCCL_PERF_SIZE": String(options.np),
                "SWCCL_PERF_ID": id.hex]))
        }
        return try Communicator(id: id, rank: 0, size: options.np, config: config)
    } catch {
        eprint("swccl-perf: \(error)\n")
        for c in children { c.signal(SIGKILL); _ = c.wait() }
        exit(1)
    }
}

// Fail on an unreadable --compare file now, not after the run.
let compared: [Series] = {
    guard let f = options.compareFile, !isChild else { return [] }
    do { return try readSeries(f) } catch { fail("\(error)") }
}()

let comm = makeCommunicator()
let rank = comm.rank
let nranks = comm.size

/// The forced algorithm must be one the transport can run: every rank finds the same.
if options.algo != "auto", let kind = options.kind.library, let forced = Algorithm(name: options.algo) {
    let runnable = sizes().filter { comm.canRun(forced, for: kind, bytes: $0) }
    if runnable.isEmpty {
        comm.destroy()
        for c in children { _ = c.wait() }
        let why = forced == .oneshot || forced == .staged
            ? "\(forced.rawValue) needs every rank on one host over shared memory (--transport shm or auto)" + (forced == .oneshot ? " and a size its shared arena holds" : "")
            : "the cost model has no figure for it here"
        failAll("-a \(forced.rawValue): the \(comm.transportName) transport cannot run it for \(options.kind.rawValue) at any size of this sweep: \(why)")
    }
    if let last = runnable.last, last < options.maxBytes {
        options.notes.append("-a \(forced.rawValue): the \(comm.transportName) transport runs it only up to \(last) B here; larger sizes ran the cost model's choice (the algo column says which)")
    }
}

/// Registered buffers (-R), deregistered before the communicator is destroyed.
var regions: [MemoryRegion] = []

// A watchdog per rank: a size that takes longer than -T fails the run, naming this rank. (The
// communicator's timeout, set to the same value, already names a peer that stops answering.)
enum Watchdog {
    static let start = Atomic<UInt64>(0)
    static let size = Atomic<Int>(0)
    static let limit = Atomic<UInt64>(0)
    static let rank = Atomic<Int>(0)

    static func arm(_ bytes: Int) { size.store(bytes, ordering: .relaxed); start.store(Clock.nanos(), ordering: .releasing) }
    static func disarm() { start.store(0, ordering: .releasing) }

    static func launch(seconds: Double, rank r: Int) {
        limit.store(UInt64(seconds * 1e9), ordering: .relaxed)
        rank.store(r, ordering: .relaxed)
        var t = pthread_t()
        pthread_create(&t, nil, { _ in
            while true {
                usleep(20_000)
                let s = Watchdog.start.load(ordering: .acquiring)
                if s != 0 && Clock.nanos() > s + Watchdog.limit.load(ordering: .relaxed) {
                    eprint("swccl-perf: rank \(Watchdog.rank.load(ordering: .relaxed)) is stuck: size \(Watchdog.size.load(ordering: .relaxed)) B took longer than the -T timeout\n")
                    exit(3)
                }
            }
        }, nil)
    }
}
if options.timeoutS > 0 { Watchdog.launch(seconds: options.timeoutS, rank: rank) }

// MARK: - measurement


@MainActor func sizes() -> [Int] {
    var out: [Int] = []
    var s = options.minBytes
    while s <= options.maxBytes {
        out.append(s)
        if options.stepBytes > 0 { s += options.stepBytes } else {
            let next = Int((Double(s) * options.stepFactor).rounded(.down))
            s = next > s ? next : s + 1
        }
    }
    return out
}

struct Row {
    var size: Int, count: Int, type: DataType, op: ReduceOp
    var time = [0.0, 0.0], algbw = [0.0, 0.0], busbw = [0.0, 0.0], wrong = [0, 0]
}

let maxElemSize = 8
let unalignBytes = options.unalign * maxElemSize
let capacity = options.maxBytes + unalignBytes + 64  // the largest buffer of any collective is `size` bytes
let sendBase = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
let recvBase = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
let expectBase = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
memset(sendBase, 0, capacity); memset(recvBase, 0, capacity); memset(expectBase, 0, capacity)
if options.register > 0 {
    do {
        regions.append(try comm.register(UnsafeMutableRawBufferPointer(start: sendBase, count: capacity)))
        regions.append(try comm.register(UnsafeMutableRawBufferPointer(start: recvBase, count: capacity)))
    } catch {
        eprint("swccl-perf: rank \(rank): -R \(options.register): registering the buffers failed: \(error)\n")
        comm.abort()
        for c in children { _ = c.wait() }
        exit(1)
    }
}

var jsonOut: UnsafeMutablePointer<FILE>?
if rank == 0, let f = options.jsonFile {
    jsonOut = fopen(f, "w")
    if jsonOut == nil { fail("cannot write \(f)") }
}

@MainActor func maxAcrossRanks(_ v: Double) throws(CCLError) -> Double {
    var x = [v]
    try comm.allReduce(&x, op: .max)
    return x[0]
}

@MainActor func sumAcrossRanks(_ v: Int) throws(CCLError) -> Int {
    var x = [Int64(v)]
    try comm.allReduce(&x, op: .sum)
    return Int(x[0])
}

/// One operation of the chosen collective on `block` elements per rank (the whole buffer for
/// all_reduce, broadcast, reduce, sendrecv).
@MainActor func runOnce(_ c: Collective, block: Int, type: DataType, op: ReduceOp, inPlace: Bool,
                        send: UnsafeMutableRawPointer, recv: UnsafeMutableRawPointer) throws(CCLError) {
    let es = type.size, root = options.root
    switch c {
    case .allReduce: try comm.allReduce(send: inPlace ? recv : send, recv: recv, count: block, type: type, op: op)
    case .broadcast: try comm.broadcast(send: inPlace ? recv : send, recv: recv, count: block, type: type, root: root)
    case .reduce: try comm.reduce(send: inPlace ? recv : send, recv: recv, count: block, type: type, op: op, root: root)
    case .allGather: try comm.allGather(send: inPlace ? recv + rank * block * es : send, recv: recv, sendCount: block, type: type)
    case .reduceScatter: try comm.reduceScatter(send: send, recv: inPlace ? send + rank * block * es : recv, recvCount: block, type: type, op: op)
    case .allToAll: try comm.allToAll(send: send, recv: recv, count: block, type: type)
    case .gather: try comm.gather(send: inPlace && rank == root ? recv + root * block * es : send, recv: recv, count: block, type: type, root: root)
    case .scatter: try comm.scatter(send: send, recv: inPlace && rank == root ? send + root * block * es : recv, count: block, type: type, root: root)
    case .sendRecv:
        try comm.sendRecv(send: send, count: block, type: type, to: (rank + 1) % nranks, recv: recv, recvCount: block, from: (rank + nranks - 1) % nranks)
    case .barrier: try comm.barrier()
    }
}

/// Fills the inputs of a checked run with (seed, rank, index) patterns; returns where the result is
/// and how many elements to compare (0: nothing to check on this rank), having written the expected
/// values to `expectBase`.
@MainActor func prepareCheck(_ c: Collective, block: Int, type: DataType, op: ReduceOp, inPlace: Bool, seed: UInt64,
                             send: UnsafeMutableRawPointer, recv: UnsafeMutableRawPointer) -> (UnsafeMutableRawPointer, Int, ReduceOp) {
    let es = type.size, root = options.root, n = nranks
    let fillOp: ReduceOp = c.reduces ? op : .max  // .max patterns: arbitrary bit patterns, compared exactly
    switch c {
    case .allReduce, .reduce:
        Pattern.fill(inPlace ? recv : send, count: block, type: type, op: op, seed: seed, rank: rank)
        if !inPlace { memset(recv, 0, block * es) }
        Pattern.expected(expectBase, count: block, type: type, op: op, seed: seed, nranks: n)
        return (recv, c == .reduce && rank != root ? 0 : block, op)
    case .broadcast:
        if rank == root { Pattern.fill(inPlace ? recv : send, count: block, type: type, op: fillOp, seed: seed, rank: root) }
        if rank != root || !inPlace { memset(recv, 0, block * es) }
        if rank == root && inPlace { Pattern.fill(recv, count: block, type: type, op: fillOp, seed: seed, rank: root) }
        Pattern.fill(expectBase, count: block, type: type, op: fillOp, seed: seed, rank: root)
        return (recv, block, fillOp)
    case .allGather, .gather:
        memset(recv, 0, block * n * es)
        let mine = inPlace && (c == .allGather || rank == root) ? recv + (c == .allGather ? rank : root) * block * es : send
        Pattern.fill(mine, count: block, type: type, op: fillOp, seed: seed, rank: rank)
        for r in 0..<n { Pattern.fill(expectBase + r * block * es, count: block, type: type, op: fillOp, seed: seed, rank: r) }
        return (recv, c == .gather && rank != root ? 0 : block * n, fillOp)
    case .reduceScatter:
        Pattern.fill(send, count: block * n, type: type, op: op, seed: seed, rank: rank)
        Pattern.expected(expectBase, count: block, type: type, op: op, seed: seed, nranks: n, offset: rank * block)
        return (inPlace ? send + rank * block * es : recv, block, op)
    case .allToAll:
        Pattern.fill(send, count: block * n, type: type, op: fillOp, seed: seed, rank: rank)
        for j in 0..<n { Pattern.fill(expectBase + j * block * es, count: block, type: type, op: fillOp, seed: seed, rank: j, offset: rank * block) }
        return (recv, block * n, fillOp)
    case .scatter:
        if rank == root { Pattern.fill(send, count: block * n, type: type, op: fillOp, seed: seed, rank: root) }
        Pattern.fill(expectBase, count: block, type: type, op: fillOp, seed: seed, rank: root, offset: rank * block)
        return (inPlace && rank == root ? send + root * block * es : recv, block, fillOp)
    case .sendRecv:
        Pattern.fill(send, count: block, type: type, op: fillOp, seed: seed, rank: rank)
        Pattern.fill(expectBase, count: block, type: type, op: fillOp, seed: seed, rank: (rank + n - 1) % n)
        return (recv, block, fillOp)
    case .barrier:
        return (recv, 0, fillOp)
    }
}

/// Times `iters` operations (after warm-up) and checks `check` more; in place when `inPlace`.
@MainActor func measure(block: Int, type: DataType, op: ReduceOp, inPlace: Bool) throws(CCLError) -> (Double, Int) {
    let c = options.kind
    let off = options.unalign * type.size
    let send = sendBase + off, recv = recvBase + off
    _ = prepareCheck(c, block: block, type: type, op: op, inPlace: inPlace, seed: 1, send: send, recv: recv)
    for _ in 0..<options.warmup { try runOnce(c, block: block, type: type, op: op, inPlace: inPlace, send: send, recv: recv) }
    try comm.barrier()
    let t0 = Clock.nanos()
    let agg = options.aggIters
    for _ in 0..<options.iters {
        if agg > 1 {
            // nccl-tests' -m: the iteration's operations go in one group and start together at its end.
            Group.start()
            do throws(CCLError) {
                for _ in 0..<agg { try runOnce(c, block: block, type: type, op: op, inPlace: inPlace, send: send, recv: recv) }
            } catch { _ = try? Group.end(); throw error }
            try Group.end()
        } else {
            try runOnce(c, block: block, type: type, op: op, inPlace: inPlace, send: send, recv: recv)
        }
    }
    let elapsed = Double(Clock.nanos() - t0) / 1e3 / Double(options.iters * agg)
    var wrong = 0
    for k in 0..<options.check {
        let seed = UInt64(100 + k)
        let (result, n, cmpOp) = prepareCheck(c, block: block, type: type, op: op, inPlace: inPlace, seed: seed, send: send, recv: recv)
        try runOnce(c, block: block, type: type, op: op, inPlace: inPlace, send: send, recv: recv)
        if n > 0 { wrong += Pattern.countWrong(result, expectBase, count: n, type: type, op: cmpOp) }
    }
    return (try maxAcrossRanks(elapsed), try sumAcrossRanks(wrong))
}

@MainActor func fmt(_ v: Double, _ width: Int, _ decimals: Int) -> String {
    var buf = [CChar](repeating: 0, count: 64)
    _ = withVaList([v]) { vsnprintf(&buf, 64, "%\(width).\(decimals)f", $0) }
    return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

@MainActor func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }

@MainActor func fmtTime(_ us: Double) -> String { us >= 10000 ? fmt(us, 7, 0) : us >= 100 ? fmt(us, 7, 1) : fmt(us, 7, 2) }

/// Rows kept for --plot: (type, op) → points of out-of-place and in-place busbw.
var plotted: [(name: String, oop: [(Double, Double)], ip: [(Double, Double)])] = []

/// The progress line on standard error (rank 0, only when it is a terminal): the size under way and
/// the time since the start, so a long sweep shows it is alive.
enum Progress {
    nonisolated(unsafe) static var shown = false
    static let enabled = isatty(2) != 0
    static let start = Clock.nanos()
    static func show(_ text: String) {
        guard enabled else { return }
        let since = start  // read before the clock: the first read sets it
        let elapsed = Double(Clock.nanos() &- since) / 1e9
        eprint("\r\u{1B}[K# \(text), \(String(Int(elapsed))) s elapsed")
        shown = true
    }
    static func clear() {
        guard enabled && shown else { return }
        eprint("\r\u{1B}[K")
        shown = false
    }
}

var totalWrong = 0
var busSum = 0.0
var rowsCount = 0
var failed = false

if rank == 0 {
    print("# swccl-perf \(options.kind.rawValue)  nranks \(nranks)  transport \(comm.transportName)  algo \(options.algo)  SwiftCCL \(SwiftCCLVersion.string)")
    if let l = launch { print("# launched by \(l.source): one rank per process, rendezvous \(l.rendezvous) (\(l.origin))") }
    if options.aggIters > 1 { print("# -m \(options.aggIters): \(options.aggIters) operations per timed iteration in one group; times are per operation") }
    for n in options.notes { print("# \(n)") }
    print("#")
    // The type column is two wider than in the specification's example so `bfloat16` stays apart from the count.
    // The last column (not in nccl-tests) names the algorithm that ran.
    print("#                                                    out-of-place                 in-place")
    print("#       size     count     type  redop  root    time  algbw  busbw #wrong    time  algbw  busbw #wrong  algo")
    print("#        (B) (elements)                         (us) (GB/s) (GB/s)           (us) (GB/s) (GB/s)")
    fflush(nil)
}

_ = Progress.start  // elapsed time counts from here
let sweep = options.kind == .barrier ? [0] : sizes()
let combinations = options.types.count * options.ops.count
var step = 0
outer: for type in options.types {
    for op in options.ops {
        for size in sweep {
            step += 1
            if rank == 0 {
                Progress.show("size \(size) B \(type) \(op) (\(step) of \(sweep.count * combinations))")
            }
            let kind = options.kind
            let per = kind.sizeIsTotal ? nranks : 1
            let block = kind == .barrier ? 0 : size / (type.size * per)
            let count = block * per
            let bytes = count * type.size
            var row = Row(size: bytes, count: count, type: type, op: op)
            Watchdog.arm(bytes)
            do {
                for (k, inPlace) in [false, true].enumerated() where !inPlace || kind.hasInPlace {
                    let (t, w) = try measure(block: block, type: type, op: op, inPlace: inPlace)
                    row.time[k] = t
                    row.algbw[k] = t > 0 ? Double(bytes) / t / 1e3 : 0
                    row.busbw[k] = row.algbw[k] * kind.busFactor(nranks)
                    row.wrong[k] = w
                }
            } catch {
                eprint("# rank \(rank): size \(bytes) \(type) \(op): \(error)\n")
                failed = true
                break outer
            }
            Watchdog.disarm()
            totalWrong += row.wrong[0] + row.wrong[1]
            busSum += row.busbw[0]
            rowsCount += 1
            if rank == 0 {
                Progress.clear()
                let algoName = kind.library.map { comm.algorithm(for: $0, bytes: bytes).rawValue } ?? "-"
                let name = "SwiftCCL \(type) \(kind.reduces ? op.description : "")".trimmingCharacters(in: .whitespaces)
                if plotted.last?.name != name { plotted.append((name, [], [])) }
                plotted[plotted.count - 1].oop.append((Double(bytes), row.busbw[0]))
                if kind.hasInPlace { plotted[plotted.count - 1].ip.append((Double(bytes), row.busbw[1])) }
                var line = pad(String(bytes), 12) + pad(String(count), 10) + pad(type.description, 9)
                    + pad(kind.reduces ? op.description : "none", 7) + pad(kind.rooted ? String(options.root) : "-1", 6)
                for k in 0..<2 {
                    if k == 1 && !kind.hasInPlace {
                        line += "     N/A    N/A    N/A    N/A"
                        continue
                    }
                    line += " " + fmtTime(row.time[k]) + " " + fmt(row.algbw[k], 6, 2) + " " + fmt(row.busbw[k], 6, 2)
                        + pad(options.check > 0 ? String(row.wrong[k]) : "N/A", 7)
                }
                line += "  " + algoName
                print(line)
                fflush(nil)
                if let j = jsonOut {
                    let s = "{\"collective\":\"\(options.kind.rawValue)\",\"nranks\":\(nranks),\"size\":\(bytes),\"count\":\(count),\"type\":\"\(type)\",\"op\":\"\(op)\",\"root\":\(kind.rooted ? options.root : -1),"
                        + "\"oop_time_us\":\(row.time[0]),\"oop_algbw\":\(row.algbw[0]),\"oop_busbw\":\(row.busbw[0]),\"oop_wrong\":\(options.check > 0 ? String(row.wrong[0]) : "null"),"
                        + "\"ip_time_us\":\(row.time[1]),\"ip_algbw\":\(row.algbw[1]),\"ip_busbw\":\(row.busbw[1]),\"ip_wrong\":\(options.check > 0 ? String(row.wrong[1]) : "null"),"
                        + "\"algo\":\"\(algoName)\"}\n"
                    fputs(s, j)
                }
            }
        }
    }
}

if let j = jsonOut { fclose(j) }
if rank == 0 { Progress.clear() }
if rank == 0 && !failed, let out = options.plotFile {
    var series: [Series] = []
    for p in plotted {
        series.append(Series(name: plotted.count == 1 ? "SwiftCCL out-of-place" : "\(p.name) out-of-place", points: p.oop.map { ($0.0, $0.1) }))
        if plotted.count == 1 && !p.ip.isEmpty { series.append(Series(name: "SwiftCCL in-place", points: p.ip.map { ($0.0, $0.1) })) }
    }
    series += compared
    let title = options.title ?? "\(options.kind.rawValue), \(nranks) ranks, \(comm.transportName)"
    let note = "swccl-perf " + arguments.joined(separator: " ")
    if !writeFile(out, svgChart(title: title, note: note, series: series)) { eprint("swccl-perf: cannot write \(out)\n"); failed = true }
}
if rank == 0 && !failed {
    print("# Out of bounds values : \(totalWrong) \(totalWrong == 0 ? "OK" : "FAILED")")
    print("# Avg bus bandwidth    : \(fmt(rowsCount > 0 ? busSum / Double(rowsCount) : 0, 0, 3))")
    print("#")
}
for r in regions { comm.deregister(r) }
if failed { comm.abort() } else { comm.destroy() }
var status: Int32 = failed || totalWrong > 0 ? 1 : 0
for (i, c) in children.enumerated() {
    let s = c.wait()
    if s != 0 {
        eprint("swccl-perf: rank \(i + 1) exited with status \(s)\n")
        status = 1
    }
}
exit(status)
