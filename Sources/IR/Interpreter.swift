import Foundation

/// How the interpreter rounds results.
public enum InterpreterPrecision: Sendable {
  /// Every `f32` result element is rounded to `Float` (a Float value widened to Double).
  case f32
  /// Full `Double` precision throughout, for finite-difference gradient checks.
  case f64
}

/// A failure while interpreting: a missing or mismatched binding, a type error, a bad index.
public struct InterpreterError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// An operand of `Interpreter.evaluate`: a tensor, or a scalar literal.
public enum InterpreterOperand: Sendable {
  case tensor(DenseTensor)
  /// A literal that takes the other operand's dtype (truncated toward zero for `i32`).
  case scalar(Double)
}

/// The reference interpreter: every op in plain Swift, computed in `Double`.
///
/// Obviously correct rather than fast: it is the oracle that kernels, passes and autodiff are
/// tested against. Tensors are row-major.
///
/// - In `f32` precision, `f32` operands, scalar literals and results are rounded to `Float`; sums
///   and dot products accumulate in `Double` and round once, at the end.
/// - `i32` arithmetic is `Int32` arithmetic: `add`, `sub`, `mul` (and `neg`, `abs`, sums) wrap
///   around; `div` truncates toward zero, `x / 0 == 0` and `Int32.min / -1 == Int32.min`.
/// - An `i32` scalar literal is truncated toward zero, then wrapped to the `Int32` range.
/// - Out-of-range `gather`/`scatter_add` indices throw; nothing reads out of bounds.
public struct Interpreter: Sendable {
  public var precision: InterpreterPrecision

  /// An interpreter that rounds as `precision` says.
  public init(precision: InterpreterPrecision = .f32) { self.precision = precision }

  // MARK: - Whole graphs

  /// Runs a graph and returns its outputs in order.
  ///
  /// `bindings` maps input names (`GraphInput.name`) and declaration names (`Declaration.name`)
  /// to values. Parameters and state with an initializer may be left unbound: they then start
  /// from `initializer.values(for:seed:)`. A storage-typed constant (`q4_1[...]`) is bound to an
  /// `f32` tensor of the same shape holding its decoded values.
  /// - Throws: `InterpreterError` for a missing, extra or mismatched binding (naming it, the
  ///   declared and the given type), or a failing instruction (named by index, op and name).
  public func run(_ graph: Graph, bindings: [String: DenseTensor]) throws(InterpreterError)
    -> [DenseTensor]
  {
    var environment = [DenseTensor?](repeating: nil, count: graph.types.count)
    var unused = Set(bindings.keys)

    // Every named slot: its name, its value and the declaration that may give an initial value.
    var slots: [(name: String, value: Value, initial: Declaration?)] = []
    for input in graph.inputs { slots.append((input.name, input.value, nil)) }
    for declaration in graph.declarations {
      let initial = declaration.kind == .constant ? nil : declaration
      slots.append((declaration.name, declaration.value, initial))
    }
    for (name, value, initial) in slots {
      let what = "'\(name)'"
      guard graph.types.indices.contains(value.index) else {
        throw InterpreterError(message: "\(what) is \(value), which has no type in the graph")
      }
      let declared = graph.types[value.index]
      if let problem = declared.problem() {
        throw InterpreterError(message: "\(what): \(problem)")
      }
      // A storage-typed constant is bound to its decoded f32 values.
      let expected = TensorType(declared.dtype.isCompute ? declared.dtype : .f32, declared.shape)
      let shown = expected == declared ? "\(declared)" : "\(declared) (bound as \(expected))"
      guard let given = bindings[name] else {
        guard let initializer = initial?.initializer else {
          throw InterpreterError(message: "no binding for \(what) : \(shown)")
        }
        let seed = initial?.seed ?? 0
        environment[value.index] = round(initializer.values(for: declared, seed: seed))
        continue
      }
      unused.remove(name)
      guard given.type == expected else {
        throw InterpreterError(
          message: "\(what) is declared \(shown), but its binding is \(given.type)")
      }
      if let problem = problem(in: given) {
        throw InterpreterError(message: "the binding of \(what) \(problem)")
      }
      environment[value.index] = round(given)
    }
    if let extra = unused.sorted().first {
      throw InterpreterError(message: "binding '\(extra)' matches no input or declaration")
    }

    for (index, instruction) in graph.body.enumerated() {
      let label =
        "instruction \(index) (\(instruction.op.mnemonic)"
        + (instruction.name.map { " \"\($0)\"" } ?? "") + ")"
      var operands: [InterpreterOperand] = []
      for operand in instruction.operands {
        switch operand {
        case .scalar(let scalar):
          operands.append(.scalar(scalar))
        case .value(let value):
          guard environment.indices.contains(value.index), let tensor = environment[value.index]
          else {
            throw InterpreterError(message: "\(label): operand \(value) is undefined")
          }
          operands.append(.tensor(tensor))
        }
      }
      let results: [DenseTensor]
      do {
        results = try evaluate(instruction.op, operands)
      } catch {
        throw InterpreterError(message: "\(label): \(error.message)")
      }
      guard instruction.results.count == results.count else {
        throw InterpreterError(
          message: "\(label): has \(instruction.results.count) results, the op gives "
            + "\(results.count)")
      }
      for (value, result) in zip(instruction.results, results) {
        guard environment.indices.contains(value.index) else {
          throw InterpreterError(message: "\(label): result \(value) has no type in the graph")
        }
        guard graph.types[value.index] == result.type else {
          throw InterpreterError(
            message: "\(label): result \(value) is declared \(graph.types[value.index]), but "
              + "the op gives \(result.type)")
        }
        environment[value.index] = result
      }
    }

    var outputs: [DenseTensor] = []
    for (position, output) in graph.outputs.enumerated() {
      guard environment.indices.contains(output.index), let value = environment[output.index]
      else {
        throw InterpreterError(message: "output \(position) (\(output)) is undefined")
      }
      outputs.append(value)
    }
    return outputs
  }

