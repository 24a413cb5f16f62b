import CKernels
import Foundation
import IR
import Runtime
import Testing

extension RuntimeSuite {
  /// The q4_1 and q8_0 products on weights interleaved by 16 rows, on every path this CPU runs
  /// (the VNNI kernels with avx512_vnni, the AVX2 ones with AVX2).
  ///
  /// Against the oracles of `QuantizedMatvecTests`, with S = sum_j |x_j| magnitude_j (magnitude
  /// |d q_j| + |m| for q4_1):
  /// - activations as three int8 digits: the f64 sum over the f32 activations within 1e-5 S (the
  ///   bound every f32 path meets) plus the digits' bound, sum_b (max|x_b| / 127) (1 / (2 * 254^2) + 2^-23)
  ///   sum_{j in b} magnitude_j (per value, half a step of the third digit and the rounding of
  ///   d_x and its inverse), and the stored-layout f32 kernel within 2e-5 S plus that bound;
  /// - rounded to int8 (one digit): an f64 sum over the activations rounded the same way within
  ///   1e-5 S, the f64 sum over the f32 activations within that plus the int8 rounding bound, and
  ///   the stored-layout VNNI kernel.
  struct InterleavedProductTests {
    static var available: Bool { lc_cpu_features() & 1 != 0 }

    /// The interleaved paths this CPU runs, widest first.
    static var paths: [(name: String, code: Int32)] {
      let features = lc_cpu_features()
      return (features & 6 == 6 ? [("vnni", Int32(LC_QUANT_VNNI.rawValue))] : [])
        + (features & 1 != 0 ? [("avx2", Int32(LC_QUANT_AVX2.rawValue))] : [])
    }

    /// The interleaved form of a q4_1 or q8_0 weight.
    static func interleave(_ weight: HostTensor) -> [UInt8] {
      let (n, k) = (Int64(weight.type.shape[0]), Int64(weight.type.shape[1]))
      let code = QuantizedMatvecTests.code(weight.type.dtype)
      var packed = [UInt8](repeating: 0xAA, count: Int(lc_interleaved_bytes(code, n, k)))
      weight.data.withUnsafeBytes { w in _ = lc_interleave(code, w.baseAddress, n, k, &packed) }
      return packed
    }

    static func run(
      _ dtype: DType, digits: Int32, _ packed: [UInt8], _ a: [Float], m: Int, n: Int, k: Int,
      path: Int32 = Int32(LC_QUANT_AUTO.rawValue)
    ) -> [Float]? {
      var out = [Float](repeating: .nan, count: m * n)
      let code = QuantizedMatvecTests.code(dtype)
      let ran = lc_matmul_interleaved_path(
        path, code, digits, &out, a, packed, Int64(m), Int64(n), Int64(k))
      return ran != 0 ? out : nil
    }

