import Foundation
import IR
import Models
import Passes
import Testing

/// Random f64 bindings for every input of `graph` (targets in 0..<limit, one of them ignored).
private func bindings(_ graph: Graph, seed: UInt64, limit: Int) -> [String: DenseTensor] {
  var generator = SplitMix64(seed: seed)
  var result: [String: DenseTensor] = [:]
  for input in graph.inputs {
    let type = graph.type(of: input.value)
    if type.dtype == .i32 {
      var values = (0..<type.elementCount).map { _ in Double(generator.next() % UInt64(limit)) }
      if input.name == "targets" { values[0] = -100 }
      result[input.name] = DenseTensor(dtype: .i32, shape: type.shape, scalars: values)
    } else {
      result[input.name] = DenseTensor(
        dtype: .f32, shape: type.shape,
        scalars: (0..<type.elementCount).map { _ in generator.nextUnit() * 2 - 1 })
    }
  }
  return result
}

/// The largest difference between two lists of outputs, relative to `1 + |reference|`.
private func difference(_ a: [DenseTensor], _ b: [DenseTensor]) -> Double {
  var worst = 0.0
  for (x, y) in zip(a, b) {
    #expect(x.shape == y.shape)
    for (u, v) in zip(x.scalars, y.scalars) { worst = max(worst, abs(u - v) / (1 + abs(v))) }
  }
  return a.count == b.count ? worst : .infinity
}

/// A two-layer Llama-shaped loss graph, small enough for the interpreter.
private func tinyLlama() throws -> Graph {
  let config = LlamaConfig(
    vocabularySize: 11, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 12)
  return try Llama.trace(config, batch: 2, sequence: 3, loss: true)
}

/// Binds the tiny model's weights to random values.
private func weights(_ graph: Graph, seed: UInt64) -> [String: DenseTensor] {
  var generator = SplitMix64(seed: seed)
  var result: [String: DenseTensor] = [:]
  for declaration in graph.declarations where declaration.kind == .constant {
    let type = graph.type(of: declaration.value)
    result[declaration.name] = DenseTensor(
      dtype: .f32, shape: type.shape,
      scalars: (0..<type.elementCount).map { _ in generator.nextUnit() - 0.5 })
  }
  return result
}

@Test func fuseFindsEveryPatternOfTheLlamaTrainGraph() throws {
  let lora = "lora{rank=2,alpha=4,targets=layers.*.attn.{q,k,v,o},seed=3},freeze"
  let plain = try Pipeline(parsing: lora + ",autodiff{loss=loss},dce").run(tinyLlama())
  let fused = try Pipeline(parsing: lora + ",fuse,autodiff{loss=loss},dce").run(tinyLlama())
  // Two norms per layer and the final one; one SwiGLU per layer; one loss; four adapters a layer.
  // Layer 0's first norm reads the frozen embedding, so nothing needs its gradient.
  #expect(
    Fuse.census(fused) == [
      "rms_norm": 5, "rms_norm_grad": 4, "swiglu": 2, "swiglu_grad": 2, "cross_entropy": 1,
      "cross_entropy_grad": 1, "lora_linear": 8, "attention": 2, "attention_grad": 2,
    ])
  #expect(fused.body.count < plain.body.count)
  // No primitive left of what was fused: no one-hot mask, no rsqrt, no silu.
  #expect(!fused.body.contains { $0.op == .compare(.eq) || $0.op == .unary(.rsqrt) })
  #expect(!fused.body.contains { $0.op == .unary(.silu) || $0.op == .cast(to: .f32) })
  // No softmax, and no key/value heads expanded to the query heads' count.
  #expect(!fused.body.contains { if case .softmax = $0.op { true } else { false } })
  #expect(!fused.body.contains { fused.type(of: $0.results[0]).rank == 5 })
  #expect(plain.body.contains { plain.type(of: $0.results[0]).rank == 5 })
  // Same loss and gradients as the unfused graph, with B non-zero so every branch counts.
  var values = bindings(plain, seed: 5, limit: 11).merging(weights(plain, seed: 6)) { a, _ in a }
  var generator = SplitMix64(seed: 8)
  for declaration in plain.declarations where declaration.kind == .parameter {
    let type = plain.type(of: declaration.value)
    values[declaration.name] = DenseTensor(
      dtype: .f32, shape: type.shape,
      scalars: (0..<type.elementCount).map { _ in generator.nextUnit() - 0.5 })
  }
  let interpreter = Interpreter(precision: .f64)
  let expected = try interpreter.run(plain, bindings: values)
  let actual = try interpreter.run(fused, bindings: values)
  #expect(expected.count == 1 + 16)
  #expect(difference(actual, expected) < 1e-12)
}

