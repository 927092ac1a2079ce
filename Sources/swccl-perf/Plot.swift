// Charts of bus bandwidth against message size, as SVG (swccl-perf --plot, and `swccl-perf plot` for
// series measured elsewhere, e.g. by Benchmarks/compare/compare.sh). A tool, not the library: Foundation
// is used here for JSON only.
import Foundation

/// One line of a chart: (size in bytes, bus bandwidth in GB/s) points.
struct Series {
    var name: String
    var points: [(size: Double, busbw: Double)]
}

enum PlotError: Error, CustomStringConvertible {
    case unreadable(String), malformed(String, Int)
    var description: String {
        switch self {
        case .unreadable(let p): return "cannot read \(p)"
        case .malformed(let p, let line): return "\(p):\(line): not a JSON object with size and busbw (or oop_busbw)"
        }
    }
}

/// Reads series from JSON lines: each line an object with `size` and `busbw` and the series' name in
/// `series` — or a row of `swccl-perf -J` (`oop_busbw`, named "SwiftCCL <type> <op>"). Blank lines and
/// lines starting with '#' are skipped. Series keep the order of their first appearance.
func readSeries(_ path: String) throws -> [Series] {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        throw PlotError.unreadable(path)
    }
    var series: [Series] = []
    for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") { continue }
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let size = (obj["size"] as? NSNumber)?.doubleValue,
              let bw = ((obj["busbw"] ?? obj["oop_busbw"]) as? NSNumber)?.doubleValue else {
            throw PlotError.malformed(path, i + 1)
        }
        let name = obj["series"] as? String
            ?? "SwiftCCL \(obj["type"] as? String ?? "") \(obj["op"] as? String ?? "")".trimmingCharacters(in: .whitespaces)
        if let k = series.firstIndex(where: { $0.name == name }) {
            series[k].points.append((size, bw))
        } else {
            series.append(Series(name: name, points: [(size, bw)]))
        }
    }
    return series
}

/// "8", "1K", "64M": sizes as nccl-tests users write them.
func sizeLabel(_ bytes: Double) -> String {
    let b = Int(bytes)
    if b >= 1 << 30 && b % (1 << 30) == 0 { return "\(b >> 30)G" }
    if b >= 1 << 20 && b % (1 << 20) == 0 { return "\(b >> 20)M" }
    if b >= 1 << 10 && b % (1 << 10) == 0 { return "\(b >> 10)K" }
    return "\(b)"
}

private func xmlEscaped(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

/// A round step for about `ticks` intervals over [0, top]: 1, 2 or 5 times a power of ten.
private func niceStep(_ top: Double, ticks: Int) -> Double {
    let raw = max(top, 1e-9) / Double(ticks)
    let p = pow(10, floor(log10(raw)))
    for m in [1.0, 2, 5, 10] where m * p >= raw { return m * p }
    return 10 * p
}

/// The chart: x = size on a log₂ axis, y = busbw from 0, one polyline with markers per series, a
/// legend, the title and a note (e.g. the command) under it.
func svgChart(title: String, note: String = "", series: [Series]) -> String {
    let width = 760.0, height = 460.0
    let left = 70.0, right = 20.0, top = 58.0, bottom = 56.0
    let pw = width - left - right, ph = height - top - bottom
    let all = series.flatMap { $0.points }.filter { $0.size > 0 }
    let minX = log2(all.map(\.size).min() ?? 1), maxX = max(log2(all.map(\.size).max() ?? 2), minX + 1)
    let step = niceStep(max(all.map(\.busbw).max() ?? 1, 1e-3) * 1.05, ticks: 5)
    let maxY = max(step * ceil(max(all.map(\.busbw).max() ?? 1, 1e-3) * 1.05 / step), step)
    func x(_ size: Double) -> Double { left + (log2(size) - minX) / (maxX - minX) * pw }
    func y(_ v: Double) -> Double { top + ph - v / maxY * ph }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22"]
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(f(width / 2))" y="22" text-anchor="middle" font-size="15" font-weight="bold">\(xmlEscaped(title))</text>
    <text x="\(f(width / 2))" y="40" text-anchor="middle" font-size="11" fill="#555">\(xmlEscaped(note))</text>

    """
    // Grid and axes.
    var v = 0.0
    while v <= maxY + step / 2 {
        s += "<line x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(left + pw))\" y2=\"\(f(y(v)))\" stroke=\"#e4e4e4\"/>"
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(step < 1 ? String(format: "%.2g", v) : String(format: "%.0f", v))</text>\n"
        v += step
    }
    var e = ceil(minX)
    let every = maxX - minX > 14 ? 2.0 : 1.0
    while e <= maxX {
        let px = x(pow(2, e))
        s += "<line x1=\"\(f(px))\" y1=\"\(f(top))\" x2=\"\(f(px))\" y2=\"\(f(top + ph))\" stroke=\"#f0f0f0\"/>"
        s += "<text x=\"\(f(px))\" y=\"\(f(top + ph + 16))\" text-anchor=\"middle\">\(sizeLabel(pow(2, e)))</text>\n"
        e += every
    }
    s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#333\"/>\n"
    s += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 14))\" text-anchor=\"middle\">message size (bytes, log scale)</text>\n"
    s += "<text x=\"16\" y=\"\(f(top + ph / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(f(top + ph / 2)))\">bus bandwidth (GB/s)</text>\n"
    // Series.
    for (i, se) in series.enumerated() {
        let c = colors[i % colors.count]
        let pts = se.points.filter { $0.size > 0 }.sorted { $0.size < $1.size }
        let path = pts.map { "\(f(x($0.size))),\(f(y($0.busbw)))" }.joined(separator: " ")
        s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\"/>\n"
        for p in pts { s += "<circle cx=\"\(f(x(p.size)))\" cy=\"\(f(y(p.busbw)))\" r=\"2.5\" fill=\"\(c)\"/>" }
        let ly = top + 16 + Double(i) * 17
        s += "\n<line x1=\"\(f(left + 12))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + 36))\" y2=\"\(f(ly - 4))\" stroke=\"\(c)\" stroke-width=\"2\"/>"
        s += "<text x=\"\(f(left + 42))\" y=\"\(f(ly))\">\(xmlEscaped(se.name))</text>\n"
    }
    s += "</svg>\n"
    return s
}

/// Writes `text` to `path`; false if it cannot.
func writeFile(_ path: String, _ text: String) -> Bool {
    FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
}