    @Test(.enabled(if: available), arguments: [DType.q4_1, .q8_0], [Int32(3), 1])
    func matchesTheOraclesOnAwkwardSizes(dtype: DType, digits: Int32) throws {
      let q = QuantizedMatvecTests.self
      // n: one row, part of a group, a group and one, several with a tail; m: past 8 (two jobs).
      for k in q.widths(dtype) {
        for n in [1, 7, 16, 17, 33, 129] {
          let weight = try q.weights(dtype, n: n, k: k, seed: UInt64(k * 1000 + n))
          let packed = Self.interleave(weight)
          let dequantized = weight.floats().map(Double.init)
          let magnitudes = dtype == .q4_1 ? q.q4_1Magnitudes(weight) : dequantized.map(abs)
          let minimums =
            dtype == .q4_1 ? q.q4_1Minimums(weight) : [Double](repeating: 0, count: n * k)
          for (m, path) in [1, 2, 5, 9].flatMap({ m in Self.paths.map { (m, $0) } }) {
            let a = q.activations(m * k, seed: UInt64(k * 1000 + n + m))
            let rounded = q.int8Rounded(a)
            let out = try #require(
              Self.run(dtype, digits: digits, packed, a, m: m, n: n, k: k, path: path.code))
            // The stored layout's kernel of the same activations: VNNI (int8) or the widest f32
            // one; none for int8 activations on a CPU without VNNI.
            let features = lc_cpu_features()
            let storedPath =
              digits == 1
              ? (features & 6 == 6 ? LC_QUANT_VNNI : nil)
              : (features & 2 != 0 ? LC_QUANT_AVX512 : LC_QUANT_AVX2)
            let stored = storedPath.flatMap {
              q.run(path: Int32($0.rawValue), dtype, weight, a, m: m)
            }
            for i in 0..<m {
              for r in 0..<n {
                var (exact, same, scale, rounding) = (0.0, 0.0, 0.0, 0.0)
                for j in 0..<k {
                  let (x, w, low) = (
                    Double(a[i * k + j]), dequantized[r * k + j], minimums[r * k + j]
                  )
                  exact += x * w
                  same += rounded[i * k + j] * (w - low) + x * low
                  scale += abs(x) * magnitudes[r * k + j]
                }
                for block in stride(from: 0, to: k, by: 32) {
                  let values = a[(i * k + block)..<(i * k + block + 32)]
                  let step = Double(values.reduce(Float(0)) { max($0, abs($1)) }) / 127
                  var weights = 0.0
                  for j in block..<block + 32 { weights += magnitudes[r * k + j] }
                  // Per value: half a step of the last digit (the step is 1/127 of the block's
                  // largest |x|, over 254^2 for the third digit), and for three digits the
                  // rounding of d_x and its inverse (2^-23).
                  let error = digits == 1 ? 0.5 : 0.5 / (254.0 * 254.0) + 0x1p-23
                  rounding += step * error * weights * 1.001
                }
                let value = Double(out[i * n + r])
                let context =
                  "\(dtype) \(path.name) \(digits) digits n=\(n) k=\(k) m=\(m) [\(i), \(r)]"
                if digits == 1 {
                  #expect(abs(value - same) <= q.bound * scale, "\(context) vs int8 in f64")
                }
                #expect(abs(value - exact) <= q.bound * scale + rounding, "\(context) vs f64")
                // The stored layout's kernels round the same activations (int8) or none (f32).
                let slack = digits == 1 ? 0 : rounding
                if let stored {
                  #expect(
                    abs(value - Double(stored[i * n + r])) <= 2 * q.bound * scale + slack,
                    "\(context) vs the stored layout")
                }
              }
            }
          }
        }
      }
    }

    @Test(.enabled(if: available)) func q4_1PackedBytesAndPaddingRows() throws {
      // 17 rows: two groups, the second with 15 zero rows; 2 blocks per row.
      let weight = try QuantizedMatvecTests.weights(.q4_1, n: 17, k: 64, seed: 3)
      let packed = Self.interleave(weight)
      #expect(packed.count == 2 * 2 * 320)
      let bytes = [UInt8](weight.data)
      // Row 16 (group 1, lane 0), block 1: d, m, and value 8c + t / 8c + 4 + t in chunk c.
      let block = Array(bytes[(16 * 40 + 20)..<(16 * 40 + 40)])
      let base = 320 * 3
      #expect(Array(packed[base..<base + 2]) == Array(block[0..<2]))
      #expect(Array(packed[base + 32..<base + 34]) == Array(block[2..<4]))
      let values: [UInt8] = (0..<32).map { (j: Int) -> UInt8 in
        j < 16 ? block[4 + j] & 0xF : block[4 + j - 16] >> 4
      }
      for c in 0..<4 {
        for t in 0..<4 {
          let expected: UInt8 = values[8 * c + t] | values[8 * c + 4 + t] << 4
          #expect(packed[base + 64 + 64 * c + t] == expected)
        }
      }
      // Padding lanes are zero (no stale bytes), so they can never produce a NaN.
      #expect(packed[base + 2..<base + 32].allSatisfy { $0 == 0 })
      for c in 0..<4 {
        let chunk = base + 64 + 64 * c
        #expect(packed[chunk + 4..<chunk + 64].allSatisfy { $0 == 0 })
      }
    }

    @Test(.enabled(if: available)) func q8_0PackedBytesAndPaddingRows() throws {
      let weight = try QuantizedMatvecTests.weights(.q8_0, n: 17, k: 64, seed: 4)
      let packed = Self.interleave(weight)
      #expect(packed.count == 2 * 2 * 544)
      let bytes = [UInt8](weight.data)
      // Row 16 (group 1, lane 0), block 1: d, then value 4c + t flipped in chunk c.
      let block = Array(bytes[(16 * 68 + 34)..<(16 * 68 + 68)])
      let base = 544 * 3
      #expect(Array(packed[base..<base + 2]) == Array(block[0..<2]))
      #expect(packed[base + 2..<base + 32].allSatisfy { $0 == 0 })
      for c in 0..<8 {
        let chunk = base + 32 + 64 * c
        for t in 0..<4 { #expect(packed[chunk + t] == block[2 + 4 * c + t] ^ 0x80) }
        // Padding rows hold the flipped zero.
        #expect(packed[chunk + 4..<chunk + 64].allSatisfy { $0 == 0x80 })
      }
    }

    @Test(.enabled(if: available), arguments: [DType.q4_1, .q8_0], [Int32(3), 1])
    func bitIdenticalAcrossThreadsAndRowCounts(dtype: DType, digits: Int32) throws {
      // k = 2,080: past the 64 blocks of activations prepared at a time; n = 1,529: a last
      // group of 9 rows (one whole half of 8 and one row), split unevenly between threads.
      let (n, k) = (1529, 2080)
      let weight = try QuantizedMatvecTests.weights(dtype, n: n, k: k, seed: 77)
      let packed = Self.interleave(weight)
      let a = QuantizedMatvecTests.activations(3 * k, seed: 78)
      for path in Self.paths {
        func run(_ a: [Float], m: Int) throws -> [Float] {
          try #require(
            Self.run(dtype, digits: digits, packed, a, m: m, n: n, k: k, path: path.code))
        }
        Threads.set(1)
        let one = try run(a, m: 3)
        Threads.set(2)
        let two = try run(a, m: 3)
        Threads.set(nil)
        #expect(one.map(\.bitPattern) == two.map(\.bitPattern), "\(path.name)")
        for i in 0..<3 {
          let single = try run(Array(a[i * k..<(i + 1) * k]), m: 1)
          #expect(
            single.map(\.bitPattern) == Array(one[i * n..<(i + 1) * n]).map(\.bitPattern),
            "\(path.name) row \(i)")
        }
      }
    }

    /// An executable's products of a few rows by q4_1 and q8_0 constants run on their
    /// interleaved forms (made once per constant, counted in `packedWeightBytes`): three digits,
    /// or one for a target with int8 activations; executables of both targets live side by side.
    @Test(.enabled(if: lc_cpu_features() & 6 == 6)) func executablesRunTheInterleavedForms() throws
    {
      let (k, q4, q8) = (576, 48, 33)
      let b = GraphBuilder(name: "decode")
      let x = try b.input(name: "x", shape: [3, k])
      let w4 = try b.constant(name: "w4", shape: [q4, k], dtype: .q4_1)
      let w8 = try b.constant(name: "w8", shape: [q8, k], dtype: .q8_0)
      // w4 twice: one interleaved form serves both products.
      let graph = try b.finish(outputs: [
        try matmul(x, w4, transposeB: true), try matmul(x, w8, transposeB: true),
        try matmul(x, w4, transposeB: true),
      ])
      let q = QuantizedMatvecTests.self
      let weights = [
        "w4": try q.weights(.q4_1, n: q4, k: k, seed: 11),
        "w8": try q.weights(.q8_0, n: q8, k: k, seed: 12),
      ]
      let a = q.activations(3 * k, seed: 13)
      let input = HostTensor(shape: [3, k], floats: a)
      func oracle(_ path: lc_quant_path, _ name: String) throws -> [Float] {
        let weight = try #require(weights[name])
        return try #require(q.run(path: Int32(path.rawValue), weight.type.dtype, weight, a, m: 3))
      }
      let executables = try [false, true].map { int8 in
        try Executable(graph, constants: weights, target: Target(int8Activations: int8))
      }
      for executable in executables {
        #expect(
          executable.packedWeightBytes
            == Int(lc_interleaved_bytes(q.code(.q4_1), Int64(q4), Int64(k)))
            + Int(lc_interleaved_bytes(q.code(.q8_0), Int64(q8), Int64(k))))
      }
      for int8 in [false, true, false] {
        let executable = executables[int8 ? 1 : 0]
        let outputs = try executable.run(inputs: ["x": input]).map { $0.floats() }
        for (output, name) in zip(outputs, ["w4", "w8", "w4"]) {
          let weight = try #require(weights[name])
          let form = Self.interleave(weight)
          let direct = try #require(
            Self.run(
              weight.type.dtype, digits: int8 ? 1 : 3, form, a, m: 3, n: output.count / 3, k: k))
          #expect(output.map(\.bitPattern) == direct.map(\.bitPattern), "\(name) int8 \(int8)")
          // Against the stored-layout kernel of the same activations: the float sums differ in
          // order (and the f32 kernel's activations are not digits).
          let stored = try oracle(int8 ? LC_QUANT_VNNI : LC_QUANT_AVX512, name)
          let scale = stored.map(abs).max() ?? 1
          #expect(zip(output, stored).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(name)")
        }
      }
    }

    /// An `avx2` target's executables: q4_1 constants on the interleaved form's AVX2 kernels (three
    /// digits, one with int8 activations), q8_0 on the stored layout's f32 kernel, or interleaved
    /// with int8 activations; each bit for bit the kernel called directly.
    @Test(.enabled(if: available)) func avx2TargetsRunTheAVX2Kernels() throws {
      let (k, q4, q8) = (608, 40, 17)  // 19 blocks; a half group of 8 and a lone row
      let b = GraphBuilder(name: "decode")
      let x = try b.input(name: "x", shape: [5, k])
      let w4 = try b.constant(name: "w4", shape: [q4, k], dtype: .q4_1)
      let w8 = try b.constant(name: "w8", shape: [q8, k], dtype: .q8_0)
      let graph = try b.finish(outputs: [
        try matmul(x, w4, transposeB: true), try matmul(x, w8, transposeB: true),
      ])
      let q = QuantizedMatvecTests.self
      let weights = [
        "w4": try q.weights(.q4_1, n: q4, k: k, seed: 41),
        "w8": try q.weights(.q8_0, n: q8, k: k, seed: 42),
      ]
      let a = q.activations(5 * k, seed: 43)
      let avx2 = Int32(LC_QUANT_AVX2.rawValue)
      for int8 in [false, true] {
        let executable = try Executable(
          graph, constants: weights, target: Target(isa: .avx2, int8Activations: int8))
        let forms =
          Int(lc_interleaved_bytes(q.code(.q4_1), Int64(q4), Int64(k)))
          + (int8 ? Int(lc_interleaved_bytes(q.code(.q8_0), Int64(q8), Int64(k))) : 0)
        #expect(executable.packedWeightBytes == forms, "int8 \(int8)")
        let outputs = try executable.run(inputs: ["x": HostTensor(shape: [5, k], floats: a)])
        for (output, name) in zip(outputs.map { $0.floats() }, ["w4", "w8"]) {
          let weight = try #require(weights[name])
          let dtype = weight.type.dtype
          let n = output.count / 5
          let direct =
            dtype == .q8_0 && !int8
            ? q.run(path: avx2, dtype, weight, a, m: 5)
            : Self.run(
              dtype, digits: int8 ? 1 : 3, Self.interleave(weight), a, m: 5, n: n, k: k,
              path: avx2)
          #expect(
            output.map(\.bitPattern) == (try #require(direct)).map(\.bitPattern),
            "\(name) int8 \(int8)")
        }
      }
    }

    /// Executables made with one `PackedForms` interleave a shared constant once, and their
    /// products agree bit for bit with an executable's own form.
    @Test(.enabled(if: available)) func storesShareFormsAcrossExecutables() throws {
      let k = 576
      func graph(rows: Int) throws -> Graph {
        let b = GraphBuilder(name: "decode\(rows)")
        let x = try b.input(name: "x", shape: [rows, k])
        let w = try b.constant(name: "w", shape: [40, k], dtype: .q4_1)
        return try b.finish(outputs: [try matmul(x, w, transposeB: true)])
      }
      // Large enough to be read in place (small constants are copied per executable).
      let weights = ["w": try QuantizedMatvecTests.weights(.q4_1, n: 40, k: k, seed: 21)]
      let store = PackedForms()
      let one = try Executable(try graph(rows: 1), constants: weights, packedForms: store)
      let three = try Executable(try graph(rows: 3), constants: weights, packedForms: store)
      let alone = try Executable(try graph(rows: 3), constants: weights)
      let form = Int(lc_interleaved_bytes(QuantizedMatvecTests.code(.q4_1), 40, Int64(k)))
      #expect(store.bytes == form)
      #expect(one.packedWeightBytes == form && three.packedWeightBytes == form)
      #expect(three.packingSeconds == 0 && one.packingSeconds > 0)
      let a = QuantizedMatvecTests.activations(3 * k, seed: 22)
      let shared = try three.run(inputs: ["x": HostTensor(shape: [3, k], floats: a)])[0].floats()
      let own = try alone.run(inputs: ["x": HostTensor(shape: [3, k], floats: a)])[0].floats()
      #expect(shared.map(\.bitPattern) == own.map(\.bitPattern))
    }

    /// A large f32 constant read by a few rows is read from its copy on huge pages (counted in
    /// `packedWeightBytes`), with the same bits as the same product on the weight as an input.
    @Test func largeF32ConstantsOfFewRowProductsMoveToHugePages() throws {
      let (n, k) = (1024, 576)  // 2.25 MB
      func graph(constant: Bool) throws -> Graph {
        let b = GraphBuilder(name: "f32")
        let x = try b.input(name: "x", shape: [2, k])
        let w =
          constant
          ? try b.constant(name: "w", shape: [n, k]) : try b.input(name: "w", shape: [n, k])
        return try b.finish(outputs: [try matmul(x, w, transposeB: true)])
      }
      let weight = HostTensor(
        shape: [n, k], floats: QuantizedMatvecTests.activations(n * k, seed: 31))
      let x = HostTensor(shape: [2, k], floats: QuantizedMatvecTests.activations(2 * k, seed: 32))
      let constant = try Executable(try graph(constant: true), constants: ["w": weight])
      #expect(constant.packedWeightBytes == n * k * 4)
      let input = try Executable(try graph(constant: false))
      #expect(input.packedWeightBytes == 0)
      let a = try constant.run(inputs: ["x": x])[0].floats()
      let b = try input.run(inputs: ["x": x, "w": weight])[0].floats()
      #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
    }
  }
}
