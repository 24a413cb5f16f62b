import Foundation
import IR
import Models
import Passes
import Runtime
import Testing

/// The fc example of DESIGN.md: `loss = sum(fc * fc)` with `fc = x W^T`, W frozen [32, 16].
func fcGraph() throws -> Graph {
  let b = GraphBuilder(name: "train")
  let x = try b.input(name: "x", shape: [4, 16])
  let w = try b.constant(name: "fc.weight", shape: [32, 16])
  let fc = try matmul(x, w, transposeB: true).named("fc")
  return try b.finish(outputs: [try (fc * fc).sum().named("loss")])
}

/// Every value computed from both A and B, following data flow forward from each.
func valuesDerivedFromBoth(_ graph: Graph, _ a: Value, _ b: Value) -> [Value] {
  var fromA: Set<Value> = [a]
  var fromB: Set<Value> = [b]
  for instruction in graph.body {
    let operands = instruction.operands.compactMap(\.value)
    if operands.contains(where: fromA.contains) { fromA.formUnion(instruction.results) }
    if operands.contains(where: fromB.contains) { fromB.formUnion(instruction.results) }
  }
  return Array(fromA.intersection(fromB))
}

@Test func loraNeverFormsAB() throws {
  // Forward and backward of a LoRA-patched linear: no [in, out] value depends on both A and B.
  let train = try Pipeline(parsing: "lora{rank=2,alpha=4,targets=fc},freeze,autodiff,dce").run(
    try fcGraph())
  let a = try #require(train.declaration(named: "fc.lora_a")).value
  let b = try #require(train.declaration(named: "fc.lora_b")).value
  let both = valuesDerivedFromBoth(train, a, b)
  #expect(!both.isEmpty)
  #expect(
    both.allSatisfy {
      train.type(of: $0).shape != [16, 32] && train.type(of: $0).shape != [32, 16]
    })
}

@Test func noGradientWorkForFrozenWeights() throws {
  let train = try Pipeline(parsing: "lora{rank=2,alpha=4,targets=fc},freeze,autodiff,dce").run(
    try fcGraph())
  let weight = try #require(train.declaration(named: "fc.weight")).value
  // The only matmul reading the frozen weight is the forward one: no gradient is formed for it.
  let readers = train.body.filter { $0.operands.contains(.value(weight)) }
  #expect(readers.count == 1)
  // No computed value has the weight's shape: no weight gradient exists.
  #expect(!train.body.contains { train.type(of: $0.results[0]) == TensorType(.f32, [32, 16]) })
  #expect(train.outputs.count == 3)
}

@Test func loraOptionsAndErrors() throws {
  let graph = try fcGraph()
  #expect(throws: PassError(message: "lora: no matmul named like 'layers.*.attn.q' (nearest: fc)"))
  {
    try Lora(rank: 2, alpha: 4, targets: "layers.*.attn.q").run(graph)
  }
  let rs = Lora(rank: 4, alpha: 8, targets: "fc", rsLoRA: true)
  #expect(rs.scale == 4)
  #expect(Lora(rank: 4, alpha: 8, targets: "fc").scale == 2)
  let patched = try Lora(rank: 3, alpha: 3, targets: "f?").run(graph).compacted()
  #expect(
    patched.declaration(named: "fc.lora_a").map { patched.type(of: $0.value) }
      == TensorType(.f32, [16, 3]))
  #expect(
    patched.declaration(named: "fc.lora_b").map { patched.type(of: $0.value) }
      == TensorType(.f32, [3, 32]))
}

@Test func pipelineTextRoundTripsAndRejectsMistakes() throws {
  let text =
    "lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o}},freeze,autodiff{loss=loss},dce,cse"
  #expect(try Pipeline(parsing: text).description == text)
  let cases: [(String, String)] = [
    (
      "lora,fsue",
      "unknown pass 'fsue' (known passes: lora, freeze, fold, reassociate, fuse, decode, merge, unmerge, autodiff, capture, patch, add, ablate, dce, cse)"
    ),
    (
      "lora{rank=8,alpah=16}",
      "lora: unknown option 'alpah' (accepted: rank, alpha, targets, rslora, seed, per_head)"
    ),
    ("lora{rank=zero}", "lora: option 'rank' must be an integer in 1...65536, got 'zero'"),
    ("lora{rank=8", "pipeline: unbalanced '{' in 'lora{rank=8'"),
    ("lora,,dce", "pipeline: empty entry in 'lora,,dce'"),
    ("lora{rank}", "lora: expected key=value, got 'rank'"),
    ("lora{targets=a.{b,c}", "pipeline: unbalanced '{' in 'lora{targets=a.{b,c}'"),
    ("freeze{trainable=*.{a}}}", "pipeline: unbalanced '}' in 'freeze{trainable=*.{a}}}'"),
    ("dce{x=1}", "dce: unknown option 'x' (accepted: none)"),
    ("lora{rslora=yes}", "lora: option 'rslora' must be true or false, got 'yes'"),
  ]
  for (text, message) in cases {
    #expect(throws: PassError(message: message)) { try Pipeline(parsing: text) }
  }
}

