import IR
import Testing

/// A graph that uses every op, every attribute spelling and every kind of declaration.
func everyOpGraph() throws -> Graph {
  let b = GraphBuilder(name: "every_op")
  let x = try b.input(name: "x", shape: [2, 3])
  let y = try b.input(name: "y", shape: [3])
  let ids = try b.input(name: "ids", shape: [2, 2], dtype: .i32)
  let positions = try b.input(name: "positions", shape: [2], dtype: .i32)
  let starts = try b.input(name: "starts", shape: [2], dtype: .i32)
  let quantized = try b.constant(name: "w.q4", shape: [4, 32], dtype: .q4_1)
  let embed = try b.constant(name: "embed", shape: [10, 32], dtype: .q8_0)
  let wide = try b.input(name: "wide", shape: [2, 32])
  _ = try b.constant(name: "half", shape: [3], dtype: .f16)
  _ = try b.constant(name: "brain", shape: [3], dtype: .bf16)
  _ = try b.constant(name: "k4", shape: [1, 256], dtype: .q4_k)
  _ = try b.constant(name: "k6", shape: [1, 256], dtype: .q6_k)
  try b.scope("init") { () throws(TraceError) in
    _ = try b.parameter(name: "zeros", shape: [2], initializer: .zeros)
    _ = try b.parameter(name: "constant", shape: [2], initializer: .constant(0.5))
    _ = try b.parameter(
      name: "kaiming", shape: [3, 2], initializer: .kaimingUniformDefault, seed: 7)
    _ = try b.parameter(
      name: "kaiming_a", shape: [3, 2], initializer: .kaimingUniform(a: 0), seed: 8)
    _ = try b.parameter(
      name: "kaiming_torch", shape: [3, 4, 2],
      initializer: .kaimingUniform(a: 5.0.squareRoot(), fanIn: .torch), seed: 11)
    _ = try b.parameter(
      name: "uniform", shape: [2], initializer: .uniform(low: -0.25, high: 0.25), seed: 9)
    _ = try b.parameter(
      name: "normal", shape: [2], initializer: .normal(mean: 0, std: 0.02), seed: 10)
    _ = try b.parameter(name: "normal_mean", shape: [2], initializer: .normal(mean: 1, std: 1e-3))
    _ = try b.state(name: "cache", shape: [2, 3])
    _ = try b.state(name: "counter", shape: [], dtype: .i32, initializer: nil)
  }
  var outputs: [Tensor] = []
  for function in UnaryOp.allCases { outputs.append(try x.apply(function)) }
  outputs.append(try ids.apply(.neg))
  for function in BinaryOp.allCases {
    outputs.append(try x.apply(function, y))
    outputs.append(try x.apply(function, 2.5))
  }
  outputs.append(try 1.0 - x)
  outputs.append(try 1e-300 * x)
  outputs.append(try x / -0.125)
  for comparison in Comparison.allCases { outputs.append(try x.compare(comparison, y)) }
  let mask = try x.compare(.gt, 0)
  outputs.append(try select(mask, x, y))
  outputs.append(
    try b.emit(.select, [.value(mask.value), .value(x.value), .scalar(-.infinity)])[0])
  outputs.append(try x.sum(axes: [1]))
  outputs.append(try x.max(axes: [0], keepDims: true))
  outputs.append(try x.mean(axes: [0, 1]))
  let square = try x.reshaped([3, 2])
  outputs.append(try matmul(x, square))
  outputs.append(try matmul(x, x, transposeB: true))
  outputs.append(try matmul(x, x, transposeA: true))
  outputs.append(try matmul(square, x, transposeA: true, transposeB: true))
  outputs.append(try matmul(wide, quantized, transposeB: true).named("layers.0.attn.q"))
  outputs.append(try x.transposed([1, 0]))
  outputs.append(try y.broadcast(to: [4, 3]))
  outputs.append(try x.slice(start: [0, 1], end: [2, 3]))
  outputs.append(try concat([x, x], axis: 0))
  outputs.append(try concat([x, y.reshaped([1, 3])], axis: 0))
  outputs.append(try gather(embed, ids, axis: 0).named("embed"))
  outputs.append(try gather(x, ids, axis: 1))
  outputs.append(try scatterAdd(x, ids, gather(x, ids, axis: 1), axis: 1))
  outputs.append(try x.cast(to: .i32))
  outputs.append(try ids.cast(to: .f32))
  outputs.append(try quantized.cast(to: .f32))
  outputs.append(try b.iota(shape: [2, 3], axis: 1))
  outputs.append(try b.iota(shape: [4], dtype: .f32, axis: 0))
  outputs.append(try b.fill(0, shape: [2, 2]))
  outputs.append(try b.fill(.infinity, shape: [1]))
  outputs.append(try b.fill(-7, shape: [3], dtype: .i32))
  outputs.append(try softmax(x))
  outputs.append(try logSoftmax(x, axis: 0))
  let heads = try x.reshaped([2, 1, 3]).concat(with: x.reshaped([2, 1, 3]))
  outputs.append(try rope(heads, positions: positions, theta: 10000))
  outputs.append(
    try rope(heads, positions: positions, theta: 500000.5, interleaved: true).named("q.rope"))
  outputs.append(try dynamicSlice(x, starts: starts, sizes: [1, 2]))
  outputs.append(try dynamicUpdateSlice(x, x.slice(start: [0, 0], end: [1, 2]), starts: starts))
  // Fused ops, with their multi-result forms.
  let norm = try b.emit(.rmsNorm(epsilon: 1e-5), [.value(x.value), .value(y.value)])[0]
  outputs.append(norm)
  outputs.append(
    try b.emit(.rmsNormGrad(epsilon: 0.5), [.value(x.value), .value(y.value), .value(norm.value)])[
      0])
  outputs.append(try b.emit(.swiglu, [.value(x.value), .value(norm.value)], name: "mlp.act")[0])
  outputs += try b.emit(.swigluGrad, [.value(x.value), .value(norm.value), .value(x.value)])
  let rows = try ids.slice(start: [0, 0], end: [2, 1]).reshaped([2])
  let losses = try b.emit(.crossEntropy, [.value(x.value), .value(rows.value)])[0]
  outputs.append(losses)
  outputs.append(
    try b.emit(.crossEntropyGrad, [.value(x.value), .value(rows.value), .value(losses.value)])[0])
  let adapterA = try b.input(name: "lora_a", shape: [32, 2])
  let adapterB = try b.input(name: "lora_b", shape: [2, 4])
  outputs += try b.emit(
    .loraLinear(scale: 2.0, transposeW: true),
    [.value(wide.value), .value(quantized.value), .value(adapterA.value), .value(adapterB.value)],
    name: "layers.0.attn.v")
  let twoByTwo = try matmul(x, square)
  outputs += try b.emit(
    .loraLinear(scale: -0.5, transposeW: false),
    [.value(x.value), .value(square.value), .value(square.value), .value(twoByTwo.value)])
  let queries = try x.reshaped([1, 2, 3, 1])
  let keys = try y.reshaped([1, 1, 3, 1])
  let causal = try b.iota(shape: [3, 3], axis: 1).compare(.le, b.iota(shape: [3, 3], axis: 0))
  outputs.append(
    try b.emit(
      .attention(scale: 0.125),
      [.value(queries.value), .value(keys.value), .value(keys.value), .value(causal.value)],
      name: "layers.0.attn.context")[0])
  outputs += try b.emit(
    .attentionGrad(scale: 0.125),
    [
      .value(queries.value), .value(keys.value), .value(keys.value), .value(causal.value),
      .value(queries.value),
    ])
  outputs += try b.emit(
    .elementwise(try ElementwiseExpression(parsing: "mul(add($0, $1), neg(-0.5))")),
    [.value(x.value), .value(x.value)], name: "layers.0.chain")
  return try b.finish(outputs: outputs)
}

