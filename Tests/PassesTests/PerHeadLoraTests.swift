import Foundation
import IR
import Models
import Passes
import Runtime
import TestSupport
import Testing

// Per-head LoRA (`lora{per_head=true}`) on a small attention-shaped graph: d_model 12, three
// query heads and one key head of 4, batch 2 x 5 rows.
private let (model, heads, headDimension, rows) = (12, 3, 4, 10)

/// `q = x Wq^T` split into 3 heads, `k = x Wk^T` one head, `z = q * k` (k broadcast over the
/// query heads) joined again, `o = z Wo^T`; returns `o`, or `loss = sum(o * weights)`.
private func attentionShaped(loss: Bool) throws -> Graph {
  let b = GraphBuilder(name: "heads")
  let x = try b.input(name: "x", shape: [2, 5, model])
  let wq = try b.constant(name: "wq", shape: [model, model])
  let wk = try b.constant(name: "wk", shape: [headDimension, model])
  let wo = try b.constant(name: "wo", shape: [model, model])
  let q = try matmul(x, wq, transposeB: true).named("attn.q")
  let k = try matmul(x, wk, transposeB: true).named("attn.k")
  let perHead = try q.reshaped([2, 5, heads, headDimension])
  let shared = try k.reshaped([2, 5, 1, headDimension]).broadcast(
    to: [2, 5, heads, headDimension])
  let z = try (perHead * shared).reshaped([2, 5, model])
  let o = try matmul(z, wo, transposeB: true).named("attn.o")
  guard loss else { return try b.finish(outputs: [o]) }
  let weights = try b.input(name: "weights", shape: [2, 5, model])
  return try b.finish(outputs: [try (o * weights).sum().named("loss")])
}

private let perHead = "lora{rank=2,alpha=4,targets=attn.*,per_head=true,seed=5}"

/// Row-major element `index` of a dense tensor.
private func at(_ tensor: DenseTensor, _ index: [Int]) -> Double {
  var offset = 0
  for (axis, i) in index.enumerated() { offset = offset * tensor.shape[axis] + i }
  return tensor.scalars[offset]
}

@Test func perHeadBranchesAddEachHeadsLowRankProduct() throws {
  let graph = try Pipeline(parsing: perHead).run(try attentionShaped(loss: false))
  func shape(_ name: String) -> [Int]? {
    graph.declaration(named: name).map { graph.type(of: $0.value).shape }
  }
  // q: one instance per query head, [n, in, r] and [n, r, d_head]; k: one key head; o reads the
  // heads: [n, d_head, r] and [n, r, d_model].
  #expect(shape("attn.q.lora_a") == [3, 12, 2] && shape("attn.q.lora_b") == [3, 2, 4])
  #expect(shape("attn.k.lora_a") == [1, 12, 2] && shape("attn.k.lora_b") == [1, 2, 4])
  #expect(shape("attn.o.lora_a") == [3, 4, 2] && shape("attn.o.lora_b") == [3, 2, 12])
  #expect(
    graph.declaration(named: "attn.q.lora_a")?.initializer
      == .kaimingUniform(a: 5.0.squareRoot(), fanIn: .torch))
  #expect(graph.declaration(named: "attn.o.lora_b")?.initializer == .zeros)

  var bindings = randomDeclarations(graph, seed: 1)
    .merging(randomDeclarations(graph, seed: 2, kind: .parameter)) { a, _ in a }
    .merging(randomInputs(graph, seed: 3, limit: 1)) { a, _ in a }
  bindings["attn.q.lora_b"] = randomTensor(TensorType(.f32, [3, 2, 4]), seed: 4)
  let o = try Interpreter(precision: .f64).run(graph, bindings: bindings)[0]
  // By hand, head by head: s = alpha / rank = 2.
  let (x, s) = (bindings["x"]!, 2.0)
  func branch(_ input: (Int) -> Double, _ name: String, head h: Int, column j: Int) -> Double {
    let (a, b) = (bindings[name + ".lora_a"]!, bindings[name + ".lora_b"]!)
    var sum = 0.0
    for k in 0..<2 {
      var xa = 0.0
      for i in 0..<a.shape[1] { xa += input(i) * at(a, [h, i, k]) }
      sum += xa * at(b, [h, k, j])
    }
    return s * sum
  }
  var worst = 0.0
  for row in 0..<rows {
    let (b0, s0) = (row / 5, row % 5)
    let input = { (i: Int) in at(x, [b0, s0, i]) }
    var z = [Double](repeating: 0, count: model)
    for h in 0..<heads {
      for j in 0..<headDimension {
        var q = 0.0
        var k = 0.0
        for i in 0..<model {
          q += input(i) * at(bindings["wq"]!, [h * headDimension + j, i])
          k += input(i) * at(bindings["wk"]!, [j, i])
        }
        q += branch(input, "attn.q", head: h, column: j)
        k += branch(input, "attn.k", head: 0, column: j)
        z[h * headDimension + j] = q * k
      }
    }
    for m in 0..<model {
      var expected = 0.0
      for c in 0..<model { expected += z[c] * at(bindings["wo"]!, [m, c]) }
      for h in 0..<heads {
        expected += branch({ z[h * headDimension + $0] }, "attn.o", head: h, column: m)
      }
      worst = max(worst, abs(at(o, [b0, s0, m]) - expected))
    }
  }
  #expect(worst < 1e-12, "largest difference \(worst)")
}

