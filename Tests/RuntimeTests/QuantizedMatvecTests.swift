import CKernels
import Foundation
import IR
import Runtime
import Testing

extension RuntimeSuite {
  /// The decoding products `out [M, N] = a [M, K] x W^T` that read W's GGUF blocks directly, on
  /// every kernel path this machine runs, against two oracles: an f64 sum over the weights as
  /// IR's own Swift decoder dequantizes them, and the plain C reference loop.
  ///
  /// Error bounds, relative to S = sum_j |a_j| * magnitude_j (what f32 rounding is proportional to):
  /// every path sums in f32 over at most 256 values per block and k / blocksize block sums, so
  /// the classic worst case is (256 + 24) * 2^-24 ~ 1.7e-5 S; 1e-5 S is the bound asserted (what
  /// was seen is <= 1.2e-6 S). magnitude_j is |w_j|, except on the vector q4_1 and q4_k paths, which
  /// compute d * sum(q x) + m * sum(x) per (sub-)block and so round relative to |d q_j| + |m|.
  /// One wrong weight moves a result by about S / K >= 1.3e-3 S at these sizes, far outside.
  /// The VNNI path (q8_0, q4_1) rounds each block b of 32 activations to d_b q with
  /// d_b = max|x_b| / 127, so it may also move a result by sum_b (d_b / 2) sum_{j in b} magnitude_j
  /// (asserted with 0.1% slack for the f32 arithmetic of the scale) — and, tightly, it must equal
  /// an f64 sum over the activations rounded the same way in Swift (`int8Rounded`) within 1e-5 S.
  // In the serialized suite: it sets the thread count, and reads the int8 switch that other
  // runtime tests turn on.
  struct QuantizedMatvecTests {
    static let bound = 1e-5
    static let paths: [(name: String, code: Int32)] = [
      ("portable", Int32(LC_QUANT_PORTABLE.rawValue)), ("avx2", Int32(LC_QUANT_AVX2.rawValue)),
      ("avx512", Int32(LC_QUANT_AVX512.rawValue)), ("vnni", Int32(LC_QUANT_VNNI.rawValue)),
    ]

    static func code(_ dtype: DType) -> Int32 { dtype.kernelCode }

    /// Widths K per dtype: block multiples that are not multiples of 2 blocks or of 16 blocks (the
    /// unrolls), SmolLM2's 576 (a group of 16 blocks of 32 and a 2-block tail, the next group's
    /// headers decoded during the first), one past the 2,048 activations prepared at a time (65
    /// blocks of 32, 9 of 256), and tails of 16 lanes for the elementwise types.
    static func widths(_ dtype: DType) -> [Int] {
      switch dtype {
      case .q8_0, .q4_1: [32, 96, 288, 576, 2080]
      case .q4_k, .q6_k: [256, 768, 2304]
      default: [7, 33, 288]
      }
    }

    /// Random blocks whose f16 scales include zero, negative, subnormal and large values.
    static func weights(_ dtype: DType, n: Int, k: Int, seed: UInt64) throws -> HostTensor {
      var generator = SplitMix64(seed: seed)
      let type = TensorType(dtype, [n, k])
      var bytes = (0..<type.byteCount).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      func scale() -> UInt16 {
        switch generator.next() % 8 {
        case 0: return 0x0001  // the smallest subnormal
        case 1: return 0x0000
        case 2: return 0x6400  // 1024
        case 3: return halfFromFloat(-Float(generator.nextUnit() * 0.1))
        default: return halfFromFloat(Float(generator.nextUnit() * 0.1))
        }
      }
      func setHalf(_ offset: Int, _ bits: UInt16) {
        bytes[offset] = UInt8(bits & 0xFF)
        bytes[offset + 1] = UInt8(bits >> 8)
      }
      let blocks = type.byteCount / dtype.blockBytes
      for block in 0..<blocks {
        let base = block * dtype.blockBytes
        switch dtype {
        case .q8_0: setHalf(base, scale())
        case .q4_1, .q4_k:
          setHalf(base, scale())
          setHalf(base + 2, scale())
        case .q6_k: setHalf(base + 208, scale())
        case .f16: setHalf(base, halfFromFloat(Float(generator.nextUnit() * 4 - 2)))
        case .bf16: setHalf(base, bfloat16FromFloat(Float(generator.nextUnit() * 4 - 2)))
        case .f32:
          let bits = Float(generator.nextUnit() * 4 - 2).bitPattern
          for byte in 0..<4 { bytes[base + byte] = UInt8(truncatingIfNeeded: bits >> (8 * byte)) }
        default: break
        }
      }
      return try HostTensor(type: type, data: Data(bytes))
    }

