import CKernels
import Foundation
import IR
import Runtime
import TestSupport
import Testing

/// A graph `out = x op(w)` with `w` a bf16 constant of `rows` x `k` rows of x.
private func bf16Product(rows: Int, n: Int, k: Int, transposeB: Bool) throws -> (
  Graph, HostTensor
) {
  let b = GraphBuilder(name: "bf16")
  let x = try b.input(name: "x", shape: [rows, k])
  let shape = transposeB ? [n, k] : [k, n]
  let w = try b.constant(name: "w", shape: shape, dtype: .bf16)
  let graph = try b.finish(outputs: [try matmul(x, w, transposeB: transposeB)])
  let weight = try randomStorage(TensorType(.bf16, shape), seed: UInt64(rows * 7919 + n * 31 + k))
  return (graph, weight)
}

extension RuntimeSuite {
  /// The packed bf16 products (more than 8 rows) on bf16 activations agree with the interpreter
  /// to f32 summation order, on awkward sizes: row tiles of 12 with every tail, column panels of
  /// 32 with masked tails, odd K (a zero pad in the last pair) and K over several 256-pair blocks.
  @Test(.enabled(if: Target.host.packsBF16Weights, "needs avx512_bf16"))
  func packedBF16ProductsMatchTheInterpreter() throws {
    for (rows, n, k) in [(9, 1, 3), (12, 33, 7), (13, 3, 33), (33, 129, 129), (129, 7, 1100)] {
      for transposeB in [true, false] {
        let (graph, weight) = try bf16Product(rows: rows, n: n, k: k, transposeB: transposeB)
        #expect(KernelPlan(graph, target: .host).entries[0].kernel == .bf16Packed)
        let difference = try compareWithInterpreter(
          graph, constants: ["w": weight], scale: .tensor, bf16Inputs: true)
        #expect(difference <= accumulationBound, "\(rows)x\(n)x\(k) transpose_b \(transposeB)")
      }
    }
  }

  /// On f32 activations the only extra error is their rounding to bf16, at most 2^-9 |x| each:
  /// |out - reference| <= 2^-9 sum_k |x_k| |w_k| (plus f32 summation), checked per element
  /// against an f64 sum of the unrounded values.
  @Test(.enabled(if: Target.host.packsBF16Weights, "needs avx512_bf16"))
  func packedBF16ProductsRoundActivationsOnly() throws {
    let (rows, n, k) = (21, 40, 600)
    let (graph, weight) = try bf16Product(rows: rows, n: n, k: k, transposeB: true)
    var generator = SplitMix64(seed: 3)
    let x = (0..<(rows * k)).map { _ in Float(generator.nextUnit() * 4 - 2) }
    let w = weight.floats()
    let executable = try Executable(graph, constants: ["w": weight])
    let out = try executable.run(inputs: ["x": HostTensor(shape: [rows, k], floats: x)])[0]
      .floats()
    var worst = 0.0
    for i in 0..<rows {
      for j in 0..<n {
        var (sum, magnitude) = (0.0, 0.0)
        for t in 0..<k {
          let term = Double(x[i * k + t]) * Double(w[j * k + t])
          sum += term
          magnitude += abs(term)
        }
        let bound = 0x1p-9 * magnitude + Double(k) * 0x1p-24 * magnitude
        worst = max(worst, abs(Double(out[i * n + j]) - sum) / bound)
      }
    }
    #expect(worst <= 1, "worst error / bound \(worst)")
    // And the rounding is really there: bf16 products are not f32 products.
    #expect(worst > 1e-3)
  }

  /// Each output is one thread's sum in a fixed order: 1 and 2 threads give the same bits.
  @Test(.enabled(if: Target.host.packsBF16Weights, "needs avx512_bf16"))
  func packedBF16ProductsAreBitIdenticalAcrossThreadCounts() throws {
    let (graph, weight) = try bf16Product(rows: 200, n: 300, k: 700, transposeB: false)
    var generator = SplitMix64(seed: 9)
    let x = HostTensor(
      shape: [200, 700], floats: (0..<(200 * 700)).map { _ in Float(generator.nextUnit() - 0.5) })
    var results: [Data] = []
    for threads in [1, 2] {
      Threads.set(threads)
      let executable = try Executable(graph, constants: ["w": weight])
      results.append(try executable.run(inputs: ["x": x])[0].data)
    }
    Threads.set(nil)
    #expect(results[0] == results[1])
  }

  /// Without bf16 products (a target with them off, or a tier below avx512-bf16) bf16 weights
  /// are decoded to f32 for sgemm: exact f32 products of the unrounded activations.
  @Test func bf16ProductsFallBackToF32() throws {
    var targets = [Target(bf16Products: false)]
    targets += Target.ISA.allCases.filter { $0 < .avx512BF16 && $0 <= .host }.map {
      Target(isa: $0)
    }
    for target in targets {
      for transposeB in [true, false] {
        let (graph, weight) = try bf16Product(rows: 33, n: 65, k: 96, transposeB: transposeB)
        #expect(
          KernelPlan(graph, target: target).entries[0].kernel
            == (transposeB ? .dequantizeSgemm : .dequantizeSgemmNT))
        #expect(
          try compareWithInterpreter(
            graph, constants: ["w": weight], scale: .tensor, target: target)
            <= accumulationBound, "\(target)")
      }
    }
  }

  /// `lora_linear` on a bf16 base weight: the base product is packed, the branch stays f32.
  @Test(.enabled(if: Target.host.packsBF16Weights, "needs avx512_bf16"))
  func loraLinearOnBF16WeightsMatchesTheInterpreter() throws {
    let k = 96
    for (m, n, r) in [(33, 129, 8), (130, 65, 4)] {
      for transposeW in [true, false] {
        let shape = transposeW ? [n, k] : [k, n]
        let graph = try loraLinearGraph(
          m: m, n: n, k: k, r: r, dtype: .bf16, transposeW: transposeW)
        #expect(KernelPlan(graph, target: .host).entries[0].kernel == .bf16Packed)
        let weight = try randomStorage(TensorType(.bf16, shape), seed: UInt64(m * 31 + n))
        #expect(
          try compareWithInterpreter(
            graph, constants: ["w": weight], scale: .tensor, bf16Inputs: true)
            <= accumulationBound, "m \(m) n \(n) r \(r) transpose_w \(transposeW)")
      }
    }
  }
}
