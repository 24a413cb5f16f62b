import Foundation

/// How the interpreter rounds results.
public enum Precision: Sendable {
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
  case scalar(Double)
}

/// The reference interpreter: every op in plain Swift, computed in `Double`.
///
/// Obviously correct rather than fast: it is the oracle that kernels, passes and autodiff are
/// tested against.
///
/// Sums and dot products accumulate in `Double` and round once. `i32` arithmetic wraps; integer
/// division truncates toward zero and `x / 0 == 0`.
public struct Interpreter: Sendable {
  public var precision: Precision

  public init(precision: Precision = .f32) { self.precision = precision }

  // MARK: - Whole graphs

  /// Runs a graph; `bindings` maps input and declaration names to values.
  ///
  /// Parameters and state with an initializer may be left unbound: they then start from their
  /// seeded initial values. A storage-typed constant is bound to its decoded `f32` values.
  /// - Throws: `InterpreterError` for a missing, extra or mismatched binding, or a failing
  ///   instruction (named by index, op and name).
  public func run(_ graph: Graph, bindings: [String: DenseTensor]) throws(InterpreterError)
    -> [DenseTensor]
  {
    var environment = [DenseTensor?](repeating: nil, count: graph.types.count)
    var unused = Set(bindings.keys)
    func bind(_ name: String, _ value: Value, initializer: Initializer?, seed: UInt64?)
      throws(InterpreterError)
    {
      let declared = graph.type(of: value)
      guard let given = bindings[name] else {
        if let initializer {
          environment[value.index] = round(initializer.values(for: declared, seed: seed ?? 0))
          return
        }
        throw InterpreterError(message: "no binding for '\(name)' : \(declared)")
      }
      unused.remove(name)
      let expectedDType: DType = declared.dtype.isCompute ? declared.dtype : .f32
      guard given.shape == declared.shape, given.dtype == expectedDType else {
        throw InterpreterError(
          message: "'\(name)' is declared \(declared), but its binding is \(given.type)")
      }
      environment[value.index] = round(given)
    }
    for input in graph.inputs {
      try bind(input.name, input.value, initializer: nil, seed: nil)
    }
    for declaration in graph.declarations {
      try bind(
        declaration.name, declaration.value,
        initializer: declaration.kind == .constant ? nil : declaration.initializer,
        seed: declaration.seed)
    }
    if let extra = unused.sorted().first {
      throw InterpreterError(message: "binding '\(extra)' matches no input or declaration")
    }
    for (index, instruction) in graph.body.enumerated() {
      var operands: [InterpreterOperand] = []
      for operand in instruction.operands {
        switch operand {
        case .scalar(let scalar): operands.append(.scalar(scalar))
        case .value(let value):
          guard value.index >= 0, value.index < environment.count,
            let tensor = environment[value.index]
          else {
            throw InterpreterError(message: "instruction \(index): operand \(value) is undefined")
          }
          operands.append(.tensor(tensor))
        }
      }
      let results: [DenseTensor]
      do {
        results = try evaluate(instruction.op, operands)
      } catch {
        let name = instruction.name.map { " \"\($0)\"" } ?? ""
        throw InterpreterError(
          message: "instruction \(index) (\(instruction.op.mnemonic)\(name)): \(error.message)")
      }
      for (result, value) in zip(instruction.results, results) { environment[result.index] = value }
    }
    var outputs: [DenseTensor] = []
    for output in graph.outputs {
      guard let value = environment[output.index] else {
        throw InterpreterError(message: "output \(output) is undefined")
      }
      outputs.append(value)
    }
    return outputs
  }

  // MARK: - One op