@Test func perHeadGradientsMatchCentralFiniteDifferences() throws {
  let forward = try Pipeline(parsing: perHead).run(try attentionShaped(loss: true))
  let train = try Pipeline(parsing: "freeze,autodiff{loss=loss}").run(forward)
  var bindings = randomDeclarations(forward, seed: 11)
    .merging(randomDeclarations(forward, seed: 12, kind: .parameter)) { a, _ in a }
    .merging(randomInputs(forward, seed: 13, limit: 1)) { a, _ in a }
  bindings["x"] = randomTensor(TensorType(.f32, [2, 5, model]), seed: 14)
  let interpreter = Interpreter(precision: .f64)
  let outputs = try interpreter.run(train, bindings: bindings)
  let parameters = train.declarations.filter { $0.kind == .parameter }.map(\.name)
  #expect(parameters.count == 6 && outputs.count == 7)
  let step = 1e-6
  var checked = 0
  for (index, name) in parameters.enumerated() {
    let gradient = outputs[1 + index]
    for element in 0..<gradient.elementCount {
      var plus = bindings
      var minus = bindings
      plus[name]!.scalars[element] += step
      minus[name]!.scalars[element] -= step
      let up = try interpreter.run(forward, bindings: plus)[0].scalars[0]
      let down = try interpreter.run(forward, bindings: minus)[0].scalars[0]
      let numeric = (up - down) / (2 * step)
      #expect(
        abs(numeric - gradient.scalars[element]) <= 1e-5 * (1 + abs(numeric)),
        "d/d\(name)[\(element)]: analytic \(gradient.scalars[element]), numeric \(numeric)")
      checked += 1
    }
  }
  #expect(checked == 72 + 24 + 24 + 8 + 24 + 72)
}

@Test func perHeadNeverFormsAPerHeadWeightProduct() throws {
  // Forward and backward (fused as training compiles it): no value computed from both A and B of
  // a target has the shape of A[h] B[h] ([in, d_head], [d_head, out]) or of the whole weight.
  let train = try Pipeline(
    parsing: perHead + ",freeze,fuse,autodiff{loss=loss},fuse{elementwise=true},dce"
  ).run(try attentionShaped(loss: true))
  for (target, input, output) in [
    ("attn.q", model, headDimension), ("attn.k", model, headDimension),
    ("attn.o", headDimension, model),
  ] {
    let a = try #require(train.declaration(named: target + ".lora_a")).value
    let b = try #require(train.declaration(named: target + ".lora_b")).value
    let both = valuesDerivedFromBoth(train, a, b).map { Array(train.type(of: $0).shape.suffix(2)) }
    #expect(!both.isEmpty)
    for forbidden in [[input, output], [output, input], [model, model], [model, headDimension]] {
      #expect(!both.contains(forbidden), "\(target): a \(forbidden) product")
    }
  }
}

@Test func perHeadRefusesTargetsThatAreNotAttentionProjections() throws {
  // fc's result is not split into heads and its input is not a join of heads.
  #expect(
    throws: PassError(
      message:
        "lora: per-head target 'fc' is not an attention projection (its result is not split into heads and its input is not a concatenation of heads)"
    )
  ) { try Pipeline(parsing: "lora{rank=2,targets=fc,per_head=true}").run(try fcGraph()) }
  #expect(
    throws: PassError(message: "lora: option 'per_head' must be true or false, got 'yes'")
  ) { try Pipeline(parsing: "lora{per_head=yes}") }
  // Without per_head the same graph takes ordinary branches.
  #expect(try Pipeline(parsing: "lora{rank=2,targets=fc}").run(try fcGraph()).body.count > 3)
}

