import Foundation
import IR
import Models
import Passes
import TestSupport
import Testing

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
  // fold first (it merges the tracer's reshapes) finds the same patterns.
  let folded = try Pipeline(parsing: lora + ",fold,fuse,autodiff{loss=loss},dce").run(tinyLlama())
  #expect(Fuse.census(folded) == Fuse.census(fused))
  #expect(!folded.body.contains { folded.type(of: $0.results[0]).rank == 5 })
  #expect(plain.body.contains { plain.type(of: $0.results[0]).rank == 5 })
  // Same loss and gradients as the unfused graph, with B non-zero so every branch counts.
  let values = randomInputs(plain, seed: 5, limit: 11).merging(randomDeclarations(plain, seed: 6)) {
    a, _ in a
  }
  .merging(randomDeclarations(plain, seed: 8, kind: .parameter)) { a, _ in a }
  let interpreter = Interpreter(precision: .f64)
  let expected = try interpreter.run(plain, bindings: values)
  let actual = try interpreter.run(fused, bindings: values)
  #expect(expected.count == 1 + 16)
  #expect(difference(actual, expected) < 1e-12)
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
  let values = randomInputs(plain, seed: 2, limit: 11).merging(randomDeclarations(plain, seed: 4)) {
    a, _ in a
  }
  let interpreter = Interpreter(precision: .f64)
  #expect(
    difference(
      try interpreter.run(late, bindings: values), try interpreter.run(plain, bindings: values))
      < 1e-12)
}

@Test func fuseTakesNoOptions() throws {
  #expect(throws: PassError(message: "fuse: unknown option 'level' (accepted: elementwise)")) {
    try Pipeline(parsing: "fuse{level=2}")
  }
}

/// Random weights, tokens and cache contents for a decoding graph of `tokens` new tokens per row
/// of 2 written at cache `slot` of 5; `visible(row, query, slot)` is the key mask.
private func decodingBindings(
  _ graph: Graph, tokens: Int, slot: Int, seed: UInt64, visible: (Int, Int, Int) -> Bool
) -> [String: DenseTensor] {
  var values = randomDeclarations(graph, seed: seed)
  var generator = SplitMix64(seed: seed &+ 1)
  values["tokens"] = DenseTensor(
    shape: [2, tokens], ints: (0..<(2 * tokens)).map { _ in Int32(generator.next() % 11) })
  values["positions"] = DenseTensor(
    shape: [2, tokens], ints: (0..<(2 * tokens)).map { Int32($0 % tokens + slot) })
  values["cache_start"] = DenseTensor(shape: [4], ints: [0, 0, Int32(slot), 0])
  values["key_mask"] = DenseTensor(
    shape: [2, tokens, 5],
    ints: (0..<(2 * tokens * 5)).map { index in
      visible(index / (tokens * 5), index / 5 % tokens, index % 5) ? 1 : 0
    })
  values.merge(randomDeclarations(graph, generator: &generator, kind: .state)) { a, _ in a }
  return values
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
    // Row 1 of the batch sees only the new slots; row 0 sees the cache's first slot too.
    let values = decodingBindings(graph, tokens: tokens, slot: 1, seed: 3) { row, query, slot in
      slot >= 1 && slot <= 1 + query || (row == 0 && slot == 0)
    }
    let interpreter = Interpreter(precision: .f64)
    #expect(
      difference(
        try interpreter.run(fused, bindings: values), try interpreter.run(graph, bindings: values))
        < 1e-12)
  }
}