@Test func pipelineReportsTimingsAndPrintsAfterPasses() throws {
  var lines: [String] = []
  _ = try Pipeline(parsing: "lora{rank=2,targets=fc},freeze").run(
    try fcGraph(), printAfter: .passes(["lora"])
  ) { lines.append($0) }
  #expect(lines.count == 3)
  #expect(
    lines[0].hasPrefix("# ----- after lora: ") && lines[0].hasSuffix(" ms, 3 -> 7 instructions"))
  #expect(lines[1].hasPrefix("func @train("))
  #expect(lines[2].hasPrefix("# ----- after freeze: "))
}

@Test func selectorsExpandBracesAndStars() throws {
  let selector = try NameSelector(parsing: "layers.*.attn.{q,k,v,o}")
  #expect(selector.matches("layers.3.attn.q"))
  #expect(selector.matches("layers.12.attn.o"))
  #expect(!selector.matches("layers.3.attn.q.lora_a"))
  #expect(!selector.matches("layers.3.mlp.up"))
  #expect(try NameSelector(parsing: "*.lora_{a,b}").matches("fc.lora_b"))
  #expect(throws: PassError(message: "unbalanced '{' in pattern 'a.{b'")) {
    try NameSelector(parsing: "a.{b")
  }
}

@Test func cseAndDceRemoveRepeatsAndDeadValues() throws {
  let b = GraphBuilder(name: "g")
  let x = try b.input(name: "x", shape: [3])
  let first = try exp(x)
  let second = try exp(x)
  _ = try log(x)  // dead
  let graph = try b.finish(outputs: [try first + second])
  let cleaned = try Pipeline(parsing: "cse,dce").run(graph)
  #expect(cleaned.body.map(\.op) == [.unary(.exp), .binary(.add)])
  #expect(
    try Interpreter().run(cleaned, bindings: ["x": DenseTensor(shape: [3], floats: [0, 1, 2])])
      == Interpreter().run(graph, bindings: ["x": DenseTensor(shape: [3], floats: [0, 1, 2])]))
}

@Test func xorMLPLearnsWithRankTwoLoRAInTwentyAdamSteps() throws {
  // The tutorials' setting: LoRA rank 2 on every linear layer of a frozen random 2-32-32-2 MLP,
  // Adam with learning rate 0.1, 20 steps, all four XOR points right.
  let mlp = try MLP.trace(batch: 4)
  var base: [String: HostTensor] = [:]
  for declaration in mlp.declarations {
    let type = mlp.type(of: declaration.value)
    base[declaration.name] = try #require(declaration.initializer).values(
      for: type, seed: declaration.seed ?? 0
    ).host
  }
  let train = try Pipeline(
    parsing: "lora{rank=2,alpha=2,targets=fc*},freeze,autodiff{loss=loss},dce"
  ).run(mlp)
  let executable = try Executable(train, constants: base)
  let parameters = train.declarations.filter { $0.kind == .parameter }.map(\.name)
  #expect(parameters.count == 6)
  let optimizer = try AdamW(
    executable, parameters: parameters, gradientOutputs: Array(2..<(2 + parameters.count)),
    learningRate: 0.1)
  let inputs = [
    "x": HostTensor(shape: [4, 2], floats: MLP.xorInputs),
    "labels": HostTensor(shape: [4, 2], floats: MLP.xorLabels),
  ]
  var losses: [Float] = []
  for _ in 0..<20 {
    let outputs = try executable.run(inputs: inputs)
    losses.append(outputs[0].floats()[0])
    optimizer.update()
  }
  let logits = try executable.run(inputs: inputs)[1].floats()
  let predicted = (0..<4).map { logits[2 * $0 + 1] > logits[2 * $0] ? 1 : 0 }
  #expect(predicted == [1, 0, 0, 1], "losses \(losses)")
  #expect(losses.last! < losses.first! / 4, "losses \(losses)")
}
