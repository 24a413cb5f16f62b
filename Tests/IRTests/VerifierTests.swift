import IR
import Testing

/// `f(x: f32[2,3]) -> neg(x) * 2`, a small valid graph to break in each test.
func smallGraph() throws -> Graph {
  try Parser.parse(
    """
    func @f(%x: f32[2,3]) -> (f32[2,3]) {
      param @w : f32[3] {init=zeros}
      %0 = neg %x                                : f32[2,3]      "a"
      %1 = mul %0, @w                            : f32[2,3]
      return %1
    }
    """)
}

private func verifyError(_ graph: Graph) -> String? {
  do {
    try Verifier.verify(graph)
    return nil
  } catch {
    return error.message
  }
}

@Test func verifierAcceptsValidGraphs() throws {
  try Verifier.verify(try smallGraph())
  try Verifier.verify(try everyOpGraph())
}

@Test func verifierRejectsUseBeforeDefinition() throws {
  var graph = try smallGraph()
  graph.body.swapAt(0, 1)
  #expect(
    verifyError(graph)
      == "instruction 0 '%0 = mul %1, @w : f32[2,3]': operand %1 is used before it is defined")
}

@Test func verifierRejectsRedefinition() throws {
  var graph = try smallGraph()
  graph.body[1].results = graph.body[0].results
  #expect(verifyError(graph) == "instruction 1 '%0 = mul %0, @w : f32[2,3]' redefines %0")
}

@Test func verifierRejectsWrongResultType() throws {
  var graph = try smallGraph()
  graph.types[graph.body[1].results[0].index] = TensorType(.f32, [3, 2])
  #expect(
    verifyError(graph)
      == "instruction 1 '%1 = mul %0, @w : f32[3,2]': result %1 has type f32[3,2], but mul gives f32[2,3]"
  )
}

@Test func verifierRejectsOperandTypeErrors() throws {
  var graph = try smallGraph()
  graph.body[1].op = .matmul(transposeA: false, transposeB: false)
  #expect(
    verifyError(graph)
      == "instruction 1 '%1 = matmul %0, @w : f32[2,3]': matmul: operands need rank >= 2: f32[2,3] x f32[3]"
  )
  graph = try smallGraph()
  graph.body[0].operands.append(.scalar(1))
  #expect(
    verifyError(graph)
      == "instruction 0 '%0 = neg %x, 1.0 : f32[2,3] \"a\"': neg: expected 1 operand, got 2")
}

@Test func verifierRejectsBadNames() throws {
  var graph = try smallGraph()
  graph.body[0].name = "a..b"
  #expect(verifyError(graph)?.hasSuffix("invalid value name \"a..b\"") == true)
  graph = try smallGraph()
  graph.declarations[0].name = "x"
  #expect(verifyError(graph) == "duplicate name 'x' (declaration @x)")
  graph = try smallGraph()
  graph.inputs[0].name = "7up"
  #expect(verifyError(graph) == "invalid input name '%7up'")
  graph = try smallGraph()
  graph.name = ""
  #expect(verifyError(graph) == "invalid function name '@'")
}

@Test func verifierRejectsBadDeclarations() throws {
  var graph = try smallGraph()
  graph.declarations[0].kind = .constant
  #expect(
    verifyError(graph)
      == "'const @w : f32[3] {init=zeros}': a constant has no initializer; its data is bound by name"
  )
  graph = try smallGraph()
  graph.types[graph.declarations[0].value.index] = TensorType(.q8_0, [32])
  #expect(
    verifyError(graph)
      == "'param @w : q8_0[32] {init=zeros}': only constants may have storage type q8_0")
}

@Test func verifierRejectsUndefinedOutputsAndValuesWithoutTypes() throws {
  var graph = try smallGraph()
  graph.outputs = [Value(99)]
  #expect(verifyError(graph) == "output 0 (%<undefined v99>) is not defined")
  graph = try smallGraph()
  graph.body[0].operands = [.value(Value(42))]
  #expect(
    verifyError(graph)
      == "instruction 0 '%0 = neg %<undefined v42> : f32[2,3] \"a\"': operand %<undefined v42> is used before it is defined"
  )
}
