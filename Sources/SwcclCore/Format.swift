/// Number and size formatting for logs, tables and errors.

package func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }

package func fixed(_ v: Double, _ decimals: Int) -> String {
    guard v.isFinite else { return "\(v)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let r = (abs(v) * scale).rounded()
    let whole = Int(r / scale), frac = Int(r) - whole * Int(scale)
    let f = String(frac)
    return (v < 0 ? "-" : "") + "\(whole)" + (decimals > 0 ? "." + String(repeating: "0", count: decimals - f.count) + f : "")
}

/// 8 B, 4 KiB, 1 MiB … as in the INFO table and docs.
package func formatBytes(_ b: Int) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 { return "\(b >> 30) GiB" }
    if b >= 1 << 20 && b % (1 << 20) == 0 { return "\(b >> 20) MiB" }
    if b >= 1 << 10 && b % (1 << 10) == 0 { return "\(b >> 10) KiB" }
    return "\(b) B"
}

extension String {
    /// "all_reduce", "all-reduce" → "allreduce".
    package var replacingDashes: String { String(filter { $0 != "-" && $0 != "_" && !$0.isWhitespace }) }
}