  // MARK: - One op

  /// Evaluates one op on operand values, after checking its type rule.
  ///
  /// - Throws: `InterpreterError` carrying the `TypeError` description when the operand types do
  ///   not fit the op, or naming the op when an operand is malformed (element count, non-integral
  ///   `i32` element) or an index is out of range.
  public func evaluate(_ op: Op, _ operands: [InterpreterOperand]) throws(InterpreterError)
    -> [DenseTensor]
  {
    let operandTypes = operands.map { operand -> OperandType in
      switch operand {
      case .tensor(let tensor): .tensor(tensor.type)
      case .scalar: .scalar
      }
    }
    let resultTypes: [TensorType]
    do {
      resultTypes = try op.resultTypes(operandTypes)
    } catch {
      throw InterpreterError(message: error.description)
    }
    guard let resultType = resultTypes.first, resultTypes.count == 1 || op.isFused else {
      throw InterpreterError(message: "\(op.mnemonic): expected one result type")
    }
    // The type rule has checked every shape, so element counts cannot overflow.
    for (position, operand) in operands.enumerated() {
      if case .tensor(let tensor) = operand, let problem = problem(in: tensor) {
        throw InterpreterError(message: "\(op.mnemonic): operand \(position + 1) \(problem)")
      }
    }
    // A scalar literal takes the dtype of the tensor it is paired with.
    var scalarDType = DType.f32
    let pairedPositions = op == .select ? [1, 2] : [0, 1]
    for position in pairedPositions.reversed() where position < operands.count {
      if case .tensor(let tensor) = operands[position] { scalarDType = tensor.dtype }
    }
    let inputs: [DenseTensor] = operands.map { operand in
      switch operand {
      case .tensor(let tensor):
        return round(tensor)
      case .scalar(let scalar):
        let value = scalarDType == .i32 ? wrapInt32(scalar.rounded(.towardZero)) : scalar
        return round(DenseTensor(dtype: scalarDType, shape: [], scalars: [value]))
      }
    }
    // `elementwise` is computed node by node, as the primitives it replaces.
    if op.isFused, !op.isElementwise { return try fused(op, inputs, resultTypes).map(round) }
    return [round(try compute(op, inputs, resultType))]
  }

