import Foundation
import IR
import Passes
import Testing

/// One op to differentiate: parameter shapes, and the op applied to them (other operands, like
/// indices, are traced inside).
struct GradientCase: CustomTestStringConvertible, Sendable {
  var name: String
  var shapes: [[Int]]
  /// Keeps inputs away from kinks and poles (positive for log/sqrt/pow, no ties for max).
  var positive = false
  var body: @Sendable (GraphBuilder, [Tensor]) throws(TraceError) -> Tensor

  var testDescription: String { name }
}

private func indices(_ b: GraphBuilder, _ values: [Int32], _ shape: [Int]) throws(TraceError)
  -> Tensor
{
  // i32 constants built from iota and arithmetic so the graph needs no extra bindings.
  precondition(values.count == shape.reduce(1, *))
  var result = try b.fill(Double(values[0]), shape: [1], dtype: .i32)
  for value in values.dropFirst() {
    result = try concat([result, b.fill(Double(value), shape: [1], dtype: .i32)], axis: 0)
  }
  return try result.reshaped(shape)
}

let gradientCases: [GradientCase] =
  UnaryOp.allCases.map { function in
    GradientCase(
      name: function.rawValue, shapes: [[2, 3]],
      positive: [.log, .sqrt, .rsqrt, .reciprocal, .abs, .relu].contains(function)
    ) { _, p throws(TraceError) in try p[0].apply(function) }
  }
  + BinaryOp.allCases.map { function in
    GradientCase(name: function.rawValue, shapes: [[2, 3], [3]], positive: function == .pow) {
      _, p throws(TraceError) in try p[0].apply(function, p[1])
    }
  } + [
    GradientCase(name: "mul by scalar", shapes: [[3]]) { _, p throws(TraceError) in try 3 * p[0] },
    GradientCase(name: "div scalar by x", shapes: [[3]], positive: true) {
      _, p throws(TraceError) in
      try 2 / p[0]
    },
    GradientCase(name: "select", shapes: [[2, 3], [3]]) { _, p throws(TraceError) in
      try select(p[0].compare(.gt, 0), p[0], p[1])
    },
    GradientCase(name: "reduce_sum", shapes: [[2, 3, 4]]) { _, p throws(TraceError) in
      try p[0].sum(axes: [0, 2])
    },
    GradientCase(name: "reduce_mean keep", shapes: [[2, 3, 4]]) { _, p throws(TraceError) in
      try p[0].mean(axes: [1], keepDims: true)
    },
    GradientCase(name: "reduce_max", shapes: [[2, 3, 4]]) { _, p throws(TraceError) in
      try p[0].max(axes: [2])
    },
    GradientCase(name: "matmul", shapes: [[3, 4], [4, 2]]) { _, p throws(TraceError) in
      try matmul(p[0], p[1])
    },
    GradientCase(name: "matmul transpose_a", shapes: [[4, 3], [4, 2]]) { _, p throws(TraceError) in
      try matmul(p[0], p[1], transposeA: true)
    },
    GradientCase(name: "matmul transpose_b", shapes: [[3, 4], [2, 4]]) { _, p throws(TraceError) in
      try matmul(p[0], p[1], transposeB: true)
    },
    GradientCase(name: "matmul both", shapes: [[4, 3], [2, 4]]) { _, p throws(TraceError) in
      try matmul(p[0], p[1], transposeA: true, transposeB: true)
    },
    GradientCase(name: "matmul batched shared weight", shapes: [[2, 3, 4], [5, 4]]) {
      _, p throws(TraceError) in try matmul(p[0], p[1], transposeB: true)
    },
    GradientCase(name: "matmul batched both", shapes: [[2, 3, 4], [1, 4, 5]]) {
      _, p throws(TraceError) in try matmul(p[0], p[1])
    },
    GradientCase(name: "reshape", shapes: [[2, 6]]) { _, p throws(TraceError) in
      try p[0].reshaped([3, 4])
    },
    GradientCase(name: "transpose", shapes: [[2, 3, 4]]) { _, p throws(TraceError) in
      try p[0].transposed([2, 0, 1])
    },
    GradientCase(name: "broadcast", shapes: [[3, 1]]) { _, p throws(TraceError) in
      try p[0].broadcast(to: [2, 3, 4])
    },
    GradientCase(name: "slice", shapes: [[4, 5]]) { _, p throws(TraceError) in
      try p[0].slice(start: [1, 0], end: [3, 4])
    },
    GradientCase(name: "concat", shapes: [[2, 3], [2, 2]]) { _, p throws(TraceError) in
      try concat(p, axis: 1)
    },
    GradientCase(name: "gather", shapes: [[5, 3]]) { b, p throws(TraceError) in
      try gather(p[0], indices(b, [4, 0, 4, 2], [2, 2]), axis: 0)
    },
    GradientCase(name: "scatter_add", shapes: [[5, 3], [3, 3]]) { b, p throws(TraceError) in
      try scatterAdd(p[0], indices(b, [1, 1, 3], [3]), p[1], axis: 0)
    },
    GradientCase(name: "cast", shapes: [[3]]) { _, p throws(TraceError) in try p[0].cast(to: .f32)
    },
    GradientCase(name: "softmax", shapes: [[2, 4]]) { _, p throws(TraceError) in
      try softmax(p[0], axis: 1)
    },
    GradientCase(name: "log_softmax", shapes: [[3, 4]]) { _, p throws(TraceError) in
      try logSoftmax(p[0], axis: 0)
    },
    GradientCase(name: "rope", shapes: [[2, 3, 4]]) { b, p throws(TraceError) in
      try rope(p[0], positions: indices(b, [3, 7], [2]), theta: 10000)
    },
    GradientCase(name: "rope interleaved", shapes: [[2, 3, 4]]) { b, p throws(TraceError) in
      try rope(p[0], positions: indices(b, [1, 2], [2]), theta: 100, interleaved: true)
    },
    GradientCase(name: "dynamic_slice", shapes: [[4, 5]]) { b, p throws(TraceError) in
      try dynamicSlice(p[0], starts: indices(b, [1, 3], [2]), sizes: [2, 2])
    },
    GradientCase(name: "dynamic_update_slice", shapes: [[4, 5], [2, 2]]) {
      b, p throws(TraceError) in
      try dynamicUpdateSlice(p[0], p[1], starts: indices(b, [2, 1], [2]))
    },
    // Fused ops: their gradients are the fused `*_grad` ops (and primitives for lora_linear).
    GradientCase(name: "rms_norm", shapes: [[2, 3, 4], [4]]) { b, p throws(TraceError) in
      try b.emit(.rmsNorm(epsilon: 0.1), [.value(p[0].value), .value(p[1].value)])[0]
    },
    GradientCase(name: "swiglu", shapes: [[2, 3], [2, 3]]) { b, p throws(TraceError) in
      try b.emit(.swiglu, [.value(p[0].value), .value(p[1].value)])[0]
    },
    GradientCase(name: "cross_entropy with ignored rows", shapes: [[4, 5]]) {
      b, p throws(TraceError) in
      let targets = try indices(b, [3, -100, 0, 5], [4])
      return try b.emit(.crossEntropy, [.value(p[0].value), .value(targets.value)])[0]
    },
    GradientCase(name: "lora_linear", shapes: [[2, 3, 4], [4, 2], [2, 5]]) {
      b, p throws(TraceError) in
      // A frozen base weight [out 5, in 4] computed in the graph (no gradient is formed for it).
      let w = try (b.iota(shape: [5, 4], axis: 1).cast(to: .f32) * 0.25 - 0.3)
      let results = try b.emit(
        .loraLinear(scale: 1.5, transposeW: true),
        [.value(p[0].value), .value(w.value), .value(p[1].value), .value(p[2].value)])
      // Both results reach the loss, so the `xa` gradient is used too.
      return try results[1] + matmul(results[0], p[2]) * 0.5
    },
    GradientCase(
      name: "attention grouped causal", shapes: [[2, 4, 3, 5], [2, 2, 3, 5], [2, 2, 3, 5]]
    ) {
      b, p throws(TraceError) in
      // Four query heads over two key/value heads, causal over 3 positions.
      let rows = try b.iota(shape: [3, 3], axis: 0)
      let causal = try b.iota(shape: [3, 3], axis: 1).compare(.le, rows)
      return try b.emit(
        .attention(scale: 0.7),
        [.value(p[0].value), .value(p[1].value), .value(p[2].value), .value(causal.value)])[0]
    },
  ]

