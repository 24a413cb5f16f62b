import IR

/// The vector-Jacobian product of one instruction: for each operand flagged in `wanted`, the
/// gradient of the loss with respect to that operand, given the gradient of its result.
///
/// One short case per op. Broadcast operands get their gradient summed back to their shape.
func vjp(
  _ instruction: Instruction, gradient g: Value, wanted: [Bool], _ e: inout Emitter
) throws(PassError) -> [Value?] {
  let operands = instruction.operands
  let y = instruction.results[0]
  let yType = e.type(y)
  func value(_ index: Int) -> Value? { operands[index].value }
  func shape(_ index: Int) -> [Int] { value(index).map { e.type($0).shape } ?? [] }
  /// `g * factor` summed back to operand `index`'s shape.
  func back(_ index: Int, _ computed: Value) throws(PassError) -> Value? {
    guard wanted[index] else { return nil }
    return try e.unbroadcast(computed, to: shape(index))
  }
  func operandValue(_ index: Int) throws(PassError) -> Value {
    switch operands[index] {
    case .value(let v): return v
    case .scalar(let s): return try e.emit(.fill(value: s, type: TensorType(.f32, [])), [])
    }
  }
  func noGradient() -> PassError {
    PassError(
      message:
        "autodiff: \(instruction.op.mnemonic) has no gradient\(instruction.name.map { " (value \"\($0)\")" } ?? "")"
    )
  }

  switch instruction.op {
  case .unary(let function):
    let x = try operandValue(0)
    let local: Value
    switch function {
    case .neg: local = try e.unary(.neg, g)
    case .abs:
      let positive = try e.emit(.compare(.gt), [.value(x), .scalar(0)])
      let negative = try e.emit(.compare(.lt), [.value(x), .scalar(0)])
      let negated = try e.unary(.neg, g)
      let inner = try e.emit(.select, [.value(negative), .value(negated), .scalar(0)])
      local = try e.emit(.select, [.value(positive), .value(g), .value(inner)])
    case .exp: local = try e.binary(.mul, g, y)
    case .log: local = try e.binary(.div, g, x)
    case .sqrt: local = try e.binary(.div, try e.binary(.mul, g, 0.5), y)
    case .rsqrt:
      // d/dx x^-1/2 = -1/2 y^3.
      let cube = try e.binary(.mul, try e.binary(.mul, y, y), y)
      local = try e.binary(.mul, try e.binary(.mul, g, cube), -0.5)
    case .reciprocal: local = try e.unary(.neg, try e.binary(.mul, g, try e.binary(.mul, y, y)))
    case .tanh:
      let square = try e.binary(.mul, y, y)
      local = try e.binary(.mul, g, try e.emit(.binary(.sub), [.scalar(1), .value(square)]))
    case .sigmoid:
      let complement = try e.emit(.binary(.sub), [.scalar(1), .value(y)])
      local = try e.binary(.mul, g, try e.binary(.mul, y, complement))
    case .relu:
      let positive = try e.emit(.compare(.gt), [.value(x), .scalar(0)])
      local = try e.emit(.select, [.value(positive), .value(g), .scalar(0)])
    case .silu:
      // d/dx x s(x) = s (1 + x (1 - s)).
      let s = try e.unary(.sigmoid, x)
      let complement = try e.emit(.binary(.sub), [.scalar(1), .value(s)])
      let inner = try e.binary(.add, try e.binary(.mul, x, complement), 1)
      local = try e.binary(.mul, g, try e.binary(.mul, s, inner))
    case .sin: local = try e.binary(.mul, g, try e.unary(.cos, x))
    case .cos: local = try e.unary(.neg, try e.binary(.mul, g, try e.unary(.sin, x)))
    }
    return [local]

  case .binary(let function):
    switch function {
    case .add:
      return [try back(0, g), try back(1, g)]
    case .sub:
      return [try back(0, g), wanted[1] ? try back(1, try e.unary(.neg, g)) : nil]
    case .mul:
      return [
        wanted[0] ? try back(0, try e.emit(.binary(.mul), [.value(g), operands[1]])) : nil,
        wanted[1] ? try back(1, try e.emit(.binary(.mul), [.value(g), operands[0]])) : nil,
      ]
    case .div:
      let da = wanted[0] ? try back(0, try e.emit(.binary(.div), [.value(g), operands[1]])) : nil
      var db: Value?
      if wanted[1] {
        // d(a/b)/db = -y / b.
        let ratio = try e.emit(.binary(.div), [.value(y), operands[1]])
        db = try back(1, try e.unary(.neg, try e.binary(.mul, g, ratio)))
      }
      return [da, db]
    case .max, .min:
      // The larger (smaller) side takes the gradient; ties go to the left operand.
      let firstWins = try e.emit(
        .compare(function == .max ? .ge : .le), [operands[0], operands[1]])
      return [
        wanted[0]
          ? try back(0, try e.emit(.select, [.value(firstWins), .value(g), .scalar(0)])) : nil,
        wanted[1]
          ? try back(1, try e.emit(.select, [.value(firstWins), .scalar(0), .value(g)])) : nil,
      ]
    case .pow:
      var da: Value?
      if wanted[0] {
        // b a^(b-1) = b y / a.
        let ratio = try e.emit(.binary(.div), [.value(y), operands[0]])
        da = try back(
          0, try e.binary(.mul, g, try e.emit(.binary(.mul), [.value(ratio), operands[1]])))
      }
      var db: Value?
      if wanted[1] {
        let logarithm = try e.emit(.unary(.log), [operands[0]])
        db = try back(1, try e.binary(.mul, g, try e.binary(.mul, y, logarithm)))
      }
      return [da, db]
    }

  case .select:
    let keep = [
      nil,
      wanted[1] ? try back(1, try e.emit(.select, [operands[0], .value(g), .scalar(0)])) : nil,
      wanted[2] ? try back(2, try e.emit(.select, [operands[0], .scalar(0), .value(g)])) : nil,
    ]
    return keep

  case .reduce(let function, let axes, let keepDims):
    let input = shape(0)
    let kept = input.enumerated().map { axes.contains($0.offset) ? 1 : $0.element }
    var spread = try e.broadcastBack(g, keptShape: kept, to: input, keepDims: keepDims)
    switch function {
    case .sum: break
    case .mean:
      let count = axes.map { input[$0] }.reduce(1, *)
      spread = try e.binary(.mul, spread, 1.0 / Double(count))
    case .max:
      // Ties share the gradient equally.
      let maximum = try e.broadcastBack(y, keptShape: kept, to: input, keepDims: keepDims)
      let isMax = try e.emit(
        .cast(to: .f32), [.value(try e.emit(.compare(.eq), [operands[0], .value(maximum)]))])
      let ties = try e.emit(.reduce(.sum, axes: axes, keepDims: true), [.value(isMax)])
      let share = try e.binary(.div, isMax, try e.emit(.broadcast(to: input), [.value(ties)]))
      spread = try e.binary(.mul, spread, share)
    }
    return [spread]

  case .matmul(let transposeA, let transposeB):
    let (a, w) = (try operandValue(0), try operandValue(1))
    var da: Value?
    var dw: Value?
    let mm = {
      (lhs: Value, rhs: Value, ta: Bool, tb: Bool, e: inout Emitter) throws(PassError) -> Value in
      try e.emit(.matmul(transposeA: ta, transposeB: tb), [.value(lhs), .value(rhs)])
    }
    if wanted[0] {
      let raw: Value
      switch (transposeA, transposeB) {
      case (false, false): raw = try mm(g, w, false, true, &e)
      case (false, true): raw = try mm(g, w, false, false, &e)
      case (true, false): raw = try mm(w, g, false, true, &e)
      case (true, true): raw = try mm(w, g, true, true, &e)
      }
      da = try e.unbroadcast(raw, to: shape(0))
    }
    if wanted[1] {
      let wShape = shape(1)
      let aShape = shape(0)
      if wShape.count == 2 && aShape.count > 2 && !transposeA {
        // A shared weight: fold the batch into the rows so one GEMM forms the gradient.
        let rows = aShape.dropLast().reduce(1, *)
        let a2 = try e.reshape(a, [rows, aShape[aShape.count - 1]])
        let gShape = e.type(g).shape
        let g2 = try e.reshape(g, [rows, gShape[gShape.count - 1]])
        dw = transposeB ? try mm(g2, a2, true, false, &e) : try mm(a2, g2, true, false, &e)
      } else {
        let raw: Value
        switch (transposeA, transposeB) {
        case (false, false): raw = try mm(a, g, true, false, &e)
        case (false, true): raw = try mm(g, a, true, false, &e)
        case (true, false): raw = try mm(a, g, false, false, &e)
        case (true, true): raw = try mm(g, a, true, true, &e)
        }
        dw = try e.unbroadcast(raw, to: wShape)
      }
    }
    return [da, dw]

  case .reshape:
    return [try e.reshape(g, shape(0))]

  case .transpose(let permutation):
    var inverse = [Int](repeating: 0, count: permutation.count)
    for (k, axis) in permutation.enumerated() { inverse[axis] = k }
    return [try e.emit(.transpose(permutation: inverse), [.value(g)])]

  case .broadcast:
    return [try e.unbroadcast(g, to: shape(0))]

  case .slice(let start, let end):
    // Pad with zeros back to the operand's shape, one axis at a time.
    var padded = g
    let input = shape(0)
    for axis in input.indices where start[axis] > 0 || end[axis] < input[axis] {
      var current = e.type(padded).shape
      var parts: [Operand] = []
      if start[axis] > 0 {
        current[axis] = start[axis]
        parts.append(.value(try e.zeros(TensorType(.f32, current))))
      }
      parts.append(.value(padded))
      if end[axis] < input[axis] {
        current[axis] = input[axis] - end[axis]
        parts.append(.value(try e.zeros(TensorType(.f32, current))))
      }
      padded = try e.emit(.concat(axis: axis), parts)
    }
    return [padded]

  case .concat(let axis):
    var offset = 0
    var result: [Value?] = []
    let full = yType.shape
    for index in operands.indices {
      let width = shape(index)[axis]
      defer { offset += width }
      guard wanted[index] else {
        result.append(nil)
        continue
      }
      var start = [Int](repeating: 0, count: full.count)
      var end = full
      start[axis] = offset
      end[axis] = offset + width
      result.append(try e.emit(.slice(start: start, end: end), [.value(g)]))
    }
    return result

  case .gather(let axis):
    guard wanted[0] else { return [nil, nil] }
    let table = try e.zeros(TensorType(.f32, shape(0)))
    return [try e.emit(.scatterAdd(axis: axis), [.value(table), operands[1], .value(g)]), nil]

  case .scatterAdd(let axis):
    return [
      wanted[0] ? g : nil, nil,
      wanted[2] ? try e.emit(.gather(axis: axis), [.value(g), operands[1]]) : nil,
    ]

  case .cast:
    return [g]

  case .softmax(let axis):
    // dx = y (g - sum(g y)).
    let product = try e.binary(.mul, g, y)
    let total = try e.emit(.reduce(.sum, axes: [axis], keepDims: true), [.value(product)])
    return [try e.binary(.mul, y, try e.binary(.sub, g, total))]

  case .logSoftmax(let axis):
    // dx = g - exp(y) sum(g).
    let total = try e.emit(.reduce(.sum, axes: [axis], keepDims: true), [.value(g)])
    return [try e.binary(.sub, g, try e.binary(.mul, try e.unary(.exp, y), total))]

  case .rope(let theta, let interleaved):
    // A rotation's transpose is the rotation by the opposite angle.
    let negated = try e.emit(.unary(.neg), [operands[1]])
    return [
      try e.emit(.rope(theta: theta, interleaved: interleaved), [.value(g), .value(negated)]), nil,
    ]

  case .dynamicSlice:
    let zeros = try e.zeros(TensorType(.f32, shape(0)))
    return [try e.emit(.dynamicUpdateSlice, [.value(zeros), .value(g), operands[1]]), nil]

  case .dynamicUpdateSlice:
    let updateShape = shape(1)
    let dx =
      wanted[0]
      ? try e.emit(
        .dynamicUpdateSlice,
        [.value(g), .value(try e.zeros(TensorType(.f32, updateShape))), operands[2]])
      : nil
    let du =
      wanted[1] ? try e.emit(.dynamicSlice(sizes: updateShape), [.value(g), operands[2]]) : nil
    return [dx, du, nil]

  case .rmsNorm(let epsilon):
    let (x, w) = (try operandValue(0), try operandValue(1))
    let dx =
      wanted[0]
      ? try e.emit(.rmsNormGrad(epsilon: epsilon), [.value(x), .value(w), .value(g)]) : nil
    var dw: Value?
    if wanted[1] {
      // d/dw = sum over rows of g x r, with r = (mean(x^2) + eps)^(-1/2).
      let meanSquare = try e.emit(
        .reduce(.mean, axes: [shape(0).count - 1], keepDims: true),
        [.value(try e.binary(.mul, x, x))])
      let r = try e.unary(.rsqrt, try e.binary(.add, meanSquare, epsilon))
      dw = try back(1, try e.binary(.mul, g, try e.binary(.mul, x, r)))
    }
    return [dx, dw]

  case .swiglu:
    let both = try e.emitAll(.swigluGrad, [operands[0], operands[1], .value(g)])
    return [wanted[0] ? both[0] : nil, wanted[1] ? both[1] : nil]

  case .crossEntropy:
    guard wanted[0] else { return [nil, nil] }
    return [try e.emit(.crossEntropyGrad, [operands[0], operands[1], .value(g)]), nil]

  case .attention(let scale):
    let grads = try e.emitAll(
      .attentionGrad(scale: scale), [operands[0], operands[1], operands[2], operands[3], .value(g)])
    return [
      wanted[0] ? grads[0] : nil, wanted[1] ? grads[1] : nil, wanted[2] ? grads[2] : nil, nil,
    ]

  case .compare, .iota, .fill, .rmsNormGrad, .swigluGrad, .crossEntropyGrad, .loraLinear,
    .attentionGrad, .elementwise:
    throw noGradient()
  }
}