  /// Computes an op whose operand types passed its type rule, producing a tensor of `type`.
  private func compute(_ op: Op, _ x: [DenseTensor], _ type: TensorType) throws(InterpreterError)
    -> DenseTensor
  {
    func fail(_ message: String) -> InterpreterError {
      InterpreterError(message: "\(op.mnemonic): \(message)")
    }
    let shape = type.shape
    let count = type.elementCount
    let outStrides = strides(shape)
    let integer = type.dtype == .i32
    var out = [Double](repeating: 0, count: count)

    switch op {
    case .unary(let function):
      out = x[0].scalars.map { unary(function, $0, integer: integer) }

    case .binary(let function):
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let a = x[0].scalars[broadcastOffset(index, x[0].shape)]
        let b = x[1].scalars[broadcastOffset(index, x[1].shape)]
        out[flat] = integer ? integerBinary(function, a, b) : binary(function, a, b)
      }

    case .compare(let comparison):
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let a = x[0].scalars[broadcastOffset(index, x[0].shape)]
        let b = x[1].scalars[broadcastOffset(index, x[1].shape)]
        // IEEE comparisons: NaN compares false with everything, except for `ne`.
        let holds: Bool
        switch comparison {
        case .eq: holds = a == b
        case .ne: holds = a != b
        case .lt: holds = a < b
        case .le: holds = a <= b
        case .gt: holds = a > b
        case .ge: holds = a >= b
        }
        out[flat] = holds ? 1 : 0
      }