extension Tensor {
  /// Joins along the last axis (a test helper).
  fileprivate func concat(with other: Tensor) throws(TraceError) -> Tensor {
    try IR.concat([self, other], axis: -1)
  }
}

@Test func everyOpRoundTrips() throws {
  let graph = try everyOpGraph()
  let text = Printer().print(graph)
  let parsed = try Parser.parse(text)
  #expect(parsed == graph)
  #expect(Printer().print(parsed) == text)
  try Verifier.verify(parsed)
}

/// The every-op graph uses every row of the op table and every family member, so a new op
/// cannot skip the round-trip test.
@Test func everyOpKindIsCovered() throws {
  let text = Printer().print(try everyOpGraph())
  let parsed = try Parser.parse(text)
  let kinds = Set(parsed.body.map(\.op.kind))
  for kind in OpKind.allCases { #expect(kinds.contains(kind), "no round-trip example of \(kind)") }
  let mnemonics = Set(parsed.body.map(\.op.mnemonic))
  for mnemonic in Op.allMnemonics {
    #expect(mnemonics.contains(mnemonic), "no round-trip example of \(mnemonic)")
    #expect(text.contains(" = \(mnemonic) ") || text.contains(" = \(mnemonic)  "), "\(mnemonic)")
  }
  for dtype in DType.allCases { #expect(text.contains("\(dtype.rawValue)["), "\(dtype)") }
}

/// Every instruction of the every-op graph agrees with its op's row: operand and result counts,
/// and printed attributes in the row's order with the row's kinds.
@Test func everyInstructionMatchesItsOpTableRow() throws {
  for instruction in try everyOpGraph().body {
    let facts = instruction.op.kind.facts
    let name = instruction.op.mnemonic
    if let operands = facts.operands {
      #expect(instruction.operands.count == operands, "\(name) operands")
    } else {
      #expect(!instruction.operands.isEmpty, "\(name) operands")
    }
    #expect(instruction.results.count == facts.results, "\(name) results")
    let specs = facts.attributes.map(\.name)
    let printed = instruction.op.attributes.map(\.key)
    #expect(
      printed == specs.filter(printed.contains), "\(name) prints \(printed), its row says \(specs)")
    for (key, value) in instruction.op.attributes {
      let kind = facts.attributes.first { $0.name == key }?.kind
      switch value {
      case .flag: #expect(kind == .flag, "\(name).\(key)")
      case .integer: #expect(kind == .integer, "\(name).\(key)")
      case .integers: #expect(kind == .integers, "\(name).\(key)")
      case .number: #expect(kind == .number, "\(name).\(key)")
      case .text: #expect(kind == .text, "\(name).\(key)")
      case .word: Issue.record("\(name).\(key): ops take no word attributes")
      }
    }
    for spec in facts.attributes where spec.kind != .flag {
      #expect(printed.contains(spec.name), "\(name) must print \(spec.name)")
    }
  }
}

/// Each mnemonic names one op kind (no two rows spell the same name).
@Test func mnemonicsAreUnique() {
  #expect(Set(Op.allMnemonics).count == Op.allMnemonics.count)
}

/// The example of DESIGN.md section 4, character for character.
let designExample = """
  func @train(%x: f32[4,16]) -> (f32[], f32[16,2], f32[2,32]) {
    const @fc.weight : f32[32,16]
    param @fc.lora_a : f32[16,2] {init=kaiming_uniform, seed=7}
    param @fc.lora_b : f32[2,32] {init=zeros}
    %0 = matmul %x, @fc.weight {transpose_b}   : f32[4,32]   "fc.base"
    %1 = matmul %x, @fc.lora_a                 : f32[4,2]
    %2 = matmul %1, @fc.lora_b                 : f32[4,32]
    %3 = mul %2, 2.0                           : f32[4,32]
    %4 = add %0, %3                            : f32[4,32]   "fc"
    %5 = mul %4, %4                            : f32[4,32]
    %6 = reduce_sum %5 {axes=[0,1]}            : f32[]       "loss"
    %7 = mul %4, 2.0                           : f32[4,32]   "fc.grad"
    %8 = mul %7, 2.0                           : f32[4,32]
    %9 = matmul %1, %8 {transpose_a}           : f32[2,32]   "fc.lora_b.grad"
    %10 = matmul %8, @fc.lora_b {transpose_b}  : f32[4,2]
    %11 = matmul %x, %10 {transpose_a}         : f32[16,2]   "fc.lora_a.grad"
    return %6, %11, %9
  }

  """

@Test func designExamplePrintsIdentically() throws {
  let graph = try Parser.parse(designExample)
  #expect(Printer().print(graph) == designExample)
  #expect(graph.declarations.map(\.kind) == [.constant, .parameter, .parameter])
  #expect(graph.body.count == 12)
  #expect(graph.body[10].op == .matmul(transposeA: false, transposeB: true))
}

@Test func parserAcceptsHandWrittenText() throws {
  // Comments, blank lines, any result names, unaligned types and integer scalars.
  let text = """
    # a comment line

    func @f(%x: f32[2]) -> (f32[2]) {   # trailing comment
      %double = mul %x, 2 : f32[2]
      %y = add %double, -1.5e0 : f32[2] "out.y"
      return %y
    }
    """
  let graph = try Parser.parse(text)
  #expect(
    Printer().print(graph) == """
      func @f(%x: f32[2]) -> (f32[2]) {
        %0 = mul %x, 2.0                           : f32[2]
        %1 = add %0, -1.5                          : f32[2]      "out.y"
        return %1
      }

      """)
}

@Test func namesWithEscapesRoundTripThroughStrings() throws {
  // Names are dotted paths; the string syntax still decodes escapes before validating them.
  let text =
    "func @f(%x: f32[1]) -> (f32[1]) {\n  %0 = neg %x : f32[1] \"a\\u{2e}b\"\n  return %0\n}\n"
  let graph = try Parser.parse(text)
  #expect(graph.body[0].name == "a.b")
}

@Test func compactedRenumbersDeclarationsBeforeResults() throws {
  let b = GraphBuilder(name: "g")
  let x = try b.input(name: "x", shape: [2])
  let y = try x * 2
  let w = try b.parameter(name: "w", shape: [2], initializer: .zeros)
  let graph = try b.finish(outputs: [try y + w])
  #expect(graph.inputs[0].value == Value(0))
  #expect(graph.declarations[0].value == Value(1))
  #expect(graph.body.map(\.results) == [[Value(2)], [Value(3)]])
  #expect(try Parser.parse(Printer().print(graph)) == graph)
}