    /// Activations in [-1, 1) with one in 16 scaled up to [-1000, 1000).
    static func activations(_ count: Int, seed: UInt64) -> [Float] {
      var generator = SplitMix64(seed: seed)
      return (0..<count).map { _ in
        let value = Float(generator.nextUnit() * 2 - 1)
        return generator.next() % 16 == 0 ? value * 1000 : value
      }
    }

    /// |d q_j| + |m| for each weight of a q4_1 matrix (the magnitudes its fast paths round to).
    static func q4_1Magnitudes(_ weight: HostTensor) -> [Double] {
      let bytes = [UInt8](weight.data)
      let count = weight.type.elementCount
      return (0..<count).map { index in
        let base = index / 32 * 20
        let d = Double(floatFromHalf(UInt16(bytes[base]) | UInt16(bytes[base + 1]) << 8))
        let m = Double(floatFromHalf(UInt16(bytes[base + 2]) | UInt16(bytes[base + 3]) << 8))
        let j = index % 32
        let q = j < 16 ? bytes[base + 4 + j] & 0xF : bytes[base + 4 + j - 16] >> 4
        return abs(d * Double(q)) + abs(m)
      }
    }

    /// |d sc q_j| + |dmin m| for each weight of a q4_k matrix.
    static func q4_kMagnitudes(_ weight: HostTensor) -> [Double] {
      let bytes = [UInt8](weight.data)
      return (0..<weight.type.elementCount).map { index in
        let base = index / 256 * 144
        func half(_ offset: Int) -> Double {
          Double(floatFromHalf(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8))
        }
        let (d, dmin) = (half(base), half(base + 2))
        let (chunk, within) = ((index % 256) / 64, index % 64)
        let j = 2 * chunk + within / 32
        let s = { (i: Int) in Int(bytes[base + 4 + i]) }
        let sc = j < 4 ? s(j) & 63 : (s(j + 4) & 0xF) | ((s(j - 4) >> 6) << 4)
        let m = j < 4 ? s(j + 4) & 63 : (s(j + 4) >> 4) | ((s(j) >> 6) << 4)
        let byte = Int(bytes[base + 16 + 32 * chunk + within % 32])
        let q = within < 32 ? byte & 0xF : byte >> 4
        return abs(d * Double(sc * q)) + abs(dmin * Double(m))
      }
    }

    /// The activations as the VNNI path sees them: per block of 32, d q with d = max|x| / 127 and
    /// q = x * (127 / max|x|) rounded to nearest even, in f32 as the kernel computes them.
    static func int8Rounded(_ x: [Float]) -> [Double] {
      stride(from: 0, to: x.count, by: 32).flatMap { start in
        let block = x[start..<start + 32]
        let amax = block.reduce(Float(0)) { max($0, abs($1)) }
        let (d, inverse) = (amax / 127, amax > 0 ? 127 / amax : 0)
        return block.map { Double(d) * Double(($0 * inverse).rounded(.toNearestOrEven)) }
      }
    }

    /// The q4_1 minimum m of the block holding each weight (the VNNI path's exact term m sum(x)).
    static func q4_1Minimums(_ weight: HostTensor) -> [Double] {
      let bytes = [UInt8](weight.data)
      return (0..<weight.type.elementCount).map { index in
        let base = index / 32 * 20
        return Double(floatFromHalf(UInt16(bytes[base + 2]) | UInt16(bytes[base + 3]) << 8))
      }
    }