    case .select:
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let condition = x[0].scalars[broadcastOffset(index, x[0].shape)]
        let branch = condition != 0 ? x[1] : x[2]
        out[flat] = branch.scalars[broadcastOffset(index, branch.shape)]
      }

    case .reduce(let function, let axes, _):
      // Each input element goes to its index with the reduced axes dropped (keepDims only adds
      // size-1 dimensions, which do not move flat positions).
      let input = x[0]
      let inputStrides = strides(input.shape)
      let keptAxes = input.shape.indices.filter { !axes.contains($0) }
      let keptStrides = strides(keptAxes.map { input.shape[$0] })
      var seen = [Bool](repeating: false, count: count)
      for flat in 0..<input.elementCount {
        let index = unravel(flat, inputStrides)
        let target = offset(keptAxes.map { index[$0] }, keptStrides)
        let value = input.scalars[flat]
        switch function {
        case .sum, .mean:
          out[target] += value
        case .max:
          // NaN propagates: once the running maximum is NaN, `value > NaN` never replaces it.
          if !seen[target] || value.isNaN || value > out[target] { out[target] = value }
        }
        seen[target] = true
      }
      if function == .mean {
        let reduced = Double(axes.map { input.shape[$0] }.reduce(1, *))
        out = out.map { $0 / reduced }
      }
      if integer { out = out.map(wrapInt32) }

    case .matmul(let transposeA, let transposeB):
      let (a, b) = (x[0], x[1])
      let (m, n) = (shape[shape.count - 2], shape[shape.count - 1])
      let k = transposeA ? a.shape[a.shape.count - 2] : a.shape[a.shape.count - 1]
      let batchShape = Array(shape.dropLast(2))
      let batchStrides = strides(batchShape)
      for batch in 0..<batchShape.reduce(1, *) {
        let batchIndex = unravel(batch, batchStrides)
        let aBase = broadcastOffset(batchIndex, Array(a.shape.dropLast(2))) * m * k
        let bBase = broadcastOffset(batchIndex, Array(b.shape.dropLast(2))) * k * n
        for i in 0..<m {
          for j in 0..<n {
            var sum = 0.0
            for p in 0..<k {
              // A[i, p] is stored at [p, i] when transposed; B[p, j] at [j, p].
              let aValue = a.scalars[aBase + (transposeA ? p * m + i : i * k + p)]
              let bValue = b.scalars[bBase + (transposeB ? j * k + p : p * n + j)]
              sum += aValue * bValue
            }
            out[(batch * m + i) * n + j] = sum
          }
        }
      }

    case .reshape:
      out = x[0].scalars

    case .transpose(let permutation):
      let inputStrides = strides(x[0].shape)
      let permutedStrides = permutation.map { inputStrides[$0] }
      for flat in 0..<count {
        out[flat] = x[0].scalars[offset(unravel(flat, outStrides), permutedStrides)]
      }

    case .broadcast:
      for flat in 0..<count {
        out[flat] = x[0].scalars[broadcastOffset(unravel(flat, outStrides), x[0].shape)]
      }

    case .slice(let start, _):
      let inputStrides = strides(x[0].shape)
      for flat in 0..<count {
        let index = zip(unravel(flat, outStrides), start).map { $0 + $1 }
        out[flat] = x[0].scalars[offset(index, inputStrides)]
      }

    case .concat(let axis):
      // Position `p` along `axis` belongs to the last part that starts at or before it.
      var starts: [Int] = []
      var total = 0
      for part in x {
        starts.append(total)
        total += part.shape[axis]
      }
      for flat in 0..<count {
        var index = unravel(flat, outStrides)
        let part = starts.lastIndex { $0 <= index[axis] } ?? 0
        index[axis] -= starts[part]
        out[flat] = x[part].scalars[offset(index, strides(x[part].shape))]
      }

    case .gather(let axis):
      let (table, indices) = (x[0], x[1])
      try checkIndices(indices, bound: table.shape[axis], fail)
      let tableStrides = strides(table.shape)
      let indexStrides = strides(indices.shape)
      let indexRank = indices.shape.count
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let row = Int(
          indices.scalars[offset(Array(index[axis..<(axis + indexRank)]), indexStrides)])
        let source = Array(index[..<axis]) + [row] + Array(index[(axis + indexRank)...])
        out[flat] = table.scalars[offset(source, tableStrides)]
      }

    case .scatterAdd(let axis):
      let (target, indices, updates) = (x[0], x[1], x[2])
      try checkIndices(indices, bound: target.shape[axis], fail)
      let indexStrides = strides(indices.shape)
      let updateStrides = strides(updates.shape)
      let indexRank = indices.shape.count
      out = target.scalars
      for flat in 0..<updates.elementCount {
        let index = unravel(flat, updateStrides)
        let row = Int(
          indices.scalars[offset(Array(index[axis..<(axis + indexRank)]), indexStrides)])
        let destination = Array(index[..<axis]) + [row] + Array(index[(axis + indexRank)...])
        out[offset(destination, outStrides)] += updates.scalars[flat]
      }
      if integer { out = out.map(wrapInt32) }

    case .cast(let dtype):
      let fromFloat = x[0].dtype != .i32
      out = x[0].scalars.map { value in
        guard dtype == .i32, fromFloat else { return value }
        // f32 -> i32: truncate toward zero, clamp to the Int32 range, NaN -> 0.
        if value.isNaN { return 0 }
        return Swift.min(
          Swift.max(value.rounded(.towardZero), Double(Int32.min)), Double(Int32.max))
      }

    case .iota(let axis, _):
      for flat in 0..<count { out[flat] = Double(unravel(flat, outStrides)[axis]) }

    case .fill(let value, _):
      out = [Double](
        repeating: integer ? wrapInt32(value.rounded(.towardZero)) : value, count: count)

    case .softmax(let axis), .logSoftmax(let axis):
      let input = x[0]
      let length = shape[axis]
      let inner = shape[(axis + 1)...].reduce(1, *)
      let outer = shape[..<axis].reduce(1, *)
      let isLog = op == .logSoftmax(axis: axis)
      for o in 0..<outer {
        for i in 0..<inner {
          let positions = (0..<length).map { (o * length + $0) * inner + i }
          // Subtracting the maximum keeps every exp(...) <= 1 (NaN anywhere gives NaN).
          let maximum = positions.map { input.scalars[$0] }.max() ?? 0
          let sum = positions.map { Foundation.exp(input.scalars[$0] - maximum) }.reduce(0, +)
          for position in positions {
            let shifted = input.scalars[position] - maximum
            out[position] = isLog ? shifted - Foundation.log(sum) : Foundation.exp(shifted) / sum
          }
        }
      }

    case .rope(let theta, let interleaved):
      let (input, positions) = (x[0], x[1])
      let dim = shape[shape.count - 1]
      let heads = shape[shape.count - 2]
      out = input.scalars
      for (p, position) in positions.scalars.enumerated() {
        for k in 0..<(dim / 2) {
          let angle = position * Foundation.pow(theta, -2.0 * Double(k) / Double(dim))
          let (c, s) = (Foundation.cos(angle), Foundation.sin(angle))
          let (first, second) = interleaved ? (2 * k, 2 * k + 1) : (k, k + dim / 2)
          for head in 0..<heads {
            let base = (p * heads + head) * dim
            let (a, b) = (input.scalars[base + first], input.scalars[base + second])
            out[base + first] = a * c - b * s
            out[base + second] = a * s + b * c
          }
        }
      }

    case .dynamicSlice(let sizes):
      let input = x[0]
      let start = clampedStarts(x[1].scalars, sizes: sizes, in: input.shape)
      let inputStrides = strides(input.shape)
      for flat in 0..<count {
        let index = zip(unravel(flat, outStrides), start).map { $0 + $1 }
        out[flat] = input.scalars[offset(index, inputStrides)]
      }

    case .dynamicUpdateSlice:
      let (input, update) = (x[0], x[1])
      let start = clampedStarts(x[2].scalars, sizes: update.shape, in: input.shape)
      let updateStrides = strides(update.shape)
      out = input.scalars
      for flat in 0..<update.elementCount {
        let index = zip(unravel(flat, updateStrides), start).map { $0 + $1 }
        out[offset(index, outStrides)] = update.scalars[flat]
      }

    case .elementwise(let expression):
      let round: (Double) -> Double =
        precision == .f32 ? { Double(Float($0)) } : { $0 }
      for flat in 0..<count {
        out[flat] = expression.evaluate(
          { x[$0].scalars[flat] }, unary: { unary($0, $1, integer: false) },
          binary: { binary($0, $1, $2) }, round: round)
      }

    case .rmsNorm, .rmsNormGrad, .swiglu, .swigluGrad, .crossEntropy, .crossEntropyGrad,
      .loraLinear, .attention, .attentionGrad:
      return try fused(op, x, [type])[0]
    }
    return DenseTensor(dtype: type.dtype, shape: shape, scalars: out)
  }

  // MARK: - Scalar functions

  private func unary(_ function: UnaryOp, _ x: Double, integer: Bool) -> Double {
    switch function {
    case .neg: return integer ? wrapInt32(-x) : -x
    case .abs: return integer ? wrapInt32(Swift.abs(x)) : Swift.abs(x)
    case .exp: return Foundation.exp(x)
    case .log: return Foundation.log(x)
    case .sqrt: return x.squareRoot()
    case .rsqrt: return 1 / x.squareRoot()
    case .reciprocal: return 1 / x
    case .tanh: return Foundation.tanh(x)
    case .sigmoid: return 1 / (1 + Foundation.exp(-x))
    case .relu: return x > 0 ? x : 0
    case .silu: return x / (1 + Foundation.exp(-x))
    case .sin: return Foundation.sin(x)
    case .cos: return Foundation.cos(x)
    }
  }

  private func binary(_ function: BinaryOp, _ a: Double, _ b: Double) -> Double {
    switch function {
    case .add: a + b
    case .sub: a - b
    case .mul: a * b
    case .div: a / b
    // NaN on either side gives NaN.
    case .max: a.isNaN || a > b ? a : b
    case .min: a.isNaN || a < b ? a : b
    case .pow: Foundation.pow(a, b)
    }
  }

  /// `Int32` arithmetic on validated `i32` elements.
  private func integerBinary(_ function: BinaryOp, _ a: Double, _ b: Double) -> Double {
    let (x, y) = (Int32(a), Int32(b))
    switch function {
    case .add: return Double(x &+ y)
    case .sub: return Double(x &- y)
    case .mul: return Double(x &* y)
    case .div:
      if y == 0 { return 0 }
      if x == .min && y == -1 { return Double(Int32.min) }
      return Double(x / y)
    case .max: return Double(Swift.max(x, y))
    case .min: return Double(Swift.min(x, y))
    case .pow: return 0  // The type rule accepts only f32.
    }
  }

  // MARK: - Rounding and checks

  /// The tensor with its elements rounded to `Float` when it is `f32` in `f32` precision.
  private func round(_ tensor: DenseTensor) -> DenseTensor {
    guard precision == .f32, tensor.dtype == .f32 else { return tensor }
    var rounded = tensor
    rounded.scalars = tensor.scalars.map { Double(Float($0)) }
    return rounded
  }
}

