import Foundation
import IR
import Models
import Runtime
import TestSupport
import Testing

/// A randomly initialised 2-layer Llama-shaped decoder with grouped-query attention.
let tinyLlama = LlamaConfig(
  vocabularySize: 67, embeddingLength: 64, layerCount: 2, headCount: 4, keyValueHeadCount: 2,
  feedForwardLength: 96, ropeTheta: 10_000, normEpsilon: 1e-5)

extension RuntimeSuite {
  @Test(arguments: [DType.f16, .bf16, .q8_0, .q4_1, .q4_k, .q6_k])
  func quantizedMatmulAndGatherReadBlocksDirectly(_ dtype: DType) throws {
    let k = dtype.blockSize >= 256 ? 512 : 96  // Several blocks per row.
    for m in [1, 3, 7, 33] {
      for n in [1, 7, 129] {
        let b = GraphBuilder(name: "q")
        let x = try b.input(name: "x", shape: [m, k])
        let w = try b.constant(name: "w", shape: [n, k], dtype: dtype)
        let graph = try b.finish(outputs: [try matmul(x, w, transposeB: true)])
        let weight = try randomStorage(TensorType(dtype, [n, k]), seed: UInt64(m * 1000 + n))
        // bf16 weights with more than 8 rows run on bf16-rounded activations (bf16Tests).
        #expect(
          try compareWithInterpreter(
            graph, constants: ["w": weight], scale: .tensor, bf16Inputs: dtype == .bf16 && m > 8)
            <= accumulationBound, "\(dtype) \(m)x\(n)")
      }
    }
    // Used as stored (the input gradient of a quantized linear): x [m, n] x W [n, k].
    for m in [1, 5] {
      let b = GraphBuilder(name: "qnt")
      let x = try b.input(name: "x", shape: [m, 7])
      let w = try b.constant(name: "w", shape: [7, k], dtype: dtype)
      let graph = try b.finish(outputs: [try matmul(x, w)])
      let weight = try randomStorage(TensorType(dtype, [7, k]), seed: UInt64(m))
      #expect(
        try compareWithInterpreter(graph, constants: ["w": weight], scale: .tensor)
          <= accumulationBound, "\(dtype) as stored, m = \(m)")
    }
    let b = GraphBuilder(name: "embed")
    let ids = try b.input(name: "ids", shape: [2, 5], dtype: .i32)
    let table = try b.constant(name: "table", shape: [9, k], dtype: dtype)
    let graph = try b.finish(outputs: [try gather(table, ids, axis: 0), try table.cast(to: .f32)])
    let weight = try randomStorage(TensorType(dtype, [9, k]), seed: 5)
    #expect(try compareWithInterpreter(graph, intLimit: 9, constants: ["table": weight]) == exact)
  }

  @Test func quantizedDotProductsMatchTheirReferenceLoops() throws {
    // The hand-written AVX2 q8_0 / q4_1 dot products against the plain loop kept beside them.
    for dtype in [DType.q8_0, .q4_1] {
      let (n, k) = (129, 576)
      let weight = try randomStorage(TensorType(dtype, [n, k]), seed: 11)
      let x = randomTensor(TensorType(.f32, [k]), seed: 3).floats
      let fast = matvec(dtype, weight, x, reference: false)
      let plain = matvec(dtype, weight, x, reference: true)
      for (a, b) in zip(fast, plain) { #expect(abs(a - b) <= 1e-4 * (1 + abs(b))) }
    }
  }

  @Test func mlpMatchesInterpreter() throws {
    let graph = try MLP.trace(batch: 4)
    let executable = try Executable(graph)
    let x = HostTensor(shape: [4, 2], floats: MLP.xorInputs)
    let labels = HostTensor(shape: [4, 2], floats: MLP.xorLabels)
    let outputs = try executable.run(inputs: ["x": x, "labels": labels])
    let expected = try Interpreter().run(
      graph, bindings: ["x": DenseTensor(x), "labels": DenseTensor(labels)])
    for (actual, reference) in zip(outputs, expected) {
      for (a, b) in zip(actual.floats(), reference.floats) {
        #expect(abs(a - b) <= 1e-5 * (1 + abs(b)))
      }
    }
    // The arena reuses space: less than the sum of all intermediates.
    #expect(executable.plan.arenaBytes < executable.plan.naiveBytes)
  }

  @Test func twoLayerLlamaMatchesInterpreter() throws {
    for quantized in [false, true] {
      let graph = try Llama.trace(tinyLlama, batch: 2, sequence: 7) { name in
        quantized && name.hasSuffix("attn_q.weight")
          ? .q8_0 : quantized && name.hasSuffix("ffn_up.weight") ? .q4_1 : nil
      }
      let weights = try randomWeights(graph, seed: 42)
      var bindings = weights.mapValues(DenseTensor.init)
      let tokens = randomTensor(TensorType(.i32, [2, 7]), seed: 9, intLimit: 67)
      let positions = DenseTensor(shape: [2, 7], ints: (0..<14).map { Int32($0 % 7) })
      bindings["tokens"] = tokens
      bindings["positions"] = positions
      let expected = try Interpreter().run(graph, bindings: bindings)[0]
      let executable = try Executable(graph, constants: weights)
      let actual = try executable.run(inputs: ["tokens": tokens.host, "positions": positions.host])[
        0]
      var worst = 0.0
      for (a, b) in zip(DenseTensor(actual).scalars, expected.scalars) {
        worst = max(worst, abs(a - b) / (1 + abs(b)))
      }
      #expect(worst <= 1e-4, "quantized: \(quantized)")
      #expect(executable.plan.arenaBytes < executable.plan.naiveBytes / 2)
    }
  }

  @Test func sameThreadCountGivesBitIdenticalOutputs() throws {
    let graph = try Llama.trace(tinyLlama, batch: 2, sequence: 7)
    let weights = try randomWeights(graph, seed: 1)
    let inputs = [
      "tokens": randomTensor(TensorType(.i32, [2, 7]), seed: 2, intLimit: 67).host,
      "positions": HostTensor(shape: [2, 7], ints: (0..<14).map { Int32($0 % 7) }),
    ]
    for threads in [1, 2] {
      Threads.set(threads)
      let first = try Executable(graph, constants: weights).run(inputs: inputs)
      let second = try Executable(graph, constants: weights).run(inputs: inputs)
      #expect(first == second)
    }
    Threads.set(nil)
  }

  @Test func bindingErrorsNameTheValue() throws {
    let graph = try MLP.trace()
    #expect(throws: RuntimeError(message: "'x' is f32[4,2], got f32[2,4]")) {
      try Executable(graph).set(
        "x", HostTensor(shape: [2, 4], floats: [Float](repeating: 0, count: 8)))
    }
    let llama = try Llama.trace(tinyLlama, batch: 1, sequence: 2)
    #expect(throws: RuntimeError(message: "no data for constant @token_embd.weight : f32[67,64]")) {
      try Executable(llama)
    }
  }
}
