import Foundation
import IR
import Models
import Passes
import Runtime
import TestSupport
import Testing

private let attentionPipeline =
  "lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o},seed=1},freeze,autodiff{loss=loss},dce"

/// The values computed from both `A` and `B` of `target` that have the weight's [in, out] shape
/// (or its transpose).
private func adapterProducts(_ graph: Graph, _ target: String) throws -> [[Int]] {
  let a = try #require(graph.declaration(named: target + ".lora_a")).value
  let b = try #require(graph.declaration(named: target + ".lora_b")).value
  let (inputs, outputs) = (graph.type(of: a).shape[0], graph.type(of: b).shape[1])
  return valuesDerivedFromBoth(graph, a, b).map { graph.type(of: $0).shape }.filter {
    $0 == [inputs, outputs] || $0 == [outputs, inputs]
  }
}

@Test func smolLMDecodeGraphsNeverFormAB() throws {
  // The prefill and step graphs generate compiles: lora on q, k, v, o, fuse, decode.
  let model = try LlamaModel(path: try modelPath())
  for tokens in [1, 7] {
    let graph = try Pipeline(
      parsing: "lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o}},fuse,decode{context=64}"
    ).run(try model.trace(batch: 1, sequence: tokens))
    #expect(Fuse.census(graph)["lora_linear"] == 120)
    for layer in [0, 17, 29] {
      for module in ["q", "k", "v", "o"] {
        #expect(try adapterProducts(graph, "layers.\(layer).attn.\(module)").isEmpty)
      }
    }
  }
}

@Test func smolLMTrainGraphNeverFormsABNorFrozenWeightGradients() throws {
  let model = try LlamaModel(path: try modelPath())
  let train = try Pipeline(parsing: attentionPipeline).run(
    try model.trace(batch: 2, sequence: 16, loss: true))
  let parameters = train.declarations.filter { $0.kind == .parameter }
  #expect(parameters.count == 30 * 4 * 2)
  // No value computed from both A and B of one target has the weight's [in, out] shape.
  for layer in [0, 17, 29] {
    for module in ["q", "k", "v", "o"] {
      let target = "layers.\(layer).attn.\(module)"
      #expect(
        train.declaration(named: target + ".lora_a").map { train.type(of: $0.value).shape[1] } == 8)
      #expect(try adapterProducts(train, target).isEmpty, "\(target)")
    }
  }
  // Every matmul that reads a frozen weight is either the forward product or the input gradient
  // (same weight, result shaped like the layer input): none forms a [out, in] weight gradient.
  let frozen = Set(train.declarations.filter { $0.kind == .constant }.map(\.value))
  for instruction in train.body {
    guard case .matmul = instruction.op,
      let weight = instruction.operands.compactMap(\.value).first(where: frozen.contains)
    else { continue }
    let resultShape = train.type(of: instruction.results[0]).shape
    let weightShape = train.type(of: weight).shape
    #expect(Array(resultShape.suffix(2)) != weightShape, "\(instruction)")
  }
  let matmuls = train.body.filter { if case .matmul = $0.op { true } else { false } }.count
  // Forward: 7 linears, 2 attention products and 2 LoRA products for each of q, k, v, o per layer,
  // plus the head. Backward per layer: input gradients through the 7 frozen linears, 4 for the
  // attention products, and 4 per LoRA branch (dB, g B^T, dA, dx through A). Layer 0's input is
  // the frozen embedding, so activity analysis drops its 3 q/k/v input gradients and the 3 dx
  // through their A: 6 fewer. The head adds one input gradient.
  let forward = 30 * (7 + 2 + 8) + 1
  let backward = 30 * (7 + 4 + 16) - 6 + 1
  #expect(matmuls == forward + backward)
}

@Test func smolLMLoRATrainingLowersTheLoss() throws {
  // A small fixed data set: three arithmetic examples, trained for a few AdamW steps.
  let model = try LlamaModel(path: try modelPath())
  let tokenizer = try Tokenizer(gguf: try #require(model.file))
  let texts = [
    ">>> mystery_function(12, 30)\n42", ">>> mystery_function(7, 8)\n15",
    ">>> mystery_function(100, 1)\n101",
  ]
  let sequence = 20
  var tokens: [Int32] = []
  var targets: [Int32] = []
  var weights: [Float] = []
  for text in texts {
    let ids = tokenizer.encode(text) + [tokenizer.endOfSequence ?? 2]
    let padded = ids + [Int32](repeating: 2, count: sequence + 1 - ids.count)
    tokens += padded.prefix(sequence)
    targets += padded.dropFirst().prefix(sequence)
    weights += (0..<sequence).map { $0 < ids.count - 1 ? 1 : 0 }
  }
  let train = try Pipeline(parsing: attentionPipeline).run(
    try model.trace(batch: texts.count, sequence: sequence, loss: true))
  let executable = try Executable(train, constants: try model.weights(for: train))
  let parameters = train.declarations.filter { $0.kind == .parameter }.map(\.name)
  let optimizer = try AdamW(
    executable, parameters: parameters, gradientOutputs: Array(1...parameters.count),
    learningRate: 2e-3, weightDecay: 0.01, maxGradientNorm: 1.0)
  let shape = [texts.count, sequence]
  let inputs = [
    "tokens": HostTensor(shape: shape, ints: tokens),
    "positions": HostTensor(
      shape: shape, ints: (0..<(texts.count * sequence)).map { Int32($0 % sequence) }),
    "targets": HostTensor(shape: shape, ints: targets),
    "weights": HostTensor(shape: shape, floats: weights),
  ]
  var losses: [Float] = []
  for _ in 0..<8 {
    losses.append(try executable.run(inputs: inputs)[0].floats()[0])
    optimizer.update()
  }
  losses.append(try executable.run(inputs: inputs)[0].floats()[0])
  let finite = losses.allSatisfy { $0.isFinite }
  #expect(finite)
  let (first, last) = (try #require(losses.first), try #require(losses.last))
  #expect(last < 0.7 * first, "losses \(losses)")
  // B started at zero and moved: the adapter is not a silent no-op.
  let b = try executable.value(named: "layers.0.attn.q.lora_b").floats()
  #expect(b.contains { $0 != 0 })
}
