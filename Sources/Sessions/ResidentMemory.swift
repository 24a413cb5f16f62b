import Foundation

/// The process's current resident set in bytes, from `/proc/self/statm` (0 where it is missing).
///
/// `peakResidentBytes()` is the high-water mark; this is what is resident now, so a series of it
/// shows growth (a leak) that the peak alone would hide behind an early spike.
public func residentBytes() -> Int {
  guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else {
    return 0
  }
  let fields = statm.split(separator: " ")
  guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
  return pages * sysconf(Int32(_SC_PAGESIZE))
}

/// The process's peak resident set size in bytes (VmHWM), or 0 when unknown.
public func peakResidentBytes() -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
    return 0
  }
  for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
    let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
    return kilobytes * 1024
  }
  return 0
}