/// Traces `loss = sum(op(params) * weights)` with fixed random weights, so the incoming gradient
/// is not uniform.
func lossGraph(_ testCase: GradientCase) throws -> Graph {
  let b = GraphBuilder(name: "check")
  var parameters: [Tensor] = []
  for (index, shape) in testCase.shapes.enumerated() {
    parameters.append(try b.parameter(name: "p\(index)", shape: shape, initializer: .zeros))
  }
  let y = try testCase.body(b, parameters)
  let weights = try b.input(name: "weights", shape: y.shape)
  let loss = try (y * weights).sum().named("loss")
  return try b.finish(outputs: [loss])
}

private func random(_ shape: [Int], seed: UInt64, positive: Bool) -> DenseTensor {
  var generator = SplitMix64(seed: seed)
  let values = (0..<shape.reduce(1, *)).map { _ -> Double in
    let u = generator.nextUnit()
    return positive ? 0.5 + 1.5 * u : 4 * u - 2
  }
  return DenseTensor(dtype: .f32, shape: shape, scalars: values)
}

@Test(arguments: gradientCases)
func vjpMatchesCentralFiniteDifferences(_ testCase: GradientCase) throws {
  let forward = try lossGraph(testCase)
  let train = try Autodiff().run(forward).compacted()
  try Verifier.verify(train)
  var bindings: [String: DenseTensor] = [:]
  for (index, shape) in testCase.shapes.enumerated() {
    bindings["p\(index)"] = random(shape, seed: UInt64(index + 1), positive: testCase.positive)
  }
  let yShape = forward.type(of: forward.inputs[0].value).shape
  bindings["weights"] = random(yShape, seed: 99, positive: false)
  let interpreter = Interpreter(precision: .f64)
  let outputs = try interpreter.run(train, bindings: bindings)
  for index in testCase.shapes.indices {
    let gradient = outputs[1 + index]
    let name = "p\(index)"
    let base = bindings[name]!
    #expect(gradient.shape == base.shape)
    let step = 1e-6
    for element in 0..<base.elementCount {
      var plus = bindings
      var minus = bindings
      plus[name]!.scalars[element] += step
      minus[name]!.scalars[element] -= step
      let up = try interpreter.run(forward, bindings: plus)[0].scalars[0]
      let down = try interpreter.run(forward, bindings: minus)[0].scalars[0]
      let numeric = (up - down) / (2 * step)
      let analytic = gradient.scalars[element]
      #expect(
        abs(numeric - analytic) <= 1e-5 * (1 + abs(numeric)),
        "\(testCase.name) d/d\(name)[\(element)]: analytic \(analytic), numeric \(numeric)")
    }
  }
}

