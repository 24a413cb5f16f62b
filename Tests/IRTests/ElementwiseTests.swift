import IR
import Testing

/// The `elementwise` op's expression text, type rule and reference semantics.
@Test func elementwiseExpressionsPrintAndParseBack() throws {
  let texts = [
    "add($0, $1)", "mul(add(mul($0, $1), mul($0, $1)), 2.0)", "neg(div($0, -3.5))",
    "max(sigmoid($2), pow($1, 0.5))", "sub(inf, $0)", "min($0, -inf)",
  ]
  for text in texts {
    let expression = try ElementwiseExpression(parsing: text)
    #expect(expression.description == text)
    #expect(try ElementwiseExpression(parsing: expression.description) == expression)
  }
  let spaced = try ElementwiseExpression(parsing: "  add( $0 ,mul($1,  1e-3) ) ")
  #expect(spaced == .binary(.add, .operand(0), .binary(.mul, .operand(1), .literal(0.001))))
  #expect(spaced.operandCount == 2 && spaced.nodeCount == 2 && spaced.depth == 3)
}

@Test func malformedExpressionsNameTheColumn() {
  let cases: [(String, String)] = [
    ("", "column 1: expected an operand, a number or a call"),
    ("add($0)", "column 7: expected ',' between the two arguments of add"),
    ("neg($0, $1)", "column 7: expected ')' after the one argument of neg"),
    (
      "matmul($0, $1)", "column 1: unknown function 'matmul' (unary or binary elementwise ops only)"
    ),
    ("add($x, $1)", "column 5: expected an operand index after '$'"),
    ("add($0, $1) $2", "column 13: expected the end of the expression"),
    ("add($0, 1.2.3)", "column 9: expected an operand like $0, a number or a call like add(...)"),
    ("exp", "column 4: expected '(' after exp"),
  ]
  for (text, message) in cases {
    #expect(throws: AttributeError(message: "elementwise: expr " + message), "\(text)") {
      try ElementwiseExpression(parsing: text)
    }
  }
  // Deep nesting is refused, not a stack overflow.
  let deep = String(repeating: "neg(", count: 300) + "$0" + String(repeating: ")", count: 300)
  #expect(throws: AttributeError.self) { try ElementwiseExpression(parsing: deep) }
}

@Test func elementwiseInstructionsRoundTripAndCheckTheirOperands() throws {
  let text = """
    func @f(%a: f32[2,3], %b: f32[2,3]) -> (f32[2,3]) {
      %0 = elementwise %a, %b {expr="mul(add($0, $1), 0.5)"} : f32[2,3] "half.sum"
      return %0
    }

    """
  let graph = try Parser.parse(text)
  #expect(Printer().print(graph).contains(#"{expr="mul(add($0, $1), 0.5)"}"#))
  #expect(try Parser.parse(Printer().print(graph)) == graph)
  let failures: [(String, String)] = [
    (
      #"%0 = elementwise %a {expr="add($0, $1)"} : f32[2,3]"#,
      "elementwise: the expression reads 2 operand(s), got 1"
    ),
    (
      #"%0 = elementwise %a, %c {expr="add($0, $1)"} : f32[2,3]"#,
      "elementwise: operands must all be f32[2,3]: f32[2,3], f32[3]"
    ),
    (
      #"%0 = elementwise %a {expr=add} : f32[2,3]"#,
      "elementwise: attribute 'expr' must be a quoted string"
    ),
    (#"%0 = elementwise %a : f32[2,3]"#, "elementwise: missing attribute 'expr'"),
    (
      #"%0 = elementwise %a {expr="foo($0)"} : f32[2,3]"#,
      "elementwise: expr column 1: unknown function 'foo' (unary or binary elementwise ops only)"
    ),
  ]
  for (line, message) in failures {
    let source = """
      func @f(%a: f32[2,3], %c: f32[3]) -> (f32[2,3]) {
        \(line)
        return %0
      }
      """
    do {
      _ = try Parser.parse(source)
      Issue.record("parsed: \(line)")
    } catch {
      #expect(error.description.contains(message), "\(error.description)")
    }
  }
}

@Test func theInterpreterComputesAChainAsItsPrimitivesDo() throws {
  // The same values through the primitive chain and the fused expression, rounding per node.
  let b = GraphBuilder(name: "chain")
  let x = try b.input(name: "x", shape: [5])
  let y = try b.input(name: "y", shape: [5])
  let chain = try (sigmoid(x * y) + 0.25) / y
  let primitive = try b.finish(outputs: [chain])
  let fusedText = """
    func @chain(%x: f32[5], %y: f32[5]) -> (f32[5]) {
      %0 = elementwise %x, %y {expr="div(add(sigmoid(mul($0, $1)), 0.25), $1)"} : f32[5]
      return %0
    }
    """
  let fused = try Parser.parse(fusedText)
  let bindings = [
    "x": DenseTensor(dtype: .f32, shape: [5], scalars: [0.1, -2, 3.5, 0, 7]),
    "y": DenseTensor(dtype: .f32, shape: [5], scalars: [1.3, 0.7, -0.2, 5, 1e-3]),
  ]
  for precision in [InterpreterPrecision.f32, .f64] {
    let interpreter = Interpreter(precision: precision)
    #expect(
      try interpreter.run(fused, bindings: bindings)
        == interpreter.run(primitive, bindings: bindings))
  }
}
