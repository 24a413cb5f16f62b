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

/// Settings of the decoding products (weights read as stored, a few activation rows).
public enum DecodeKernels {
  /// Whether activations are rounded to int8 per block of 32 against q8_0 and q4_1 weights.
  ///
  /// The AVX-512 VNNI path, as llama.cpp does: about 1.5-2x faster products, but SmolLM2's
  /// activation outliers flatten their blocks' other values and move logits by up to ~2. Off by
  /// default (or with `LORAC_ACTIVATIONS=int8` in the environment); a CPU without VNNI ignores it.
  public static var int8Activations: Bool {
    get { lc_int8_activations() != 0 }
    set { lc_set_int8_activations(newValue ? 1 : 0) }
  }
}

extension DecodeKernels {
  /// Whether products with more than 8 rows on bf16 weight constants use avx512_bf16 dot
  /// products on packed weights (else the weights are decoded to f32 for sgemm).
  ///
  /// Setting it false (tests of the fallback) affects executables made afterwards; setting it
  /// true on a CPU without avx512_bf16 has no effect.
  public static var bf16DotProducts: Bool {
    get { lc_bf16_dot_available() != 0 }
    set { lc_set_bf16_dot(newValue ? 1 : 0) }
  }
}