/// The mnemonics autodiff has no rule for: comparisons (their i32 results carry no gradient),
/// generators, and the fused backward ops and chains `fuse` makes after `autodiff`.
let nonDifferentiable: Set<String> = [
  "eq", "ne", "lt", "le", "gt", "ge", "iota", "fill", "rms_norm_grad", "swiglu_grad",
  "cross_entropy_grad", "attention_grad", "elementwise",
]

/// Every mnemonic of the op table has a gradient case (named after it, and using it) or is
/// listed as non-differentiable, never both: a new op cannot skip the gradient checks.
@Test func everyOpKindHasAGradientCaseOrIsListedAsNonDifferentiable() throws {
  var covered: Set<String> = []
  for testCase in gradientCases {
    let mnemonic = testCase.name.split(separator: " ").first.map(String.init) ?? ""
    let graph = try lossGraph(testCase)
    #expect(
      graph.body.contains { $0.op.mnemonic == mnemonic },
      "gradient case '\(testCase.name)' does not use \(mnemonic)")
    covered.insert(mnemonic)
  }
  for kind in OpKind.allCases {
    for mnemonic in kind.mnemonics {
      #expect(
        covered.contains(mnemonic) || nonDifferentiable.contains(mnemonic),
        "no gradient check for \(mnemonic), and it is not listed as non-differentiable")
      #expect(
        !(covered.contains(mnemonic) && nonDifferentiable.contains(mnemonic)),
        "\(mnemonic) has a gradient check but is listed as non-differentiable")
    }
  }
  #expect(nonDifferentiable.isSubset(of: Op.allMnemonics), "listed names that are not ops")
}

@Test func comparisonsGateGradientsWithoutBeingDifferentiated() throws {
  // loss = sum(cast(p > 0) * p): the comparison's i32 result is inactive, so the gradient flows
  // only through the product and equals the mask (1 where p > 0, else 0).
  let b = GraphBuilder(name: "g")
  let p = try b.parameter(name: "p", shape: [4], initializer: .zeros)
  let mask = try p.compare(.gt, 0).cast(to: .f32)
  let loss = try (mask * p).sum().named("loss")
  let train = try Autodiff().run(try b.finish(outputs: [loss])).compacted()
  try Verifier.verify(train)
  #expect(
    !train.body.contains {
      if case .compare = $0.op { $0.name?.hasSuffix(".grad") == true } else { false }
    })
  let values = DenseTensor(shape: [4], floats: [-1.5, 2, 0, 0.25])
  let outputs = try Interpreter(precision: .f64).run(train, bindings: ["p": values])
  #expect(outputs[0].scalars == [2.25])
  #expect(outputs[1].scalars == [0, 1, 0, 1])
}
