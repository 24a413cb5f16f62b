import Dispatch

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
public func median(_ values: [Double]) -> Double {
  guard !values.isEmpty else { return 0 }
  let sorted = values.sorted()
  return sorted.count % 2 == 1
    ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

extension KernelBenchmarks {
  /// Median seconds of `runs` runs of `body` after one warm-up run.
  public static func median(runs: Int, _ body: () throws -> Void) rethrows -> Double {
    try median(runs: runs, setUp: {}, body)
  }

  /// Median seconds of `runs` runs of `body` after one warm-up run, calling `setUp` first.
  ///
  /// `setUp` runs before each run, the warm-up included, outside the timed part.
  public static func median(
    runs: Int, setUp: () throws -> Void, _ body: () throws -> Void
  ) rethrows -> Double {
    try setUp()
    try body()
    var times: [Double] = []
    for _ in 0..<max(runs, 1) {
      try setUp()
      let start = DispatchTime.now().uptimeNanoseconds
      try body()
      times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return KernelBench.median(times)
  }
}