@Test func reassociateNeverFormsTheAdapterProduct() throws {
  // y = x (A B) as a user might write it: after reassociate it is (x A) B, with no [16, 32] value.
  let b = GraphBuilder(name: "chain")
  let x = try b.input(name: "x", shape: [4, 16])
  let a = try b.parameter(name: "a", shape: [16, 2], initializer: .constant(0.5))
  let bb = try b.parameter(name: "b", shape: [2, 32], initializer: .constant(-0.25))
  let y = try matmul(x, matmul(a, bb)).named("y")
  let graph = try b.finish(outputs: [try (y * y).sum().named("loss")])
  let rewritten = try Pipeline(parsing: "reassociate,autodiff{loss=loss},dce").run(graph)
  // The rewritten text is pinned by Golden/reassociate/adapter-product.ir.
  #expect(!rewritten.types.contains(TensorType(.f32, [16, 32])))
  // The same loss and gradients as the original order.
  let values = ["x": DenseTensor(shape: [4, 16], floats: (0..<64).map { Float($0 % 7) - 3 })]
  let interpreter = Interpreter(precision: .f64)
  let reference = try interpreter.run(
    try Pipeline(parsing: "autodiff{loss=loss},dce").run(graph), bindings: values)
  #expect(difference(try interpreter.run(rewritten, bindings: values), reference) < 1e-12)
}

@Test func reassociateMovesAProductRightWhenThatIsCheaper() throws {
  // (a b) c with a [2, 100], b [100, 100], c [100, 1]: a (b c) costs 10,200 multiply-adds, not 20,200.
  let bl = GraphBuilder(name: "right")
  let a = try bl.input(name: "a", shape: [2, 100])
  let b = try bl.input(name: "b", shape: [100, 100])
  let c = try bl.input(name: "c", shape: [100, 1])
  let graph = try bl.finish(outputs: [try matmul(matmul(a, b), c)])
  let rewritten = try Pipeline(parsing: "reassociate").run(graph)
  #expect(rewritten.types.contains(TensorType(.f32, [100, 1])))
  #expect(rewritten.body.count == 2)
  #expect(rewritten.body[0].operands.compactMap(\.value) == [b.value, c.value])
  #expect(
    rewritten.body[1].operands.compactMap(\.value) == [a.value, rewritten.body[0].results[0]])
  var generator = SplitMix64(seed: 1)
  var values: [String: DenseTensor] = [:]
  for (name, shape) in [("a", [2, 100]), ("b", [100, 100]), ("c", [100, 1])] {
    values[name] = DenseTensor(
      dtype: .f32, shape: shape,
      scalars: (0..<shape.reduce(1, *)).map { _ in generator.uniform(-0.5, 0.5) })
  }
  let interpreter = Interpreter(precision: .f64)
  #expect(
    difference(
      try interpreter.run(rewritten, bindings: values), try interpreter.run(graph, bindings: values)
    )
      < 1e-12)
  // Nothing to gain: the LoRA branch the lora pass emits stays as it is.
  let lora = try Pipeline(parsing: "lora{rank=2,alpha=4,targets=fc,seed=7}").run(try fcGraph())
  #expect(try Reassociate().run(lora) == lora)
}

@Test func decodeRunsTheLastLayerOnTheLastTokenOnly() throws {
  // A prefill needs the keys and values of every new token, but only the last token's logits:
  // the last layer's query, attention, output product and MLP run on one row, the same logits as
  // the graph that computes every position (decode{last=false}), plain and with LoRA adapters.
  let config = LlamaConfig(
    vocabularySize: 11, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 12)
  let forward = try Llama.trace(config, batch: 2, sequence: 3)
  for adapters in ["", "lora{rank=2,alpha=4,targets=layers.*.{attn.q,attn.v,mlp.down},seed=5},"] {
    let decoded = try Pipeline(parsing: adapters + "fuse,decode{context=5}").run(forward)
    let everyRow = try Pipeline(parsing: adapters + "fuse,decode{context=5,last=false}").run(
      forward)
    try Verifier.verify(decoded)
    func shapes(_ name: String) -> [[Int]] {
      decoded.body.filter { $0.name == name }.map { decoded.type(of: $0.results[0]).shape }
    }
    for name in ["layers.0.attn.q", "layers.0.mlp.down", "layers.1.attn.k", "layers.1.attn.v"] {
      #expect(shapes(name).map { $0[1] } == [3], "\(adapters) \(name)")
    }
    for name in ["layers.1.attn.q", "layers.1.attn.o", "layers.1.mlp.up", "layers.1.mlp.down"] {
      #expect(shapes(name).map { $0[1] } == [1], "\(adapters) \(name)")
    }
    let attentions = decoded.body.filter { if case .attention = $0.op { true } else { false } }
    #expect(
      attentions.map { decoded.type(of: $0.results[0]).shape } == [[2, 2, 3, 4], [2, 2, 1, 4]])
    let values = decodingBindings(decoded, tokens: 3, slot: 1, seed: 6) { row, query, slot in
      slot >= 1 && slot <= 1 + query || (row == 0 && slot == 0)
    }.merging(randomDeclarations(decoded, seed: 9, kind: .parameter)) { a, _ in a }
    let interpreter = Interpreter(precision: .f64)
    let last = try interpreter.run(decoded, bindings: values)[0]
    let all = try interpreter.run(everyRow, bindings: values)[0]
    #expect(last.shape == [2, 11] && all.shape == [2, 3, 11])
    var worst = 0.0
    for row in 0..<2 {
      for token in 0..<11 {
        worst = max(
          worst, abs(last.scalars[row * 11 + token] - all.scalars[(row * 3 + 2) * 11 + token]))
      }
    }
    #expect(worst < 1e-12, "\(adapters)")
  }
}