/// What is wrong with a tensor whose type is valid: an element count that does not match the
/// shape, or an `i32` element that is not an integer in the `Int32` range; nil when nothing is.
private func problem(in tensor: DenseTensor) -> String? {
  if tensor.scalars.count != tensor.type.elementCount {
    return "has \(tensor.scalars.count) elements for type \(tensor.type)"
  }
  if tensor.dtype == .i32 {
    for (position, value) in tensor.scalars.enumerated()
    where
      !(value.rounded(.towardZero) == value && value >= -2_147_483_648
      && value <= 2_147_483_647)
    {
      return "holds \(value) at position \(position), which is not an i32"
    }
  }
  return nil
}

/// Throws unless every index lies in `0..<bound`.
private func checkIndices(
  _ indices: DenseTensor, bound: Int, _ fail: (String) -> InterpreterError
) throws(InterpreterError) {
  for (position, value) in indices.scalars.enumerated() where value < 0 || value >= Double(bound) {
    throw fail("index \(Int(value)) at position \(position) is out of range 0..<\(bound)")
  }
}

/// An integral value wrapped to the `Int32` range (two's complement); non-finite values give 0.
private func wrapInt32(_ value: Double) -> Double {
  guard value.isFinite else { return 0 }
  // The remainder is exact and lies in (-2^32, 2^32), so it converts to Int64 exactly.
  let reduced = value.rounded(.towardZero).truncatingRemainder(dividingBy: 4_294_967_296)
  return Double(Int32(truncatingIfNeeded: Int64(reduced)))
}

