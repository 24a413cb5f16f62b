import CKernels

/// The one thread-count setting: it governs OpenMP loops and OpenBLAS together.
public enum Threads {
  /// Sets the number of threads every kernel uses (`nil` or less than 1: all cores).
  public static func set(_ count: Int?) {
    lc_set_threads(Int32(clamping: count ?? 0))
  }

  /// The thread count in force.
  public static var count: Int { Int(lc_get_threads()) }

  /// The number of cores the machine reports.
  public static var cores: Int { Int(lc_core_count()) }

  /// The vector extensions the kernels found at run time, for reports: `avx2`, `avx512`, `vnni`.
  public static var cpuFeatures: [String] {
    let bits = lc_cpu_features()
    return [(1, "avx2"), (2, "avx512"), (4, "avx512_vnni")].compactMap {
      bits & $0.0 != 0 ? $0.1 : nil
    }
  }
}