@Test func perHeadLlamaTrainStepCompiledMatchesTheInterpreter() throws {
  // A two-layer Llama with grouped-query attention (4 query heads, 2 key/value heads of 8): the
  // compiled train step (fused, kernels) against the reference interpreter in f64, loss and every
  // gradient, with B non-zero.
  let config = LlamaConfig(
    vocabularySize: 23, embeddingLength: 32, layerCount: 2, headCount: 4, keyValueHeadCount: 2,
    feedForwardLength: 40)
  let graph = try Pipeline(
    parsing: "lora{rank=3,alpha=6,targets=layers.*.attn.{q,k,v,o},per_head=true,seed=2},freeze,"
      + "fuse,autodiff{loss=loss},fuse{elementwise=true},dce"
  ).run(try Llama.trace(config, batch: 2, sequence: 5, loss: true))
  let shapes = graph.declarations.filter { $0.kind == .parameter }.map {
    graph.type(of: $0.value).shape
  }
  #expect(
    shapes.prefix(8) == [
      [4, 32, 3], [4, 3, 8], [2, 32, 3], [2, 3, 8], [2, 32, 3], [2, 3, 8], [4, 8, 3], [4, 3, 32],
    ])
  let weights = try randomWeights(graph, seed: 21)
  let parameters = randomDeclarations(graph, seed: 22, kind: .parameter)
  var bindings = weights.mapValues(DenseTensor.init).merging(parameters) { a, _ in a }
  let inputs = randomInputs(graph, seed: 23, limit: config.vocabularySize)
  bindings.merge(inputs) { a, _ in a }
  let expected = try Interpreter(precision: .f64).run(graph, bindings: bindings)
  let executable = try Executable(graph, constants: weights)
  for (name, tensor) in parameters { try executable.set(name, tensor.host) }
  let actual = try executable.run(inputs: inputs.mapValues(\.host))
  #expect(actual.count == 1 + 16)
  var worst = 0.0
  for (a, b) in zip(actual, expected) {
    let (values, reference) = (DenseTensor(a).scalars, b.scalars)
    let norm = reference.map { $0 * $0 }.reduce(0, +).squareRoot()
    let error = zip(values, reference).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
    worst = max(worst, error / max(norm, 1e-30))
  }
  #expect(worst < 1e-5, "worst relative difference \(worst)")
}

@Test func smolLMPerHeadGraphsNeverFormABAndHaveTheTutorialsShapes() throws {
  let model = try LlamaModel(path: try modelPath())
  let lora = "lora{rank=4,alpha=8,targets=layers.*.attn.{q,k,v,o},per_head=true}"
  let train = try Pipeline(parsing: lora + ",freeze,fuse,autodiff{loss=loss},dce").run(
    try model.trace(batch: 2, sequence: 8, loss: true))
  // 9 query heads and 3 key/value heads of 64 on d_model 576.
  let expected: [String: ([Int], [Int])] = [
    "q": ([9, 576, 4], [9, 4, 64]), "k": ([3, 576, 4], [3, 4, 64]),
    "v": ([3, 576, 4], [3, 4, 64]), "o": ([9, 64, 4], [9, 4, 576]),
  ]
  for layer in [0, 29] {
    for (module, shapes) in expected {
      let target = "layers.\(layer).attn.\(module)"
      let a = try #require(train.declaration(named: target + ".lora_a")).value
      let b = try #require(train.declaration(named: target + ".lora_b")).value
      #expect(train.type(of: a).shape == shapes.0 && train.type(of: b).shape == shapes.1)
      // A[h] B[h] for every head, in any layout, or a whole weight's [in, out].
      let products: Set<[Int]> = [
        [576, 64], [64, 576], [9, 576, 64], [3, 576, 64], [576, 9, 64], [576, 3, 64],
        [9, 64, 576], [64, 9, 576], [576, 576], [576, 192], [192, 576],
      ]
      let both = valuesDerivedFromBoth(train, a, b).map { train.type(of: $0).shape }
      #expect(!both.isEmpty && !both.contains(where: products.contains), "\(target)")
    }
  }
  // The decode graphs (prefill and a one-token step: the o input is joined from the
  // [batch, count, kv_heads, group, d_head] layout) take the same branches.
  for tokens in [1, 7] {
    let graph = try Pipeline(parsing: lora + ",fuse,decode{context=64}").run(
      try model.trace(batch: 1, sequence: tokens))
    #expect(
      graph.declaration(named: "layers.3.attn.o.lora_a").map { graph.type(of: $0.value).shape }
        == [9, 64, 4])
  }
}