@Test func decodePassMatchesTheDecodingTracer() throws {
  // The forward graph, fused and turned into a decoding graph, computes what the hand-written
  // decoding tracer computes: same inputs, same cache names, same logits of the last new token.
  let config = LlamaConfig(
    vocabularySize: 11, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 12)
  for tokens in [1, 3] {
    let traced = try Llama.traceDecoding(config, batch: 2, tokens: tokens, context: 5)
    let forward = try Llama.trace(config, batch: 2, sequence: tokens)
    let decoded = try Pipeline(parsing: "fuse,decode{context=5}").run(forward)
    #expect(Fuse.census(decoded)["attention"] == 2)
    #expect(
      Set(decoded.declarations.filter { $0.kind == .state }.map(\.name))
        == Set(traced.declarations.filter { $0.kind == .state }.map(\.name)))
    #expect(decoded.inputs.map(\.name) == traced.inputs.map(\.name))
    #expect(decoded.type(of: decoded.outputs[0]) == TensorType(.f32, [2, 11]))
    let values = decodingBindings(traced, tokens: tokens, slot: 2, seed: 8) { _, query, slot in
      slot <= 2 + query
    }
    let interpreter = Interpreter(precision: .f64)
    #expect(
      difference(
        try interpreter.run(decoded, bindings: values),
        try interpreter.run(traced, bindings: values)) < 1e-12)
  }
  // Bad input: no attention to cache (not fused), and a context smaller than the new tokens.
  let unfused = try Llama.trace(config, batch: 1, sequence: 3)
  func message(_ body: () throws -> Graph) -> String {
    do {
      _ = try body()
      return "no error"
    } catch {
      return (error as? PassError)?.message ?? "\(error)"
    }
  }
  #expect(
    message { try Decode(context: 8).run(unfused) }
      == "decode: no attention op to give a cache (run fuse first)")
  #expect(
    message { try Pipeline(parsing: "fuse,decode{context=2}").run(unfused) }
      == "decode: 3 new tokens do not fit a context of 2")
}

@Test func foldKeepsTheValuesOfTheLlamaTrainGraph() throws {
  let lora =
    "lora{rank=2,alpha=4,targets=layers.*.attn.{q,v},seed=1},freeze,fuse,autodiff{loss=loss}"
  let plain = try Pipeline(parsing: lora + ",dce").run(tinyLlama())
  let folded = try Pipeline(parsing: lora + ",fold").run(tinyLlama())
  #expect(folded.body.count < plain.body.count)
  let values = randomInputs(plain, seed: 2, limit: 11).merging(randomDeclarations(plain, seed: 4)) {
    a, _ in a
  }
  let interpreter = Interpreter(precision: .f64)
  #expect(
    difference(
      try interpreter.run(folded, bindings: values), try interpreter.run(plain, bindings: values))
      < 1e-12)
}