  /// Evaluates one op on operand values, after checking its type rule.
  public func evaluate(_ op: Op, _ operands: [InterpreterOperand]) throws(InterpreterError)
    -> [DenseTensor]
  {
    let operandTypes = operands.map { operand -> OperandType in
      switch operand {
      case .tensor(let tensor): .tensor(tensor.type)
      case .scalar: .scalar
      }
    }
    let resultType: TensorType
    do {
      resultType = try op.resultTypes(operandTypes)[0]
    } catch {
      throw InterpreterError(message: error.description)
    }
    // Scalars become rank-0 tensors of the dtype the type rule gave them.
    let scalarDType: DType = {
      let positions: [Int] = op == .select ? [1, 2] : [0, 1]
      for position in positions where position < operands.count {
        if case .tensor(let tensor) = operands[position] { return tensor.dtype }
      }
      return .f32
    }()
    let x: [DenseTensor] = operands.map { operand in
      switch operand {
      case .tensor(let tensor): tensor
      case .scalar(let scalar):
        DenseTensor(
          dtype: scalarDType, shape: [],
          scalars: [scalarDType == .i32 ? wrapInt32(scalar.rounded(.towardZero)) : scalar])
      }
    }.map(round)
    let result = try compute(op, x, resultType)
    return [round(result)]
  }

  private func compute(_ op: Op, _ x: [DenseTensor], _ type: TensorType) throws(InterpreterError)
    -> DenseTensor
  {
    let count = type.elementCount
    var out = [Double](repeating: 0, count: count)
    let outShape = type.shape
    let outStrides = strides(outShape)

    switch op {
    case .unary(let function):
      out = x[0].scalars.map { unary(function, $0, integer: type.dtype == .i32) }

    case .binary(let function):
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let a = x[0].scalars[broadcastFlat(index, x[0].shape)]
        let b = x[1].scalars[broadcastFlat(index, x[1].shape)]
        out[flat] = type.dtype == .i32 ? integerBinary(function, a, b) : binary(function, a, b)
      }

    case .compare(let comparison):
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let a = x[0].scalars[broadcastFlat(index, x[0].shape)]
        let b = x[1].scalars[broadcastFlat(index, x[1].shape)]
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
        let condition = x[0].scalars[broadcastFlat(index, x[0].shape)]
        let branch = condition != 0 ? x[1] : x[2]
        out[flat] = branch.scalars[broadcastFlat(index, branch.shape)]
      }

    case .reduce(let function, let axes, _):
      // Accumulate every input element into the output position with the reduced axes dropped.
      let input = x[0]
      let inputStrides = strides(input.shape)
      let keptShape = input.shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
      let keptStrides = strides(keptShape)
      var seen = [Bool](repeating: false, count: count)
      for flat in 0..<input.elementCount {
        let index = unravel(flat, inputStrides)
        let kept = index.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
        let target = zip(kept, keptStrides).map { $0 * $1 }.reduce(0, +)
        let value = input.scalars[flat]
        switch function {
        case .sum, .mean: out[target] += value
        case .max:
          if !seen[target] || value > out[target] || value.isNaN { out[target] = value }
          if out[target].isNaN { out[target] = .nan }
        }
        seen[target] = true
      }
      if function == .mean {
        let n = Double(axes.map { input.shape[$0] }.reduce(1, *))
        out = out.map { $0 / n }
      }
      if type.dtype == .i32 { out = out.map(wrapInt32) }

    case .matmul(let transposeA, let transposeB):
      let (a, w) = (x[0], x[1])
      let (m, n) = (outShape[outShape.count - 2], outShape[outShape.count - 1])
      let k = transposeA ? a.shape[a.shape.count - 2] : a.shape[a.shape.count - 1]
      let batchShape = Array(outShape.dropLast(2))
      let batchStrides = strides(batchShape)
      let batches = batchShape.reduce(1, *)
      for batch in 0..<batches {
        let batchIndex = unravel(batch, batchStrides)
        let aBase =
          broadcastFlat(batchIndex, Array(a.shape.dropLast(2))) * a.shape.suffix(2).reduce(1, *)
        let wBase =
          broadcastFlat(batchIndex, Array(w.shape.dropLast(2))) * w.shape.suffix(2).reduce(1, *)
        for i in 0..<m {
          for j in 0..<n {
            var sum = 0.0
            for p in 0..<k {
              let av = a.scalars[aBase + (transposeA ? p * m + i : i * k + p)]
              let wv = w.scalars[wBase + (transposeB ? j * k + p : p * n + j)]
              sum += av * wv
            }
            out[batch * m * n + i * n + j] = sum
          }
        }
      }