// MARK: - Row-major indexing

/// Row-major strides of a shape.
private func strides(_ shape: [Int]) -> [Int] {
  var result = [Int](repeating: 1, count: shape.count)
  var product = 1
  for axis in shape.indices.reversed() {
    result[axis] = product
    product *= shape[axis]
  }
  return result
}

/// The multi-index of a flat position, given the row-major strides of the shape.
private func unravel(_ flat: Int, _ strides: [Int]) -> [Int] {
  var rest = flat
  return strides.map { stride in
    defer { rest %= stride }
    return rest / stride
  }
}

/// The flat position of a multi-index, given strides.
private func offset(_ index: [Int], _ strides: [Int]) -> Int {
  zip(index, strides).reduce(0) { $0 + $1.0 * $1.1 }
}

/// The flat position in a tensor of `shape` that numpy broadcasting reads for `index` of the
/// (right-aligned, possibly higher-rank) broadcast shape.
private func broadcastOffset(_ index: [Int], _ shape: [Int]) -> Int {
  let skipped = index.count - shape.count
  var flat = 0
  for axis in shape.indices {
    flat = flat * shape[axis] + (shape[axis] == 1 ? 0 : index[skipped + axis])
  }
  return flat
}

/// Starts clamped to `0...dim - size` on every axis (XLA's `dynamic_slice` semantics).
private func clampedStarts(_ starts: [Double], sizes: [Int], in shape: [Int]) -> [Int] {
  shape.indices.map { Swift.min(Swift.max(Int(starts[$0]), 0), shape[$0] - sizes[$0]) }
}

