import CKernels
import Dispatch
import Foundation
import IR
import Runtime

/// One benchmark figure: lorac's time against a baseline measured in the same run.
public struct BenchmarkResult: Sendable {
  public var name: String
  public var threads: Int
  /// Median seconds per run of lorac's path and of the baseline.
  public var seconds: Double
  public var baselineSeconds: Double
  /// What the baseline is.
  public var baseline: String
  /// Work per run, for rates: floating-point operations or bytes read.
  public var work: Double
  public var unit: String
  public var runs: Int

  /// Baseline time over lorac's time: above 1 means lorac is faster.
  public var ratio: Double { baselineSeconds / seconds }
}

/// The kernel benchmarks of `lorac bench kernels`: each measures lorac's compiled path and a
/// baseline on the same data, medians of `runs` runs after a warm-up.
public enum KernelBenchmarks {
  /// Runs the GEMM (`gemm`) and decoding-product (`matvec`) benchmarks at each thread count, on
  /// the kernels `target`'s ISA tier plans (every tier the host runs can be measured).
  public static func run(
    threads: [Int], runs: Int, groups: Set<String> = ["gemm", "matvec"],
    target: Target = .host
  ) throws -> [BenchmarkResult] {
    try target.checkHost()
    var results: [BenchmarkResult] = []
    for count in threads {
      Threads.set(count)
      for (k, n) in [(576, 576), (576, 1536), (1536, 576), (576, 49152)]
      where groups.contains("gemm") {
        results.append(try gemm(m: 512, k: k, n: n, runs: runs, target: target))
        // --precision bf16: the same product on a packed bf16 weight, against f32 sgemm.
        if target.packsBF16Weights {
          results.append(try gemm(m: 512, k: k, n: n, dtype: .bf16, runs: runs, target: target))
        }
      }
      // The input gradients of the bf16 base (dy W, W as stored), the head's over 49,152.
      for (k, n) in [(1536, 576), (49152, 576)]
      where groups.contains("gemm") && target.packsBF16Weights {
        results.append(
          try gemm(m: 512, k: k, n: n, dtype: .bf16, transposeB: false, runs: runs, target: target))
      }
      // SmolLM2's decoding shapes: ffn_down, ffn_gate/up, and the Q8_0 embedding as the head.
      for (n, k) in [(576, 1536), (1536, 576), (49152, 576)] where groups.contains("matvec") {
        for dtype in [DType.q4_1, .q8_0, .f32, .f16, .bf16] {
          results.append(try matvec(dtype, k: k, n: n, target: target, runs: runs))
        }
        // The same products with the activations rounded to int8 (the stored layout's VNNI
        // path; below avx512-vnni only the interleaved form below rounds them).
        for dtype in [DType.q4_1, .q8_0] where target.isa >= .avx512VNNI {
          var int8 = target
          int8.int8Activations = true
          results.append(try matvec(dtype, k: k, n: n, target: int8, runs: runs))
        }
        // Interleaved by 16 rows (what decoding multiplies q4_1 by from avx2 and q8_0 by from
        // avx512-vnni, or with int8 activations): activations as three int8 digits
        // (f32-accurate), then rounded to int8; on the VNNI kernels from avx512-vnni, else AVX2.
        for dtype in [DType.q4_1, .q8_0] where target.isa >= .avx2 {
          for int8 in [false, true] {
            var interleaved = target
            interleaved.int8Activations = int8
            results.append(
              try matvec(dtype, k: k, n: n, target: interleaved, interleaved: true, runs: runs))
            results.append(
              try matvec(
                dtype, k: k, n: n, m: 4, target: interleaved, interleaved: true, runs: runs))
          }
        }
        // Small M: 4 rows of activations sharing one pass over the weight blocks.
        for dtype in [DType.q4_1, .q8_0] {
          results.append(try matvec(dtype, k: k, n: n, m: 4, target: target, runs: runs))
        }
      }
    }
    Threads.set(nil)
    return results
  }