    case .reshape:
      out = x[0].scalars

    case .transpose(let permutation):
      let inputStrides = strides(x[0].shape)
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        var source = 0
        for (k, axis) in permutation.enumerated() { source += index[k] * inputStrides[axis] }
        out[flat] = x[0].scalars[source]
      }

    case .broadcast:
      for flat in 0..<count {
        out[flat] = x[0].scalars[broadcastFlat(unravel(flat, outStrides), x[0].shape)]
      }

    case .slice(let start, _):
      let inputStrides = strides(x[0].shape)
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        out[flat] = x[0].scalars[zip(zip(index, start).map(+), inputStrides).map(*).reduce(0, +)]
      }

    case .concat(let axis):
      var offsets: [Int] = []
      var total = 0
      for tensor in x {
        offsets.append(total)
        total += tensor.shape[axis]
      }
      for flat in 0..<count {
        var index = unravel(flat, outStrides)
        let position = index[axis]
        let part = offsets.lastIndex { $0 <= position } ?? 0
        index[axis] = position - offsets[part]
        out[flat] = x[part].scalars[zip(index, strides(x[part].shape)).map(*).reduce(0, +)]
      }

    case .gather(let axis):
      let (table, indices) = (x[0], x[1])
      let tableStrides = strides(table.shape)
      let indexStrides = strides(indices.shape)
      let rows = table.shape[axis]
      for (position, value) in indices.scalars.enumerated() where value < 0 || value >= Double(rows)
      {
        throw InterpreterError(
          message: "index \(Int(value)) at position \(position) is out of range 0..<\(rows)")
      }
      for flat in 0..<count {
        let index = unravel(flat, outStrides)
        let indexPart = Array(index[axis..<(axis + indices.shape.count)])
        let row = Int(indices.scalars[zip(indexPart, indexStrides).map(*).reduce(0, +)])
        let source = Array(index[..<axis]) + [row] + Array(index[(axis + indices.shape.count)...])
        out[flat] = table.scalars[zip(source, tableStrides).map(*).reduce(0, +)]
      }

    case .scatterAdd(let axis):
      let (target, indices, updates) = (x[0], x[1], x[2])
      let indexStrides = strides(indices.shape)
      let rows = target.shape[axis]
      for (position, value) in indices.scalars.enumerated() where value < 0 || value >= Double(rows)
      {
        throw InterpreterError(
          message: "index \(Int(value)) at position \(position) is out of range 0..<\(rows)")
      }
      out = target.scalars
      let updateStrides = strides(updates.shape)
      for flat in 0..<updates.elementCount {
        let index = unravel(flat, updateStrides)
        let indexPart = Array(index[axis..<(axis + indices.shape.count)])
        let row = Int(indices.scalars[zip(indexPart, indexStrides).map(*).reduce(0, +)])
        let destination =
          Array(index[..<axis]) + [row] + Array(index[(axis + indices.shape.count)...])
        out[zip(destination, outStrides).map(*).reduce(0, +)] += updates.scalars[flat]
      }

    case .cast(let dtype):
      out = x[0].scalars.map { value in
        guard dtype == .i32, x[0].dtype != .i32 else { return value }
        if value.isNaN { return 0 }
        return min(max(value.rounded(.towardZero), Double(Int32.min)), Double(Int32.max))
      }

    case .iota(let axis, _):
      for flat in 0..<count { out[flat] = Double(unravel(flat, outStrides)[axis]) }

    case .fill(let value, _):
      out = [Double](
        repeating: type.dtype == .i32 ? wrapInt32(value.rounded(.towardZero)) : value, count: count)

    case .softmax(let axis), .logSoftmax(let axis):
      let input = x[0]
      let n = outShape[axis]
      let inner = outShape[(axis + 1)...].reduce(1, *)
      let outer = outShape[..<axis].reduce(1, *)
      for o in 0..<outer {
        for j in 0..<inner {
          let positions = (0..<n).map { o * n * inner + $0 * inner + j }
          let maximum = positions.map { input.scalars[$0] }.max() ?? 0
          let sum = positions.map { Foundation.exp(input.scalars[$0] - maximum) }.reduce(0, +)
          for position in positions {
            let shifted = input.scalars[position] - maximum
            if case .logSoftmax = op {
              out[position] = shifted - Foundation.log(sum)
            } else {
              out[position] = Foundation.exp(shifted) / sum
            }
          }
        }
      }

    case .rope(let theta, let interleaved):
      let (input, positions) = (x[0], x[1])
      let d = outShape[outShape.count - 1]
      let h = outShape[outShape.count - 2]
      out = input.scalars
      for (p, position) in positions.scalars.enumerated() {
        for k in 0..<(d / 2) {
          let angle = position * Foundation.pow(theta, -2.0 * Double(k) / Double(d))
          let (c, s) = (Foundation.cos(angle), Foundation.sin(angle))
          let (first, second) = interleaved ? (2 * k, 2 * k + 1) : (k, k + d / 2)
          for head in 0..<h {
            let base = (p * h + head) * d
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
        let index = zip(unravel(flat, outStrides), start).map(+)
        out[flat] = input.scalars[zip(index, inputStrides).map(*).reduce(0, +)]
      }

    case .dynamicUpdateSlice:
      let (input, update) = (x[0], x[1])
      let start = clampedStarts(x[2].scalars, sizes: update.shape, in: input.shape)
      out = input.scalars
      let updateStrides = strides(update.shape)
      for flat in 0..<update.elementCount {
        let index = zip(unravel(flat, updateStrides), start).map(+)
        out[zip(index, outStrides).map(*).reduce(0, +)] = update.scalars[flat]
      }
    }
    return DenseTensor(dtype: type.dtype, shape: outShape, scalars: out)
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
    case .max: a > b || a.isNaN ? a : b
    case .min: a < b || a.isNaN ? a : b
    case .pow: Foundation.pow(a, b)
    }
  }

  private func integerBinary(_ function: BinaryOp, _ a: Double, _ b: Double) -> Double {
    let (x, y) = (Int32(a), Int32(b))
    switch function {
    case .add: return Double(x &+ y)
    case .sub: return Double(x &- y)
    case .mul: return Double(x &* y)
    case .div: return y == 0 ? 0 : (x == .min && y == -1) ? Double(Int32.min) : Double(x / y)
    case .max: return Double(Swift.max(x, y))
    case .min: return Double(Swift.min(x, y))
    case .pow: return 0  // Rejected by the type rule.
    }
  }

  // MARK: - Rounding and indexing

  private func round(_ tensor: DenseTensor) -> DenseTensor {
    guard precision == .f32, tensor.dtype == .f32 else { return tensor }
    var rounded = tensor
    rounded.scalars = tensor.scalars.map { Double(Float($0)) }
    return rounded
  }
}

/// Wraps an integral value to the `Int32` range (two's complement).
private func wrapInt32(_ value: Double) -> Double {
  guard value.isFinite else { return 0 }
  let wide = Int64(exactly: value) ?? 0
  return Double(Int32(truncatingIfNeeded: wide))
}

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

/// The multi-index of a flat position.
private func unravel(_ flat: Int, _ strides: [Int]) -> [Int] {
  var rest = flat
  return strides.map { stride in
    defer { rest %= stride }
    return rest / stride
  }
}

/// The flat position in a tensor of `shape` that numpy broadcasting reads for `index` of a
/// larger (right-aligned) shape.
private func broadcastFlat(_ index: [Int], _ shape: [Int]) -> Int {
  let offset = index.count - shape.count
  var flat = 0
  for axis in shape.indices {
    flat = flat * shape[axis] + (shape[axis] == 1 ? 0 : index[offset + axis])
  }
  return flat
}

/// Starts clamped to `0...dim - size` on every axis.
private func clampedStarts(_ starts: [Double], sizes: [Int], in shape: [Int]) -> [Int] {
  shape.indices.map { Swift.min(Swift.max(Int(starts[$0]), 0), shape[$0] - sizes[$0]) }
}