// MARK: - Fused ops

extension Interpreter {
  /// Computes a fused op from its definition (not from the primitives it replaces), row by row in
  /// `Double`, producing tensors of `types`.
  fileprivate func fused(_ op: Op, _ x: [DenseTensor], _ types: [TensorType])
    throws(InterpreterError) -> [DenseTensor]
  {
    func tensor(_ type: TensorType, _ scalars: [Double]) -> DenseTensor {
      DenseTensor(dtype: type.dtype, shape: type.shape, scalars: scalars)
    }
    switch op {
    case .rmsNorm(let epsilon), .rmsNormGrad(let epsilon):
      let (input, scale) = (x[0].scalars, x[1].scalars)
      let width = scale.count
      var out = [Double](repeating: 0, count: input.count)
      for row in 0..<(input.count / max(width, 1)) {
        let values = input[(row * width)..<((row + 1) * width)]
        let meanSquare = values.reduce(0) { $0 + $1 * $1 } / Double(width)
        let r = 1 / (meanSquare + epsilon).squareRoot()
        if case .rmsNorm = op {
          for j in 0..<width { out[row * width + j] = input[row * width + j] * r * scale[j] }
          continue
        }
        // d/dx_j = r g_j w_j - x_j r^3 mean(g w x).
        let g = x[2].scalars
        var projection = 0.0
        for j in 0..<width {
          projection += g[row * width + j] * scale[j] * input[row * width + j]
        }
        projection /= Double(width)
        for j in 0..<width {
          let index = row * width + j
          out[index] = r * g[index] * scale[j] - input[index] * r * r * r * projection
        }
      }
      return [tensor(types[0], out)]

    case .swiglu, .swigluGrad:
      let (gate, up) = (x[0].scalars, x[1].scalars)
      let sigmoid = gate.map { 1 / (1 + Foundation.exp(-$0)) }
      if case .swiglu = op {
        return [tensor(types[0], gate.indices.map { gate[$0] * sigmoid[$0] * up[$0] })]
      }
      let g = x[2].scalars
      // d silu(a)/da = s (1 + a (1 - s)).
      let dGate = gate.indices.map { i in
        g[i] * up[i] * sigmoid[i] * (1 + gate[i] * (1 - sigmoid[i]))
      }
      let dUp = gate.indices.map { g[$0] * gate[$0] * sigmoid[$0] }
      return [tensor(types[0], dGate), tensor(types[1], dUp)]

    case .crossEntropy, .crossEntropyGrad:
      let (logits, targets) = (x[0].scalars, x[1].scalars)
      let width = x[0].shape.last ?? 1
      let rows = targets.count
      var out = [Double](repeating: 0, count: op == .crossEntropy ? rows : logits.count)
      for row in 0..<rows {
        let target = Int(targets[row])
        guard target >= 0, target < width else { continue }
        let values = logits[(row * width)..<((row + 1) * width)]
        let maximum = values.max() ?? 0
        let sum = values.reduce(0) { $0 + Foundation.exp($1 - maximum) }
        if op == .crossEntropy {
          out[row] = maximum + Foundation.log(sum) - logits[row * width + target]
          continue
        }
        let g = x[2].scalars[row]
        for j in 0..<width {
          let p = Foundation.exp(logits[row * width + j] - maximum) / sum
          out[row * width + j] = g * (p - (j == target ? 1 : 0))
        }
      }
      return [tensor(types[0], out)]

    case .loraLinear(let scale, let transposeW):
      let (xa, y) = (types[0], types[1])
      let base = try compute(
        .matmul(transposeA: false, transposeB: transposeW), [x[0], x[1]], y)
      let down = try compute(.matmul(transposeA: false, transposeB: false), [x[0], x[2]], xa)
      let up = try compute(
        .matmul(transposeA: false, transposeB: false), [round(down), x[3]], y)
      let sum = zip(base.scalars, up.scalars).map { $0 + scale * $1 }
      return [down, tensor(y, sum)]

    case .attention(let scale), .attentionGrad(let scale):
      return attention(scale: scale, x, types, gradient: op == .attentionGrad(scale: scale))

    default:
      throw InterpreterError(message: "\(op.mnemonic) is not a fused op")
    }
  }
}

