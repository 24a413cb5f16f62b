import CKernels
import IR

/// Turns one instruction into a kernel call with every address, shape and stride fixed.
struct StepBuilder {
  let executable: Executable
  let graph: Graph
  let index: Int
  let instruction: Instruction

  private var op: Op { instruction.op }
  private var resultType: TensorType { graph.type(of: instruction.results[0]) }

  private func type(_ position: Int) -> TensorType {
    switch instruction.operands[position] {
    case .value(let value): graph.type(of: value)
    case .scalar: TensorType(scalarDType, [])
    }
  }

  /// The dtype scalar literals take: that of the first value operand of the same kind.
  private var scalarDType: DType {
    let positions: [Int] = op == .select ? [1, 2] : [0, 1]
    for position in positions where position < instruction.operands.count {
      if let value = instruction.operands[position].value { return graph.type(of: value).dtype }
    }
    return .f32
  }

  private func operand(_ position: Int) -> UnsafeMutableRawPointer {
    executable.operandAddress(instruction.operands[position], dtype: scalarDType)
  }

  private func unsupported(_ detail: String) -> RuntimeError {
    RuntimeError(
      message:
        "instruction \(index) (\(op.mnemonic)): \(detail) is not supported by the runtime yet")
  }

  func make() throws(RuntimeError) -> (() -> String?)? {
    let out = executable.resultAddress(instruction)
    let count = Int64(resultType.elementCount)
    let outShape = resultType.shape.map(Int64.init)
    let rank = Int32(outShape.count)

    switch op {
    case .reshape:
      return nil  // Aliases its operand.

    case .unary(let function):
      let x = operand(0)
      let code = function.kernelCode
      if resultType.dtype == .i32 {
        return {
          lc_unary_i32(
            code, x.assumingMemoryBound(to: Int32.self), out.assumingMemoryBound(to: Int32.self),
            count);
          return nil
        }
      }
      return {
        lc_unary_f32(
          code, x.assumingMemoryBound(to: Float.self), out.assumingMemoryBound(to: Float.self),
          count);
        return nil
      }

    case .binary(let function):
      let (a, b) = (operand(0), operand(1))
      let (sa, sb) = (
        broadcastStrides(type(0), to: resultType), broadcastStrides(type(1), to: resultType)
      )
      let code = function.kernelCode
      if resultType.dtype == .i32 {
        if function == .pow { throw unsupported("pow on i32") }
        return {
          lc_binary_i32(
            code, out.assumingMemoryBound(to: Int32.self), rank, outShape,
            a.assumingMemoryBound(to: Int32.self), sa, b.assumingMemoryBound(to: Int32.self), sb)
          return nil
        }
      }
      return {
        lc_binary_f32(
          code, out.assumingMemoryBound(to: Float.self), rank, outShape,
          a.assumingMemoryBound(to: Float.self), sa, b.assumingMemoryBound(to: Float.self), sb)
        return nil
      }

    case .compare(let comparison):
      let (a, b) = (operand(0), operand(1))
      let (sa, sb) = (
        broadcastStrides(type(0), to: resultType), broadcastStrides(type(1), to: resultType)
      )
      let code = comparison.kernelCode
      if scalarDType == .i32 {
        return {
          lc_compare_i32(
            code, out.assumingMemoryBound(to: Int32.self), rank, outShape,
            a.assumingMemoryBound(to: Int32.self), sa, b.assumingMemoryBound(to: Int32.self), sb)
          return nil
        }
      }
      return {
        lc_compare_f32(
          code, out.assumingMemoryBound(to: Int32.self), rank, outShape,
          a.assumingMemoryBound(to: Float.self), sa, b.assumingMemoryBound(to: Float.self), sb)
        return nil
      }

    case .select:
      let (c, a, b) = (operand(0), operand(1), operand(2))
      let sc = broadcastStrides(type(0), to: resultType)
      let sa = broadcastStrides(type(1), to: resultType)
      let sb = broadcastStrides(type(2), to: resultType)
      return {
        lc_select_32(
          out.assumingMemoryBound(to: UInt32.self), rank, outShape,
          c.assumingMemoryBound(to: Int32.self), sc, a.assumingMemoryBound(to: UInt32.self), sa,
          b.assumingMemoryBound(to: UInt32.self), sb)
        return nil
      }

    case .reduce(let function, let axes, _):
      let x = operand(0)
      let input = type(0)
      let shape = input.shape.map(Int64.init)
      let reduced = (0..<input.rank).map { Int32(axes.contains($0) ? 1 : 0) }
      let code = function.kernelCode
      let inputRank = Int32(input.rank)
      if input.dtype == .i32 {
        return {
          lc_reduce_i32(
            code, out.assumingMemoryBound(to: Int32.self), x.assumingMemoryBound(to: Int32.self),
            inputRank, shape, reduced);
          return nil
        }
      }
      return {
        lc_reduce_f32(
          code, out.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
          inputRank, shape, reduced);
        return nil
      }

    case .matmul(let transposeA, let transposeB):
      return try matmul(
        out: out, a: operand(0), lhs: type(0), w: operand(1), rhs: type(1), result: resultType,
        transposeA: transposeA, transposeB: transposeB)

    case .loraLinear(let scale, let transposeW):
      return try loraLinear(scale: scale, transposeW: transposeW)

    case .attention(let scale), .attentionGrad(let scale):
      return try attention(scale: Float(scale))

    case .rmsNorm(let epsilon), .rmsNormGrad(let epsilon):
      let (x, w) = (operand(0), operand(1))
      let d = Int64(type(1).elementCount)
      let rows = count / max(d, 1)
      let eps = Float(epsilon)
      if case .rmsNorm = op {
        return {
          lc_rms_norm_f32(
            out.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
            w.assumingMemoryBound(to: Float.self), rows, d, eps)
          return nil
        }
      }
      let g = operand(2)
      return {
        lc_rms_norm_grad_f32(
          out.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
          w.assumingMemoryBound(to: Float.self), g.assumingMemoryBound(to: Float.self), rows, d,
          eps)
        return nil
      }

    case .elementwise(let expression):
      guard expression.depth <= Int(LC_EW_MAX_DEPTH) else {
        throw unsupported("an expression deeper than \(LC_EW_MAX_DEPTH) values")
      }
      var steps: [Int32] = []
      var literals: [Float] = []
      func emit(_ node: ElementwiseExpression) {
        switch node {
        case .operand(let index):
          steps += [Int32(LC_EW_INPUT.rawValue), Int32(index)]
        case .literal(let value):
          steps += [Int32(LC_EW_LITERAL.rawValue), Int32(literals.count)]
          literals.append(Float(value))
        case .unary(let function, let x):
          emit(x)
          steps += [Int32(LC_EW_UNARY.rawValue), function.kernelCode]
        case .binary(let function, let x, let y):
          emit(x)
          emit(y)
          steps += [Int32(LC_EW_BINARY.rawValue), function.kernelCode]
        }
      }
      emit(expression)
      let inputs: [UnsafePointer<Float>?] = (0..<instruction.operands.count).map {
        UnsafePointer(operand($0).assumingMemoryBound(to: Float.self))
      }
      let stepCount = Int64(steps.count / 2)
      return {
        steps.withUnsafeBufferPointer { program in
          inputs.withUnsafeBufferPointer { pointers in
            literals.withUnsafeBufferPointer { values in
              lc_elementwise_f32(
                out.assumingMemoryBound(to: Float.self), program.baseAddress, stepCount,
                pointers.baseAddress, values.baseAddress, count)
            }
          }
        }
        return nil
      }

    case .swiglu:
      let (gate, up) = (operand(0), operand(1))
      return {
        lc_swiglu_f32(
          out.assumingMemoryBound(to: Float.self), gate.assumingMemoryBound(to: Float.self),
          up.assumingMemoryBound(to: Float.self), count)
        return nil
      }

    case .swigluGrad:
      let (gate, up, g) = (operand(0), operand(1), operand(2))
      let dUp = executable.resultAddress(instruction, 1)
      return {
        lc_swiglu_grad_f32(
          out.assumingMemoryBound(to: Float.self), dUp.assumingMemoryBound(to: Float.self),
          gate.assumingMemoryBound(to: Float.self), up.assumingMemoryBound(to: Float.self),
          g.assumingMemoryBound(to: Float.self), count)
        return nil
      }

    case .crossEntropy, .crossEntropyGrad:
      let (logits, targets) = (operand(0), operand(1))
      let v = Int64(type(0).shape.last ?? 1)
      let rows = Int64(type(1).elementCount)
      if case .crossEntropy = op {
        return {
          lc_cross_entropy_f32(
            out.assumingMemoryBound(to: Float.self), logits.assumingMemoryBound(to: Float.self),
            targets.assumingMemoryBound(to: Int32.self), rows, v)
          return nil
        }
      }
      let g = operand(2)
      return {
        lc_cross_entropy_grad_f32(
          out.assumingMemoryBound(to: Float.self), logits.assumingMemoryBound(to: Float.self),
          targets.assumingMemoryBound(to: Int32.self), g.assumingMemoryBound(to: Float.self), rows,
          v)
        return nil
      }

    case .transpose(let permutation):
      let x = operand(0)
      let dense = denseStrides(type(0).shape)
      let strides = permutation.map { dense[$0] }
      return {
        copyStrided(out, rank, outShape, x, strides); return nil
      }

    case .broadcast:
      let x = operand(0)
      let strides = broadcastStrides(type(0), to: resultType)
      return {
        copyStrided(out, rank, outShape, x, strides); return nil
      }

    case .slice(let start, _):
      let dense = denseStrides(type(0).shape)
      let offset = zip(start, dense).map { Int64($0) * $1 }.reduce(0, +)
      let x = operand(0) + Int(offset) * 4
      return {
        copyStrided(out, rank, outShape, x, dense); return nil
      }

    case .concat(let axis):
      let inputs = instruction.operands.indices.map {
        operand($0).assumingMemoryBound(to: UInt32.self)
      }
      let widths = instruction.operands.indices.map { Int64(type($0).shape[axis]) }
      let outer = Int64(resultType.shape[..<axis].reduce(1, *))
      let inner = Int64(resultType.shape[(axis + 1)...].reduce(1, *))
      let pointers = inputs.map { Optional(UnsafePointer($0)) }
      let operandCount = Int32(inputs.count)
      return {
        pointers.withUnsafeBufferPointer { list in
          lc_concat_32(
            out.assumingMemoryBound(to: UInt32.self), operandCount, list.baseAddress, widths, outer,
            inner)
        }
        return nil
      }

    case .gather(let axis):
      return try gather(out: out, axis: axis)

    case .scatterAdd(let axis):
      let target = type(0)
      guard target.dtype == .f32 else {
        throw unsupported("scatter_add on \(target.dtype.rawValue)")
      }
      let (t, indices, updates) = (operand(0), operand(1), operand(2))
      let outer = Int64(target.shape[..<axis].reduce(1, *))
      let rows = Int64(target.shape[axis])
      let inner = Int64(target.shape[(axis + 1)...].reduce(1, *))
      let indexCount = Int64(type(1).elementCount)
      return {
        let bad = lc_scatter_add_f32(
          out.assumingMemoryBound(to: Float.self), t.assumingMemoryBound(to: Float.self), outer,
          rows, inner, indices.assumingMemoryBound(to: Int32.self), indexCount,
          updates.assumingMemoryBound(to: Float.self))
        return bad < 0 ? nil : outOfRange(indices, bad, rows)
      }

    case .cast(let dtype):
      let x = operand(0)
      let source = type(0)
      switch (source.dtype, dtype) {
      case (.f32, .i32):
        return {
          lc_cast_f32_i32(
            x.assumingMemoryBound(to: Float.self), out.assumingMemoryBound(to: Int32.self), count);
          return nil
        }
      case (.i32, .f32):
        return {
          lc_cast_i32_f32(
            x.assumingMemoryBound(to: Int32.self), out.assumingMemoryBound(to: Float.self), count);
          return nil
        }
      case (let from, let to) where from == to:
        return {
          out.copyMemory(from: x, byteCount: Int(count) * 4); return nil
        }
      default:
        let code = source.dtype.kernelCode
        let width = Int64(source.shape.last ?? 1)
        let rows = count / width
        return {
          lc_dequantize_rows(code, x, out.assumingMemoryBound(to: Float.self), rows, width);
          return nil
        }
      }

    case .iota(let axis, let type):
      let axis32 = Int32(axis)
      if type.dtype == .i32 {
        return {
          lc_iota_i32(out.assumingMemoryBound(to: Int32.self), rank, outShape, axis32); return nil
        }
      }
      return {
        lc_iota_f32(out.assumingMemoryBound(to: Float.self), rank, outShape, axis32); return nil
      }

    case .fill(let value, let type):
      let word: UInt32 =
        type.dtype == .i32
        ? UInt32(bitPattern: Int32(clamping: Int(value.isFinite ? value.rounded(.towardZero) : 0)))
        : Float(value).bitPattern
      return {
        lc_fill_32(out.assumingMemoryBound(to: UInt32.self), word, count); return nil
      }

    case .softmax(let axis), .logSoftmax(let axis):
      let x = operand(0)
      let shape = resultType.shape
      let outer = Int64(shape[..<axis].reduce(1, *))
      let n = Int64(shape[axis])
      let inner = Int64(shape[(axis + 1)...].reduce(1, *))
      let logarithm: Int32 = if case .logSoftmax = op { 1 } else { 0 }
      return {
        lc_softmax_f32(
          out.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self), outer, n,
          inner, logarithm)
        return nil
      }

    case .rope(let theta, let interleaved):
      let (x, positions) = (operand(0), operand(1))
      let shape = resultType.shape
      let d = Int64(shape[shape.count - 1])
      let h = Int64(shape[shape.count - 2])
      let p = count / (d * h)
      let flag: Int32 = interleaved ? 1 : 0
      return {
        lc_rope_f32(
          out.assumingMemoryBound(to: Float.self), x.assumingMemoryBound(to: Float.self),
          positions.assumingMemoryBound(to: Int32.self), p, h, d, theta, flag)
        return nil
      }

    case .dynamicSlice(let sizes):
      let (x, starts) = (operand(0), operand(1))
      let source = type(0).shape
      let dense = denseStrides(source)
      return {
        let offset = clampedOffset(starts, sizes: sizes, in: source, strides: dense)
        copyStrided(out, rank, outShape, x + Int(offset) * 4, dense)
        return nil
      }

    case .dynamicUpdateSlice:
      let (x, update, starts) = (operand(0), operand(1), operand(2))
      let source = type(0).shape
      let updateShape = type(1).shape
      let dense = denseStrides(source)
      let updateShape64 = updateShape.map(Int64.init)
      let updateRank = Int32(updateShape.count)
      let inPlace = out == x
      return {
        if !inPlace { out.copyMemory(from: x, byteCount: Int(count) * 4) }
        let offset = clampedOffset(starts, sizes: updateShape, in: source, strides: dense)
        lc_scatter_strided_32(
          (out + Int(offset) * 4).assumingMemoryBound(to: UInt32.self), dense, updateRank,
          updateShape64, update.assumingMemoryBound(to: UInt32.self))
        return nil
      }
    }
  }

  // MARK: - Matmul and gather

  /// `out = op(a) op(w)` for operands of types `lhs`, `rhs` and a result of type `result`.
  private func matmul(
    out: UnsafeMutableRawPointer, a: UnsafeMutableRawPointer, lhs: TensorType,
    w: UnsafeMutableRawPointer, rhs: TensorType, result resultType: TensorType, transposeA: Bool,
    transposeB: Bool
  ) throws(RuntimeError) -> (() -> String?)? {
    let m = Int64(resultType.shape[resultType.rank - 2])
    let n = Int64(resultType.shape[resultType.rank - 1])
    let k = Int64(transposeA ? lhs.shape[lhs.rank - 2] : lhs.shape[lhs.rank - 1])
    let entry = executable.kernelPlan.entries[index]
    if entry.kernel == .bf16Packed {
      guard let weight = instruction.operands[1].value, let kind = entry.weight.packedKind else {
        throw RuntimeError(message: "instruction \(index) (\(op.mnemonic)): no packed weight")
      }
      let packed = try executable.packedForm(weight, kind)
      guard let scratch = executable.scratchAddress(index) else {
        throw RuntimeError(message: "instruction \(index) (\(op.mnemonic)): no scratch planned")
      }
      let rows = Int64(lhs.elementCount) / max(k, 1)
      return {
        lc_matmul_bf16_packed(
          out.assumingMemoryBound(to: Float.self), a.assumingMemoryBound(to: Float.self), rows, n,
          k, packed.assumingMemoryBound(to: UInt16.self), scratch)
        return nil
      }
    }
    // The plan's ISA path for the row kernels (portable: none).
    let path = entry.pathCode
    if !rhs.dtype.isCompute {
      guard rhs.rank == 2, !transposeA else {
        throw unsupported(
          "a \(rhs.dtype.rawValue) weight of rank \(rhs.rank)\(transposeA ? " with transpose_a" : "")"
        )
      }
      // Batch dimensions of the left operand fold into M (it is dense, so rows are contiguous).
      let rows = Int64(lhs.elementCount) / k
      let code = rhs.dtype.kernelCode
      let scratch = executable.scratchAddress(index)?.assumingMemoryBound(to: Float.self)
      let chunk = Int64(KernelPlan.dequantizeChunk)
      switch entry.kernel {
      case .dequantizeSgemmNT:
        // out [M, K'] = a [M, N'] x W [N', K'] as stored.
        let (weightRows, weightColumns) = (Int64(rhs.shape[0]), Int64(rhs.shape[1]))
        return {
          lc_matmul_quantized_nt(
            code, out.assumingMemoryBound(to: Float.self), a.assumingMemoryBound(to: Float.self), w,
            rows, weightRows, weightColumns, scratch, chunk)
          return nil
        }
      case .interleaved1, .interleaved3:
        // A few rows against the interleaved form of a q4_1 or q8_0 constant, the activations as
        // int8 digits (three, f32-accurate; one with int8 activations).
        guard let weight = instruction.operands[1].value else {
          throw unsupported("a literal weight")
        }
        let form = try executable.packedForm(weight, .interleaved)
        let digits: Int32 = entry.kernel == .interleaved1 ? 1 : 3
        return {
          lc_matmul_interleaved_path(
            path, code, digits, out.assumingMemoryBound(to: Float.self),
            a.assumingMemoryBound(to: Float.self), form, rows, n, k)
          return nil
        }
      default:
        // quant_rows (M <= 8, on the plan's path) or dequant_sgemm.
        return {
          lc_matmul_quantized(
            path, code, out.assumingMemoryBound(to: Float.self),
            a.assumingMemoryBound(to: Float.self), w, rows, n, k, scratch, chunk)
          return nil
        }
      }
    }
    // Batch offsets of each operand, with broadcasting of the batch dimensions.
    let batchShape = Array(resultType.shape.dropLast(2))
    let batches = batchShape.reduce(1, *)
    let aStrides = batchStrides(lhs, batchShape: batchShape)
    let wStrides = batchStrides(rhs, batchShape: batchShape)
    var aOffsets: [Int64] = []
    var wOffsets: [Int64] = []
    for batch in 0..<batches {
      var rest = batch
      var (ao, wo) = (Int64(0), Int64(0))
      for d in stride(from: batchShape.count - 1, through: 0, by: -1) {
        let i = Int64(rest % batchShape[d])
        rest /= batchShape[d]
        ao += i * aStrides[d]
        wo += i * wStrides[d]
      }
      aOffsets.append(ao)
      wOffsets.append(wo)
    }
    let batchCount = Int64(batches)
    let (ta, tb): (Int32, Int32) = (transposeA ? 1 : 0, transposeB ? 1 : 0)
    // An f32 constant (>= 256 KB) multiplied by a few rows (decoding) streams from DRAM each
    // call: read it from a copy on huge pages (one TLB entry per 2 MB instead of per 4 KB; the
    // copies share the store's slabs). With a shared store (a decoding session) products of
    // every size read the copy, so the file's pages, paged out once copied, are not read back in
    // by the prefill.
    var weights = w
    if entry.weight == .hugePages, let weight = instruction.operands[1].value {
      weights = UnsafeMutableRawPointer(mutating: try executable.packedForm(weight, .hugePages))
    }
    let rowPath = entry.kernel == .f32Rows ? path : Int32(LC_QUANT_PORTABLE.rawValue)
    return {
      lc_matmul_f32(
        out.assumingMemoryBound(to: Float.self), a.assumingMemoryBound(to: Float.self),
        weights.assumingMemoryBound(to: Float.self), batchCount, aOffsets, wOffsets, m, n, k, ta,
        tb, rowPath)
      return nil
    }
  }

  /// `xa = x A; y = x op(W) + s xa B`: the base product (any weight dtype) writes `y`, then one
  /// small GEMM forms `xa` and a second accumulates `s xa B` into `y` (beta = 1), so neither
  /// `A B` nor a separate branch output is ever formed.
  private func loraLinear(scale: Double, transposeW: Bool) throws(RuntimeError) -> (
    () -> String?
  )? {
    let (x, w, a, b) = (operand(0), operand(1), operand(2), operand(3))
    let (xa, y) = (
      executable.resultAddress(instruction, 0), executable.resultAddress(instruction, 1)
    )
    let xType = type(0)
    let k = Int64(xType.shape[xType.rank - 1])
    let rows = Int64(xType.elementCount) / max(k, 1)
    let r = Int64(type(2).shape[1])
    let n = Int64(type(3).shape[1])
    // The base product over rows folded into M: x [rows, K] x op(W).
    let flat = TensorType(.f32, [Int(rows), Int(k)])
    guard
      let base = try matmul(
        out: y, a: x, lhs: flat, w: w, rhs: type(1), result: TensorType(.f32, [Int(rows), Int(n)]),
        transposeA: false, transposeB: transposeW)
    else { return nil }
    let alpha = Float(scale)
    let factor = executable.adapterFactor
    return {
      if let message = base() { return message }
      let scaled = alpha * factor.pointee
      let (xf, af, bf) = (
        x.assumingMemoryBound(to: Float.self), a.assumingMemoryBound(to: Float.self),
        b.assumingMemoryBound(to: Float.self)
      )
      let (xaf, yf) = (
        xa.assumingMemoryBound(to: Float.self), y.assumingMemoryBound(to: Float.self)
      )
      lc_sgemm(0, 0, rows, r, k, 1, xf, k, af, r, 0, xaf, r)
      if scaled != 0 { lc_sgemm(0, 0, rows, n, r, scaled, xaf, r, bf, n, 1, yf, n) }
      return nil
    }
  }

  /// `attention` or `attention_grad` over q [B, H, S, D], k, v [B, G, T, D] and a broadcast mask.
  private func attention(scale: Float) throws(RuntimeError) -> (() -> String?)? {
    let (q, k, v, mask) = (operand(0), operand(1), operand(2), operand(3))
    let (qShape, kShape) = (type(0).shape.map(Int64.init), type(1).shape.map(Int64.init))
    let scores = TensorType(
      .f32, [type(0).shape[0], type(0).shape[1], type(0).shape[2], type(1).shape[2]])
    let strides = broadcastStrides(type(3), to: scores)
    guard let scratch = executable.scratchAddress(index)?.assumingMemoryBound(to: Float.self) else {
      throw RuntimeError(message: "instruction \(index) (\(op.mnemonic)): no scratch planned")
    }
    let (b, h, s, d) = (qShape[0], qShape[1], qShape[2], qShape[3])
    let (g, t) = (kShape[1], kShape[2])
    // The threads the plan's scratch holds blocks for (a plan read back from a bundle made on a
    // machine with fewer cores holds fewer), at most those this target runs.
    let fixed = lc_attention_scratch_floats(b, h, s, t, d, 0)
    let perSlot = max(lc_attention_scratch_floats(b, h, s, t, d, 1) - fixed, 1)
    let planned = (Int64(executable.kernelPlan.entries[index].scratchBytes / 4) - fixed) / perSlot
    let slots = max(1, min(Int64(executable.kernelPlan.target.threadSlots), planned))
    let (qf, kf, vf) = (
      q.assumingMemoryBound(to: Float.self), k.assumingMemoryBound(to: Float.self),
      v.assumingMemoryBound(to: Float.self)
    )
    let maskPointer = mask.assumingMemoryBound(to: Int32.self)
    let out = executable.resultAddress(instruction).assumingMemoryBound(to: Float.self)
    // The plan's ISA path (avx512: the one-row loop for width 64; none: the portable loops).
    let path = executable.kernelPlan.entries[index].pathCode
    if case .attention = op {
      return {
        lc_attention_f32(
          out, qf, kf, vf, maskPointer, strides, b, h, g, s, t, d, scale, scratch, slots, path)
        return nil
      }
    }
    let gradient = operand(4).assumingMemoryBound(to: Float.self)
    let dk = executable.resultAddress(instruction, 1).assumingMemoryBound(to: Float.self)
    let dv = executable.resultAddress(instruction, 2).assumingMemoryBound(to: Float.self)
    return {
      lc_attention_grad_f32(
        out, dk, dv, qf, kf, vf, maskPointer, strides, gradient, b, h, g, s, t, d, scale, scratch,
        slots)
      return nil
    }
  }

  private func gather(out: UnsafeMutableRawPointer, axis: Int) throws(RuntimeError) -> (
    () -> String?
  )? {
    let (table, indices) = (operand(0), operand(1))
    let tableType = type(0)
    let indexCount = Int64(type(1).elementCount)
    let rows = Int64(tableType.shape[axis])
    if !tableType.dtype.isCompute {
      guard tableType.rank == 2, axis == 0 else {
        throw unsupported(
          "gathering a \(tableType.dtype.rawValue) table of rank \(tableType.rank) along axis \(axis)"
        )
      }
      let code = tableType.dtype.kernelCode
      let width = Int64(tableType.shape[1])
      return {
        let bad = lc_gather_rows_dequantize(
          code, out.assumingMemoryBound(to: Float.self), table, rows, width,
          indices.assumingMemoryBound(to: Int32.self), indexCount)
        return bad < 0 ? nil : outOfRange(indices, bad, rows)
      }
    }
    let outer = Int64(tableType.shape[..<axis].reduce(1, *))
    let inner = Int64(tableType.shape[(axis + 1)...].reduce(1, *))
    return {
      let bad = lc_gather_32(
        out.assumingMemoryBound(to: UInt32.self), table.assumingMemoryBound(to: UInt32.self), outer,
        rows, inner, indices.assumingMemoryBound(to: Int32.self), indexCount)
      return bad < 0 ? nil : outOfRange(indices, bad, rows)
    }
  }
}