@Test func fuseOnTheDesignExampleMakesOneLoraLinear() throws {
  let pipeline = try Pipeline(
    parsing: "lora{rank=2,alpha=4,targets=fc,seed=7},freeze,fuse,autodiff{loss=loss},dce")
  let text = Printer().print(try pipeline.run(try fcGraph()))
  #expect(
    text == """
      func @train(%x: f32[4,16]) -> (f32[], f32[16,2], f32[2,32]) {
        const @fc.weight : f32[32,16]
        param @fc.lora_a : f32[16,2] {init=kaiming_uniform, seed=7}
        param @fc.lora_b : f32[2,32] {init=zeros}
        %0, %1 = lora_linear %x, @fc.weight, @fc.lora_a, @fc.lora_b {scale=2.0, transpose_w} : f32[4,2], f32[4,32] "fc"
        %2 = mul %1, %1                            : f32[4,32]
        %3 = reduce_sum %2 {axes=[0,1]}            : f32[]       "loss"
        %4 = fill {value=1.0}                      : f32[]       "loss.grad"
        %5 = reshape %4                            : f32[1,1]
        %6 = broadcast %5                          : f32[4,32]
        %7 = mul %6, %1                            : f32[4,32]
        %8 = mul %6, %1                            : f32[4,32]
        %9 = add %7, %8                            : f32[4,32]   "fc.grad"
        %10 = mul %9, 2.0                          : f32[4,32]
        %11 = matmul %0, %10 {transpose_a}         : f32[2,32]   "fc.lora_b.grad"
        %12 = matmul %10, @fc.lora_b {transpose_b} : f32[4,2]
        %13 = matmul %x, %12 {transpose_a}         : f32[16,2]   "fc.lora_a.grad"
        return %3, %13, %11
      }

      """)
}

@Test func fuseLeavesPatternsWhoseInnerValuesAreUsedElsewhere() throws {
  // silu(g) is also returned, and rsqrt(...) feeds a second product: fusing would compute them
  // twice, so both stay primitive.
  let b = GraphBuilder(name: "shared")
  let x = try b.input(name: "x", shape: [2, 4])
  let w = try b.input(name: "w", shape: [4])
  let r = try rsqrt((x * x).mean(axes: [-1], keepDims: true) + 1e-5)
  let normed = try x * r * w
  let gate = try silu(x)
  let product = try gate * normed
  let graph = try b.finish(outputs: [normed, product, gate, r * 2.0])
  let fused = try Fuse().run(graph)
  #expect(Fuse.census(fused).isEmpty)
  #expect(fused == graph)
}

@Test func fuseAfterAutodiffKeepsWhatTheBackwardPassReads() throws {
  // After autodiff a norm's rsqrt is read by its gradient: such norms are not fused (only layer
  // 0's first norm, whose gradient nothing needs, is); the graph still verifies and computes the
  // same values; the LoRA branches (whose x A the backward reads) are still fused, since
  // lora_linear returns x A.
  let lora = "lora{rank=2,alpha=4,targets=layers.*.attn.{q,v},seed=1},freeze,autodiff{loss=loss}"
  let plain = try Pipeline(parsing: lora + ",dce").run(tinyLlama())
  let late = try Pipeline(parsing: lora + ",fuse,dce").run(tinyLlama())
  #expect(Fuse.census(late)["rms_norm"] == 1)
  #expect(Fuse.census(late)["lora_linear"] == 4)
  let values = bindings(plain, seed: 2, limit: 11).merging(weights(plain, seed: 4)) { a, _ in a }
  let interpreter = Interpreter(precision: .f64)
  #expect(
    difference(
      try interpreter.run(late, bindings: values), try interpreter.run(plain, bindings: values))
      < 1e-12)
}

@Test func fuseTakesNoOptions() throws {
  #expect(throws: PassError.self) { try Pipeline(parsing: "fuse{level=2}") }
  do {
    _ = try Pipeline(parsing: "fuse{level=2}")
  } catch {
    #expect(error.message == "fuse: unknown option 'level' (accepted: none)")
  }
}

@Test func fuseMakesOneAttentionPerLayerOfTheDecodingGraph() throws {
  let config = LlamaConfig(
    vocabularySize: 11, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 12)
  for tokens in [1, 3] {
    let graph = try Llama.traceDecoding(config, batch: 2, tokens: tokens, context: 5)
    let fused = try Fuse().run(graph).compacted()
    try Verifier.verify(fused)
    #expect(Fuse.census(fused) == ["attention": 2, "rms_norm": 5, "swiglu": 2])
    var values = weights(graph, seed: 3)
    var generator = SplitMix64(seed: 4)
    values["tokens"] = DenseTensor(
      shape: [2, tokens], ints: (0..<(2 * tokens)).map { _ in Int32(generator.next() % 11) })
    values["positions"] = DenseTensor(
      shape: [2, tokens], ints: (0..<(2 * tokens)).map { Int32($0 % tokens + 1) })
    values["cache_start"] = DenseTensor(shape: [4], ints: [0, 0, 1, 0])
    // Row 1 of the batch sees only the new slots; row 0 sees the cache's first slot too.
    values["key_mask"] = DenseTensor(
      shape: [2, tokens, 5],
      ints: (0..<(2 * tokens * 5)).map { index in
        let (row, query, slot) = (index / (tokens * 5), index / 5 % tokens, index % 5)
        return slot >= 1 && slot <= 1 + query || (row == 0 && slot == 0) ? 1 : 0
      })
    for declaration in graph.declarations where declaration.kind == .state {
      let type = graph.type(of: declaration.value)
      values[declaration.name] = DenseTensor(
        dtype: .f32, shape: type.shape,
        scalars: (0..<type.elementCount).map { _ in generator.nextUnit() - 0.5 })
    }
    let interpreter = Interpreter(precision: .f64)
    #expect(
      difference(
        try interpreter.run(fused, bindings: values), try interpreter.run(graph, bindings: values))
        < 1e-12)
  }
}
