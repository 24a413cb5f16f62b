import IR
import Testing

private func traceError(_ body: () throws(TraceError) -> Void) -> String? {
  do {
    try body()
    return nil
  } catch {
    return error.message
  }
}

@Test func tracingErrorNamesOpOperandsAndScope() {
  let message = traceError { () throws(TraceError) in
    let b = GraphBuilder(name: "g")
    let x = try b.input(name: "x", shape: [4, 16])
    try b.scope("layers.3") { () throws(TraceError) in
      try b.scope("attn") { () throws(TraceError) in
        let w = try b.constant(name: "q.weight", shape: [32, 15])
        _ = try matmul(x, w, transposeB: true)
      }
    }
  }
  #expect(
    message
      == "matmul: contraction mismatch: f32[4,16] x f32[32,15] in scope 'layers.3.attn' (operands: f32[4,16], f32[32,15])"
  )
}

@Test func tracingRejectsBroadcastAndDtypeMistakesAtOnce() {
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      _ = try b.input(name: "x", shape: [2, 3]) + b.input(name: "y", shape: [2])
    } == "add: shapes do not broadcast: f32[2,3], f32[2] (operands: f32[2,3], f32[2])")
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      _ = try exp(b.input(name: "ids", shape: [2], dtype: .i32))
    } == "exp: expected f32 operand, got i32[2] (operands: i32[2])")
}

@Test func scopesQualifyDeclarationsAndNames() throws {
  let b = GraphBuilder(name: "g")
  let x = try b.input(name: "x", shape: [2, 4])
  let y = try b.scope("layers.0") { () throws(TraceError) -> Tensor in
    let w = try b.parameter(name: "attn.q.weight", shape: [4, 4], initializer: .zeros)
    return try matmul(x, w).named("attn.q")
  }
  let graph = try b.finish(outputs: [y])
  #expect(graph.declarations.map(\.name) == ["layers.0.attn.q.weight"])
  #expect(graph.body[0].name == "layers.0.attn.q")
}

@Test func tracingRejectsDuplicateAndInvalidNames() {
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      try b.scope("fc") { () throws(TraceError) in
        _ = try b.parameter(name: "w", shape: [2], initializer: .zeros)
        _ = try b.constant(name: "w", shape: [2])
      }
    } == "'fc.w' is already declared (in scope 'fc')")
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      try b.input(name: "x", shape: [2]).named("y")
    } == "only instruction results can be named; 'y' names an input or declaration")
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      _ = try b.input(name: "x y", shape: [2])
    } == "invalid input name 'x y'")
  #expect(
    traceError { () throws(TraceError) in
      let b = GraphBuilder(name: "g")
      _ = try b.parameter(name: "w", shape: [2, 0], initializer: .zeros)
    } == "w: dimension 0 in f32[2,0] is not positive")
}

@Test func negativeAxesAndInferredDimensions() throws {
  let b = GraphBuilder(name: "g")
  let x = try b.input(name: "x", shape: [2, 3, 4])
  let s = try softmax(x)
  let r = try x.reshaped([-1, 4])
  let m = try x.sum(axes: [-1, 0])
  let graph = try b.finish(outputs: [s, r, m])
  #expect(graph.body[0].op == .softmax(axis: 2))
  #expect(graph.types[graph.body[1].results[0].index] == TensorType(.f32, [6, 4]))
  #expect(graph.body[2].op == .reduce(.sum, axes: [2, 0], keepDims: false))
}