extension Interpreter {
  /// `attention` (or, with `gradient`, `attention_grad`) from its definition, one query row at a
  /// time: `p = softmax(mask ? scale q.k : -inf)`, `out = p v`; for the gradient with `dp = g.v`,
  /// `ds = p (dp - sum(p dp))`: `dq = scale ds k`, `dk += scale ds q`, `dv += p g`.
  fileprivate func attention(
    scale: Double, _ x: [DenseTensor], _ types: [TensorType], gradient: Bool
  ) -> [DenseTensor] {
    let (q, k, v, mask) = (x[0], x[1], x[2], x[3])
    let (batch, heads, rows, width) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
    let (groups, keys) = (k.shape[1], k.shape[2])
    let perGroup = heads / groups
    var out = [Double](repeating: 0, count: q.elementCount)
    var dk = [Double](repeating: 0, count: gradient ? k.elementCount : 0)
    var dv = dk
    for b in 0..<batch {
      for h in 0..<heads {
        let group = h / perGroup
        for s in 0..<rows {
          let qBase = ((b * heads + h) * rows + s) * width
          var scores = [Double](repeating: -.infinity, count: keys)
          for t in 0..<keys where mask.scalars[broadcastOffset([b, h, s, t], mask.shape)] != 0 {
            let kBase = ((b * groups + group) * keys + t) * width
            var dot = 0.0
            for d in 0..<width { dot += q.scalars[qBase + d] * k.scalars[kBase + d] }
            scores[t] = scale * dot
          }
          let maximum = scores.max() ?? -.infinity
          // No visible key: the row stays 0 (and so do its gradients).
          guard maximum > -.infinity else { continue }
          let weights = scores.map { Foundation.exp($0 - maximum) }
          let total = weights.reduce(0, +)
          let p = weights.map { $0 / total }
          if !gradient {
            for t in 0..<keys where p[t] != 0 {
              let vBase = ((b * groups + group) * keys + t) * width
              for d in 0..<width { out[qBase + d] += p[t] * v.scalars[vBase + d] }
            }
            continue
          }
          let g = x[4].scalars
          var dp = [Double](repeating: 0, count: keys)
          for t in 0..<keys {
            let vBase = ((b * groups + group) * keys + t) * width
            for d in 0..<width {
              dp[t] += g[qBase + d] * v.scalars[vBase + d]
              dv[vBase + d] += p[t] * g[qBase + d]
            }
          }
          let projection = zip(p, dp).map(*).reduce(0, +)
          for t in 0..<keys where p[t] != 0 {
            let ds = p[t] * (dp[t] - projection) * scale
            let kBase = ((b * groups + group) * keys + t) * width
            for d in 0..<width {
              out[qBase + d] += ds * k.scalars[kBase + d]
              dk[kBase + d] += ds * q.scalars[qBase + d]
            }
          }
        }
      }
    }
    let first = DenseTensor(dtype: .f32, shape: types[0].shape, scalars: out)
    if !gradient { return [first] }
    return [
      first, DenseTensor(dtype: .f32, shape: types[1].shape, scalars: dk),
      DenseTensor(dtype: .f32, shape: types[2].shape, scalars: dv),
    ]
  }
}
