import Foundation

/// The process's current resident set in bytes, from `/proc/self/statm` (0 where it is missing).
///
/// `peakResidentBytes()` is the high-water mark; this is what is resident now, so a series of it
/// shows growth (a leak) that the peak alone would hide behind an early spike.
func residentBytes() -> Int {
  guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else {
    return 0
  }
  let fields = statm.split(separator: " ")
  guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
  return pages * sysconf(Int32(_SC_PAGESIZE))
}