  /// The results as an aligned table with rates and ratios.
  public static func table(_ results: [BenchmarkResult]) -> String {
    func pad(_ text: String, _ width: Int) -> String {
      text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
    var lines = [
      "benchmark                  threads        lorac     baseline  ratio  baseline is"
    ]
    for r in results {
      let unit = r.unit == "flop" ? "GFLOP/s" : "GB/s"
      lines.append(
        pad(r.name, 27) + pad(String(r.threads), 6)
          + String(
            format: "%7.1f %-7@ %6.1f %-7@ %5.2f  ", r.work / r.seconds / 1e9, unit,
            r.work / r.baselineSeconds / 1e9, unit, r.ratio)
          + r.baseline)
    }
    return lines.joined(separator: "\n")
  }

  /// The results as one JSON object keyed `<benchmark>_t<threads>`, each with its ratio.
  public static func json(_ results: [BenchmarkResult]) -> String {
    let entries = results.map { r in
      "\"\(r.name)_t\(r.threads)\": {\"ratio\": \(r.ratio), \"seconds\": \(r.seconds), "
        + "\"baseline_seconds\": \(r.baselineSeconds), \"baseline\": \"\(r.baseline)\", "
        + "\"threads\": \(r.threads), \"runs\": \(r.runs), \"rate\": \(r.work / r.seconds), "
        + "\"unit\": \"\(r.unit)/s\"}"
    }
    return "{" + entries.joined(separator: ", ") + "}"
  }

  private static func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in Float(generator.nextUnit() - 0.5) }
  }

  /// `x [m,k] x W [n,k]^T` (or `x W` with W [k,n] without `transposeB`) through a compiled
  /// matmul against a bare `cblas_sgemm` of the same shape; a `bf16` W runs the packed bf16
  /// product, and the baseline multiplies the same values in f32.
  static func gemm(
    m: Int, k: Int, n: Int, dtype: DType = .f32, transposeB: Bool = true, runs: Int,
    target: Target = .host
  ) throws -> BenchmarkResult {
    let b = GraphBuilder(name: "gemm")
    let x = try b.input(name: "x", shape: [m, k])
    let shape = transposeB ? [n, k] : [k, n]
    let w = try b.constant(name: "w", shape: shape, dtype: dtype)
    let graph = try b.finish(outputs: [try matmul(x, w, transposeB: transposeB)])
    var weights = randomFloats(n * k, seed: 1)
    let constant: HostTensor
    if dtype == .bf16 {
      let bits = weights.map(bfloat16FromFloat)
      weights = bits.map(floatFromBFloat16)
      constant = try bits.withUnsafeBytes { bytes in
        try HostTensor(type: TensorType(.bf16, shape), data: Data(bytes))
      }
    } else {
      constant = HostTensor(shape: shape, floats: weights)
    }
    let input = HostTensor(shape: [m, k], floats: randomFloats(m * k, seed: 2))
    let executable = try Executable(graph, constants: ["w": constant], target: target)
    try executable.set("x", input)
    let lorac = try median(runs: runs) { try executable.execute() }
    var out = [Float](repeating: 0, count: m * n)
    let xs = input.floats()
    let baseline = median(runs: runs) {
      lc_sgemm_baseline(xs, weights, &out, Int64(m), Int64(n), Int64(k), transposeB ? 1 : 0)
    }
    let kind = dtype == .bf16 ? "gemm_bf16" + (transposeB ? "" : "_nt") : "gemm"
    return BenchmarkResult(
      name: "\(kind)_\(m)x\(k)x\(n)", threads: Threads.count, seconds: lorac,
      baselineSeconds: baseline,
      baseline: "cblas_sgemm", work: 2.0 * Double(m * n * k), unit: "flop", runs: runs)
  }

  /// `x [m,k] x W [n,k]^T` with W stored as `dtype`, against a plain read of the same bytes.
  ///
  /// Decoding reads every weight from DRAM once per token, so the weight is copied until the
  /// copies exceed 256 MB (far past the 32 MB L3) and each run multiplies by every copy in turn;
  /// the baseline reads the same buffer once (`lc_memory_read`). Products go through the
  /// executable's own entry points: `lc_matmul_quantized` (its M = 1 path is
  /// `lc_matvec_quantized`), `lc_matmul_quantized_small` for M > 1, and `lc_matmul_f32` (its
  /// row kernel for M <= 8 rows), on the ISA path `target` plans for the dtype. With the
  /// target's int8 activations the activations are rounded to int8 (the VNNI path, as llama.cpp
  /// does); `interleaved` multiplies by q4_1/q8_0 weights packed by `lc_interleave`
  /// (activations as three int8 digits, or one with int8 activations), on the VNNI kernels from
  /// `avx512-vnni` and the AVX2 ones below it.
  static func matvec(
    _ dtype: DType, k: Int, n: Int, m: Int = 1, target: Target, interleaved: Bool = false,
    runs: Int
  ) throws -> BenchmarkResult {
    let int8Activations = target.roundsActivationsToInt8
    // The path a kernel plan gives a few rows by this weight read as stored.
    let path = KernelPlan.quantizedPath(dtype, target).quantPathCode
    let interleavedPath =
      target.isa >= .avx512VNNI ? Int32(LC_QUANT_VNNI.rawValue) : Int32(LC_QUANT_AVX2.rawValue)
    let type = TensorType(dtype, [n, k])
    let bytes = type.byteCount
    let copies = max(1, (256 << 20) / bytes + 1)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes * copies, alignment: 64)
    defer { buffer.deallocate() }
    var generator = SplitMix64(seed: 3)
    switch dtype {
    case .f32:
      let floats = buffer.bindMemory(to: Float.self, capacity: n * k)
      for index in 0..<(n * k) { floats[index] = Float(generator.nextUnit() - 0.5) }
    case .f16, .bf16:
      let halves = buffer.bindMemory(to: UInt16.self, capacity: n * k)
      for index in 0..<(n * k) {
        let value = Float(generator.nextUnit() - 0.5)
        halves[index] = dtype == .f16 ? halfFromFloat(value) : bfloat16FromFloat(value)
      }
    default:
      let raw = buffer.bindMemory(to: UInt8.self, capacity: bytes)
      for index in 0..<bytes { raw[index] = UInt8(truncatingIfNeeded: generator.next()) }
      // Small positive f16 scales (and negative q4_1 minimums) keep values finite.
      for block in 0..<(bytes / dtype.blockBytes) {
        let base = block * dtype.blockBytes
        (raw[base], raw[base + 1]) = (0x00, 0x20)
        if dtype == .q4_1 { (raw[base + 2], raw[base + 3]) = (0x00, 0xA0) }
      }
    }
    let code = dtype.kernelCode
    if interleaved {
      // The packed form has the stored form's bytes when n is a multiple of 16 (SmolLM2's are).
      let stored = [UInt8](UnsafeRawBufferPointer(start: buffer, count: bytes))
      precondition(Int(lc_interleaved_bytes(code, Int64(n), Int64(k))) == bytes)
      lc_interleave(code, stored, Int64(n), Int64(k), buffer)
    }
    for copy in 1..<copies { (buffer + copy * bytes).copyMemory(from: buffer, byteCount: bytes) }
    let x = randomFloats(m * k, seed: 4)
    var y = [Float](repeating: 0, count: m * n)
    let offsets: [Int64] = [0]
    let lorac = median(runs: runs) {
      for copy in 0..<copies {
        let w = buffer + copy * bytes
        if interleaved {
          lc_matmul_interleaved_path(
            interleavedPath, code, int8Activations ? 1 : 3, &y, x, w, Int64(m), Int64(n),
            Int64(k))
        } else if dtype == .f32 {
          lc_matmul_f32(
            &y, x, w.assumingMemoryBound(to: Float.self), 1, offsets, offsets, Int64(m),
            Int64(n), Int64(k), 0, 1, path)
        } else {
          lc_matmul_quantized(path, code, &y, x, w, Int64(m), Int64(n), Int64(k), nil, 0)
        }
      }
    }
    precondition(y.allSatisfy(\.isFinite))
    let floats = bytes * copies / 4
    let words = buffer.bindMemory(to: Float.self, capacity: floats)
    var sink: Float = 0
    let baseline = median(runs: runs) { sink += lc_memory_read(words, Int64(floats)) }
    withExtendedLifetime(sink) {}
    let name =
      (m == 1 ? "matvec" : "matmul\(m)") + (target.int8Activations ? "_int8act" : "")
    return BenchmarkResult(
      name: "\(name)_\(dtype.rawValue)\(interleaved ? "x16" : "")_\(n)x\(k)",
      threads: Threads.count,
      seconds: lorac / Double(copies), baselineSeconds: baseline / Double(copies),
      baseline: "memory read of the same bytes", work: Double(bytes), unit: "byte", runs: runs)
  }
}