    /// Runs one path; nil when this CPU or build has no kernel of that path for dtype.
    static func run(
      path: Int32, _ dtype: DType, _ weight: HostTensor, _ a: [Float], m: Int
    ) -> [Float]? {
      let (n, k) = (weight.type.shape[0], weight.type.shape[1])
      var out = [Float](repeating: .nan, count: m * n)
      let ran = weight.data.withUnsafeBytes { w in
        lc_matmul_quantized_path(
          path, code(dtype), &out, a, w.baseAddress, Int64(m), Int64(n), Int64(k))
      }
      return ran != 0 ? out : nil
    }

    @Test func everyPathMatchesF64AndTheReferenceLoop() throws {
      var ranPaths: Set<String> = []
      for (index, dtype) in [DType.q8_0, .q4_1, .q4_k, .q6_k, .f16, .bf16, .f32].enumerated() {
        for k in Self.widths(dtype) {
          for n in awkwardSizes {
            let seed = UInt64(index * 1_000_000 + k * 1000 + n)
            let weight = try Self.weights(dtype, n: n, k: k, seed: seed)
            let dequantized = weight.floats().map(Double.init)
            let plainMagnitudes = dequantized.map(abs)
            let splitMagnitudes =
              dtype == .q4_1
              ? Self.q4_1Magnitudes(weight)
              : dtype == .q4_k ? Self.q4_kMagnitudes(weight) : plainMagnitudes
            let minimums =
              dtype == .q4_1 ? Self.q4_1Minimums(weight) : [Double](repeating: 0, count: n * k)
            for m in [1, 2, 3, 5, 8] {
              let a = Self.activations(m * k, seed: seed &+ UInt64(m))
              let rounded = dtype == .q4_1 || dtype == .q8_0 ? Self.int8Rounded(a) : []
              // The plain reference loop, one activation row at a time.
              var reference = [Float](repeating: 0, count: m * n)
              weight.data.withUnsafeBytes { w in
                for i in 0..<m {
                  a.withUnsafeBufferPointer { rows in
                    reference.withUnsafeMutableBufferPointer { out in
                      lc_matvec_quantized_reference(
                        Self.code(dtype), out.baseAddress! + i * n, rows.baseAddress! + i * k,
                        w.baseAddress, Int64(n), Int64(k))
                    }
                  }
                }
              }
              for path in Self.paths {
                guard let out = Self.run(path: path.code, dtype, weight, a, m: m) else { continue }
                ranPaths.insert("\(dtype.rawValue) \(path.name)")
                let magnitudes = path.name == "portable" ? plainMagnitudes : splitMagnitudes
                for i in 0..<m {
                  for r in 0..<n {
                    var exact = 0.0
                    var scale = 0.0
                    var rounding = 0.0
                    for j in 0..<k {
                      let x = Double(a[i * k + j])
                      exact += x * dequantized[r * k + j]
                      scale += abs(x) * magnitudes[r * k + j]
                    }
                    let value = Double(out[i * n + r])
                    let context = "\(dtype.rawValue) \(path.name) n=\(n) k=\(k) m=\(m) [\(i), \(r)]"
                    if path.name == "vnni" {
                      var same = 0.0
                      for j in 0..<k {
                        let (w, low) = (dequantized[r * k + j], minimums[r * k + j])
                        same += rounded[i * k + j] * (w - low) + Double(a[i * k + j]) * low
                      }
                      #expect(abs(value - same) <= Self.bound * scale, "\(context) vs int8 in f64")
                      for block in stride(from: 0, to: k, by: 32) {
                        let values = a[(i * k + block)..<(i * k + block + 32)]
                        let step = Double(values.reduce(Float(0)) { max($0, abs($1)) }) / 127
                        let weights = (block..<block + 32).map { magnitudes[r * k + $0] }
                        rounding += step / 2 * weights.reduce(0, +) * 1.001
                      }
                    }
                    #expect(
                      abs(value - exact) <= Self.bound * scale + rounding, "\(context) vs f64")
                    #expect(
                      abs(value - Double(reference[i * n + r])) <= 2 * Self.bound * scale
                        + rounding,
                      "\(context) vs reference loop")
                  }
                }
              }
            }
          }
        }
      }
      // Every path this CPU can run did run (a missing kernel would otherwise pass silently).
      let features = lc_cpu_features()
      for dtype in DType.allCases where dtype != .i32 {
        #expect(ranPaths.contains("\(dtype.rawValue) portable"))
      }
      if features & 1 != 0 {
        for name in ["q8_0", "q4_1", "f16", "bf16", "f32"] {
          #expect(ranPaths.contains("\(name) avx2"), "\(name) avx2")
        }
      }
      if features & 2 != 0 {
        for name in ["q8_0", "q4_1", "q4_k", "q6_k", "f16", "bf16", "f32"] {
          #expect(ranPaths.contains("\(name) avx512"), "\(name) avx512")
        }
      }
      if features & 6 == 6 {
        #expect(ranPaths.contains("q8_0 vnni") && ranPaths.contains("q4_1 vnni"))
      }
    }

    @Test func bestPathIsTheWidestThisCPURuns() {
      let features = lc_cpu_features()
      let exact =
        features & 2 != 0 ? LC_QUANT_AVX512 : features & 1 != 0 ? LC_QUANT_AVX2 : LC_QUANT_PORTABLE
      #expect(lc_quant_best_path(Self.code(.q4_1)) == Int32(exact.rawValue))
      #expect(lc_quant_best_path(Self.code(.q8_0)) == Int32(exact.rawValue))
      #expect(lc_quant_best_path(Self.code(.f16)) == Int32(exact.rawValue))
      #expect(lc_quant_best_path(Self.code(.bf16)) == Int32(exact.rawValue))
      // k-quants have AVX-512 kernels only: without AVX-512 the portable loop serves them.
      let wide = Int32((features & 2 != 0 ? LC_QUANT_AVX512 : LC_QUANT_PORTABLE).rawValue)
      #expect(lc_quant_best_path(Self.code(.q6_k)) == wide)
      #expect(lc_quant_best_path(Self.code(.q4_k)) == wide)
      // The host's plan (f32 activations) takes the same path for every dtype.
      for dtype in DType.allCases where dtype != .i32 {
        #expect(
          KernelPlan.quantizedPath(dtype, .host).quantPathCode
            == lc_quant_best_path(Self.code(dtype)), "\(dtype)")
      }
    }

    /// The path a kernel plan gives a few rows by a stored-layout weight: the widest with a kernel
    /// for the dtype within the target's tier, VNNI only with int8 activations.
    @Test func plannedPathsFollowTheTargetsTier() {
      let expected: [(Target, DType, Target.ISA)] = [
        (Target(isa: .portable), .q4_1, .portable), (Target(isa: .avx2), .q4_1, .avx2),
        (Target(isa: .avx2), .q4_k, .portable), (Target(isa: .avx2), .f32, .avx2),
        (Target(isa: .avx2), .f16, .avx2), (Target(isa: .avx2), .bf16, .avx2),
        (Target(isa: .avx512), .q4_k, .avx512), (Target(isa: .avx512), .f32, .avx512),
        (Target(isa: .avx512VNNI), .q4_1, .avx512),
        (Target(isa: .avx512VNNI, int8Activations: true), .q4_1, .avx512VNNI),
        (Target(isa: .avx512BF16, int8Activations: true), .q8_0, .avx512VNNI),
        (Target(isa: .avx512BF16, int8Activations: true), .f16, .avx512),
        (Target(isa: .avx2, int8Activations: true), .q8_0, .avx2),
      ]
      for (target, dtype, isa) in expected {
        #expect(KernelPlan.quantizedPath(dtype, target) == isa, "\(target) \(dtype)")
      }
      // Constants' interleaved forms: VNNI from avx512-vnni; below it AVX2 for q4_1, and for q8_0
      // only with int8 activations; none on the portable tier or for other dtypes.
      let interleaved: [(Target, DType, Target.ISA?)] = [
        (Target(isa: .portable), .q4_1, nil), (Target(isa: .avx2), .q4_1, .avx2),
        (Target(isa: .avx2), .q8_0, nil), (Target(isa: .avx2, int8Activations: true), .q8_0, .avx2),
        (Target(isa: .avx512), .q4_1, .avx2), (Target(isa: .avx512), .q4_k, nil),
        (Target(isa: .avx512VNNI), .q8_0, .avx512VNNI), (Target(isa: .avx512BF16), .f16, nil),
      ]
      for (target, dtype, isa) in interleaved {
        #expect(KernelPlan.interleavedPath(dtype, target) == isa, "\(target) \(dtype)")
      }
    }

    @Test func resultsAreBitIdenticalAcrossThreadsRepeatsAndRowCounts() throws {
      // The SmolLM2 MLP shape, large enough to run in parallel; a k of 1,536 spans 48 blocks, so
      // the 64-block activation chunks and 16-block header groups both have remainders.
      for dtype in [DType.q4_1, .q8_0, .f16, .q4_k, .q6_k] {
        let (n, k) = (1536, 1536)
        let weight = try Self.weights(dtype, n: n, k: k, seed: 77)
        let a = Self.activations(3 * k, seed: 78)
        for path in Self.paths {
          Threads.set(1)
          guard let one = Self.run(path: path.code, dtype, weight, a, m: 3) else { continue }
          Threads.set(2)
          let two = Self.run(path: path.code, dtype, weight, a, m: 3)
          let again = Self.run(path: path.code, dtype, weight, a, m: 3)
          Threads.set(nil)
          #expect(one.map(\.bitPattern) == two?.map(\.bitPattern), "\(dtype) \(path.name)")
          #expect(two?.map(\.bitPattern) == again?.map(\.bitPattern), "\(dtype) \(path.name)")
          // Each activation row's arithmetic does not depend on its neighbours: a 3-row product
          // equals three matrix-vector products bit for bit.
          for i in 0..<3 {
            let single = Self.run(
              path: path.code, dtype, weight, Array(a[i * k..<(i + 1) * k]), m: 1)
            #expect(
              single?.map(\.bitPattern) == Array(one[i * n..<(i + 1) * n]).map(\.bitPattern),
              "\(dtype) \(path.name) row \(i)")
          }
        }
      }
    }

    @Test func moreThanEightRowsGoInGroupsAndZeroWidthIsZero() throws {
      let weight = try Self.weights(.q4_1, n: 33, k: 96, seed: 5)
      let a = Self.activations(11 * 96, seed: 6)
      let whole = try #require(
        Self.run(path: Int32(LC_QUANT_AUTO.rawValue), .q4_1, weight, a, m: 11))
      let first = try #require(
        Self.run(path: Int32(LC_QUANT_AUTO.rawValue), .q4_1, weight, Array(a[0..<8 * 96]), m: 8))
      let rest = try #require(
        Self.run(path: Int32(LC_QUANT_AUTO.rawValue), .q4_1, weight, Array(a[(8 * 96)...]), m: 3))
      #expect(whole.map(\.bitPattern) == (first + rest).map(\.bitPattern))
      var out = [Float](repeating: .nan, count: 6)
      lc_matmul_quantized(
        Int32(LC_QUANT_PORTABLE.rawValue), Self.code(.q8_0), &out, [], [], 2, 3, 0, nil, 0)
      #expect(out == [0, 0, 0, 0, 0, 0])
    }
  }
}

typealias QuantizedMatvecTests = RuntimeSuite.QuantizedMatvecTests