@Test func mergeBakesTheAdapterInAndUnmergeTakesItOut() throws {
  let config = LlamaConfig(
    vocabularySize: 11, embeddingLength: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1,
    feedForwardLength: 12)
  let lora = "lora{rank=2,alpha=4,targets=layers.*.attn.{q,v},seed=1},freeze,fuse"
  let adapted = try Pipeline(parsing: lora).run(Llama.trace(config, batch: 1, sequence: 3))
  let merged = try Pipeline(parsing: "merge,dce").run(adapted)
  #expect(Fuse.census(merged)["lora_linear"] == nil)
  #expect(merged.body.filter { $0.name?.hasSuffix(".merged_weight") == true }.count == 4)
  // A . B is formed here, once per target: [8, 2] x [2, 8].
  #expect(merged.types.contains(TensorType(.f32, [8, 8])))
  // The adapters (the only parameters) non-zero, so that merging changes the weights.
  var values = randomDeclarations(adapted, seed: 5)
    .merging(randomDeclarations(adapted, seed: 6, kind: .parameter)) { a, _ in a }
  values["tokens"] = DenseTensor(shape: [1, 3], ints: [3, 7, 1])
  values["positions"] = DenseTensor(shape: [1, 3], ints: [0, 1, 2])
  let interpreter = Interpreter(precision: .f64)
  let reference = try interpreter.run(adapted, bindings: values)
  #expect(difference(try interpreter.run(merged, bindings: values), reference) < 1e-12)
  let unmerged = try Pipeline(parsing: "unmerge").run(merged)
  #expect(Printer().print(unmerged) == Printer().print(adapted.compacted()))
  #expect(throws: PassError.self) {
    try Merge().run(try Llama.trace(config, batch: 1, sequence: 3))
  }
  #expect(throws: PassError.self) { try Unmerge().run(adapted) }
}

@Test func fuseElementwiseComputesTheSameValuesOnTheLlamaTrainGraph() throws {
  let lora = "lora{rank=2,alpha=4,targets=layers.*.attn.{q,k,v,o},seed=3},freeze,fuse"
  let plain = try Pipeline(parsing: lora + ",autodiff{loss=loss},dce").run(tinyLlama())
  let chained = try Pipeline(parsing: lora + ",autodiff{loss=loss},fuse{elementwise=true},dce")
    .run(tinyLlama())
  let chains = chained.body.filter(\.op.isElementwise)
  #expect(chains.count >= 4)
  #expect(chained.body.count < plain.body.count)
  // No leaf is a unary or binary op read only by its chain (the chain would have absorbed it).
  let users = chained.users()
  let definers = chained.definers()
  for (index, chain) in chained.body.enumerated() where chain.op.isElementwise {
    for leaf in chain.operands.compactMap(\.value) {
      guard let definer = definers[leaf], users[leaf] == [index] else { continue }
      let inner = chained.body[definer]
      switch inner.op {
      case .unary, .binary:
        // Absorbable unless it broadcasts an operand (or has another result type).
        let type = chained.type(of: chain.results[0])
        let broadcasts = inner.operands.compactMap(\.value).contains {
          chained.type(of: $0) != type
        }
        #expect(chained.type(of: leaf) != type || broadcasts, "\(leaf)")
      default: break
      }
    }
  }
  let values = randomInputs(plain, seed: 5, limit: 11)
    .merging(randomDeclarations(plain, seed: 6)) { a, _ in a }
    .merging(randomDeclarations(plain, seed: 9, kind: .parameter)) { a, _ in a }
  // Node-by-node rounding: the same values to the bit in f32 precision.
  let interpreter = Interpreter(precision: .f32)
  #expect(
    try interpreter.run(chained, bindings: values) == interpreter.run(plain, bindings: values))
}

@Test func elementwiseChainsHaveNoGradient() throws {
  // Fused before autodiff, a chain stops autodiff with a message naming it.
  let b = GraphBuilder(name: "chain")
  let x = try b.input(name: "x", shape: [3])
  let w = try b.parameter(name: "w", shape: [3], initializer: .zeros)
  let loss = try (exp(x * w) + 1.0).sum().named("loss")
  let graph = try Fuse(elementwise: true).run(try b.finish(outputs: [loss]))
  #expect(graph.body.contains { $0.op.isElementwise })
  #expect(throws: PassError(message: "autodiff: elementwise has no gradient")) {
    try Pipeline(parsing: "autodiff{loss=loss}").run(graph)
  }
}