// MARK: - Helpers

/// Row-major element strides of a shape.
func denseStrides(_ shape: [Int]) -> [Int64] {
  var strides = [Int64](repeating: 1, count: shape.count)
  var product: Int64 = 1
  for d in shape.indices.reversed() {
    strides[d] = product
    product *= Int64(shape[d])
  }
  return strides
}

/// Strides that read `type` broadcast (numpy-style) to `target`: 0 on stretched dimensions.
func broadcastStrides(_ type: TensorType, to target: TensorType) -> [Int64] {
  let dense = denseStrides(type.shape)
  let offset = target.rank - type.rank
  return (0..<target.rank).map { d in
    let source = d - offset
    return source >= 0 && type.shape[source] != 1 ? dense[source] : 0
  }
}

/// Per batch dimension, the element stride of an operand's matrices (0 where it broadcasts).
func batchStrides(_ type: TensorType, batchShape: [Int]) -> [Int64] {
  let matrix = Int64(type.shape.suffix(2).reduce(1, *))
  let batch = Array(type.shape.dropLast(2))
  let dense = denseStrides(batch).map { $0 * matrix }
  let offset = batchShape.count - batch.count
  return (0..<batchShape.count).map { d in
    let source = d - offset
    return source >= 0 && batch[source] != 1 ? dense[source] : 0
  }
}

private func copyStrided(
  _ out: UnsafeMutableRawPointer, _ rank: Int32, _ shape: [Int64], _ x: UnsafeMutableRawPointer,
  _ strides: [Int64]
) {
  lc_copy_strided_32(
    out.assumingMemoryBound(to: UInt32.self), rank, shape, x.assumingMemoryBound(to: UInt32.self),
    strides)
}

/// The element offset of a box of `sizes` at `starts` (read at run time), each start clamped
/// so the box fits (XLA's dynamic-slice semantics).
private func clampedOffset(
  _ starts: UnsafeMutableRawPointer, sizes: [Int], in shape: [Int], strides: [Int64]
) -> Int64 {
  var offset: Int64 = 0
  for d in 0..<shape.count {
    let start = Int64(starts.load(fromByteOffset: 4 * d, as: Int32.self))
    let clamped = min(max(start, 0), Int64(shape[d] - sizes[d]))
    offset += clamped * strides[d]
  }
  return offset
}

private func outOfRange(_ indices: UnsafeMutableRawPointer, _ position: Int64, _ rows: Int64)
  -> String
{
  let value = indices.load(fromByteOffset: Int(position) * 4, as: Int32.self)
  return "index \(value) at position \(position) is out of range 0..<\(rows)"
}