/// The vector-jacobian product of `lora_linear` (results `xa`, `y`) for the result gradients
/// `gradients` (nil where a result does not reach the loss), as primitives: with `h = s g_y`,
/// `dB = xa^T h`, `d xa = g_xa + h B^T`, `dA = x^T d xa`, `dx = g_y op(W)^T + d xa A^T`.
func loraLinearVJP(
  _ instruction: Instruction, gradients: [Value?], wanted: [Bool], _ e: inout Emitter
) throws(PassError) -> [Value?] {
  guard case .loraLinear(let scale, let transposeW) = instruction.op,
    let x = instruction.operands[0].value, let w = instruction.operands[1].value,
    let a = instruction.operands[2].value, let b = instruction.operands[3].value
  else {
    throw PassError(message: "internal: loraLinearVJP on \(instruction.op.mnemonic)")
  }
  let xa = instruction.results[0]
  let xShape = e.type(x).shape
  let rows = xShape.dropLast().reduce(1, *)
  let (inputs, rank) = (xShape[xShape.count - 1], e.type(a).shape[1])
  let outputs = e.type(b).shape[1]
  func mm(_ lhs: Value, _ rhs: Value, _ ta: Bool, _ tb: Bool, _ e: inout Emitter)
    throws(PassError) -> Value
  {
    try e.emit(.matmul(transposeA: ta, transposeB: tb), [.value(lhs), .value(rhs)])
  }
  var h: Value?
  if let gy = gradients[1] { h = try e.reshape(try e.binary(.mul, gy, scale), [rows, outputs]) }
  var dxa: Value? = try gradients[0].map { g throws(PassError) in try e.reshape(g, [rows, rank]) }
  let xa2 = try e.reshape(xa, [rows, rank])
  var db: Value?
  if let h {
    if wanted[3] { db = try mm(xa2, h, true, false, &e) }
    if wanted[0] || wanted[2] {
      let through = try mm(h, b, false, true, &e)
      dxa =
        try dxa.map { existing throws(PassError) in try e.binary(.add, existing, through) }
        ?? through
    }
  }
  var da: Value?
  if wanted[2], let dxa {
    da = try mm(try e.reshape(x, [rows, inputs]), dxa, true, false, &e)
  }
  var dx: Value?
  if wanted[0] {
    var sum: Value?
    if let gy = gradients[1] {
      // Through the base weight: as stored when W is [out, in] (transpose_w).
      let g2 = try e.reshape(gy, [rows, outputs])
      sum = try mm(g2, w, false, !transposeW, &e)
    }
    if let dxa {
      let through = try mm(dxa, a, false, true, &e)
      sum =
        try sum.map { existing throws(PassError) in try e.binary(.add, existing, through) }
        ?? through
    }
    dx = try sum.map { value throws(PassError) in try e.reshape(value, xShape) }
  }
  if wanted[1] {
    throw PassError(
      message: "autodiff: lora_linear has no gradient for its base weight"
        + (instruction.name.map { " (value \"\($0)\")" } ?? ""))
  }
  return [dx, nil, da, db]
}

extension Emitter {
  /// Spreads a reduction's gradient back over the reduced axes.
  mutating func broadcastBack(
    _ g: Value, keptShape: [Int], to shape: [Int], keepDims: Bool
  ) throws(PassError) -> Value {
    let withOnes = keepDims ? g : try reshape(g, keptShape)
    return try emit(.broadcast(to: shape), [.value(withOnes)])
  }
}
