import IR
import Runtime

/// The fused kernels of `lorac bench kernels` against the primitive sequences `fuse` replaces,
/// both compiled as executables over the same inputs (SmolLM2's shapes at 512 tokens).
extension KernelBenchmarks {
  /// Every fused-op benchmark at each thread count.
  public static func fused(threads: [Int], runs: Int) throws -> [BenchmarkResult] {
    var results: [BenchmarkResult] = []
    for count in threads {
      Threads.set(count)
      results.append(try rmsNorm(rows: 512, width: 576, runs: runs))
      results.append(try swiglu(rows: 512, width: 1536, runs: runs))
      results.append(try gradientSum(rows: 512, width: 576, runs: runs))
      results.append(try mixedChain(rows: 512, width: 1536, runs: runs))
      results.append(try crossEntropy(rows: 512, vocabulary: 49_152, runs: runs))
      results.append(try crossEntropyGradient(rows: 512, vocabulary: 49_152, runs: runs))
      results.append(try attention(batch: 1, sequence: 128, runs: runs))
      results.append(try attention(batch: 16, sequence: 32, runs: runs))
      for (k, n) in [(576, 576), (576, 1536)] {
        results.append(try loraLinear(m: 512, k: k, n: n, rank: 8, runs: runs))
      }
    }
    Threads.set(nil)
    return results
  }

  /// Median seconds of running each of two graphs (fused, primitive) on the same random inputs.
  private static func compare(
    _ fused: Graph, _ primitive: Graph, constants: [String: HostTensor] = [:], runs: Int,
    intLimit: Int = 1
  ) throws -> (Double, Double) {
    var seconds: [Double] = []
    for graph in [fused, primitive] {
      let executable = try Executable(graph, constants: constants)
      for (offset, input) in graph.inputs.enumerated() {
        let type = graph.type(of: input.value)
        var generator = SplitMix64(seed: UInt64(offset) + 7)
        let tensor =
          type.dtype == .i32
          ? HostTensor(
            shape: type.shape,
            ints: (0..<type.elementCount).map { _ in Int32(generator.next() % UInt64(intLimit)) })
          : HostTensor(
            shape: type.shape,
            floats: (0..<type.elementCount).map { _ in Float(generator.nextUnit() * 2 - 1) })
        try executable.set(input.name, tensor)
      }
      seconds.append(try median(runs: runs) { try executable.execute() })
    }
    return (seconds[0], seconds[1])
  }

  private static func result(
    _ name: String, _ times: (Double, Double), work: Double, unit: String, runs: Int
  ) -> BenchmarkResult {
    BenchmarkResult(
      name: name, threads: Threads.count, seconds: times.0, baselineSeconds: times.1,
      baseline: "the primitive ops it fuses", work: work, unit: unit, runs: runs)
  }

  /// Builds a graph over inputs of the given shapes (`i32` where `integer` says).
  private static func graph(
    _ shapes: [[Int]], integer: Set<Int> = [], _ body: (GraphBuilder, [Tensor]) throws -> [Tensor]
  ) throws -> Graph {
    let b = GraphBuilder(name: "bench")
    var inputs: [Tensor] = []
    for (index, shape) in shapes.enumerated() {
      inputs.append(
        try b.input(name: "in\(index)", shape: shape, dtype: integer.contains(index) ? .i32 : .f32))
    }
    return try b.finish(outputs: try body(b, inputs))
  }

  static func rmsNorm(rows: Int, width: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = [[rows, width], [width]]
    let fused = try graph(shapes) { b, x in
      try b.emit(.rmsNorm(epsilon: 1e-5), [.value(x[0].value), .value(x[1].value)])
    }
    let primitive = try graph(shapes) { _, x in
      [try x[0] * rsqrt((x[0] * x[0]).mean(axes: [-1], keepDims: true) + 1e-5) * x[1]]
    }
    return result(
      "rms_norm_\(rows)x\(width)", try compare(fused, primitive, runs: runs),
      work: Double(2 * rows * width * 4), unit: "byte", runs: runs)
  }

  static func swiglu(rows: Int, width: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = [[rows, width], [rows, width]]
    let fused = try graph(shapes) { b, x in
      try b.emit(.swiglu, [.value(x[0].value), .value(x[1].value)])
    }
    let primitive = try graph(shapes) { _, x in [try IR.silu(x[0]) * x[1]] }
    return result(
      "swiglu_\(rows)x\(width)", try compare(fused, primitive, runs: runs),
      work: Double(3 * rows * width * 4), unit: "byte", runs: runs)
  }

  /// The six-way sum of the gradients reaching a layer's normed input in the train graph (base
  /// and adapter paths of q, k and v), one `elementwise` instruction against five `add`s.
  static func gradientSum(rows: Int, width: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = Array(repeating: [rows, width], count: 6)
    let expression = try ElementwiseExpression(
      parsing: "add(add(add($0, $1), add($2, $3)), add($4, $5))")
    let fused = try graph(shapes) { b, x in
      try b.emit(.elementwise(expression), x.map { .value($0.value) })
    }
    let primitive = try graph(shapes) { _, x in
      [try ((x[0] + x[1]) + (x[2] + x[3])) + (x[4] + x[5])]
    }
    return result(
      "elementwise_sum6_\(rows)x\(width)", try compare(fused, primitive, runs: runs),
      work: Double(7 * rows * width * 4), unit: "byte", runs: runs)
  }

  /// A chain of five ops over two operands with literals (a gated, scaled residual).
  static func mixedChain(rows: Int, width: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = [[rows, width], [rows, width]]
    let expression = try ElementwiseExpression(
      parsing: "add(mul(sigmoid(mul($0, 2.0)), $1), mul($0, 0.5))")
    let fused = try graph(shapes) { b, x in
      try b.emit(.elementwise(expression), [.value(x[0].value), .value(x[1].value)])
    }
    let primitive = try graph(shapes) { _, x in
      [try IR.sigmoid(x[0] * 2.0) * x[1] + x[0] * 0.5]
    }
    return result(
      "elementwise_chain5_\(rows)x\(width)", try compare(fused, primitive, runs: runs),
      work: Double(3 * rows * width * 4), unit: "byte", runs: runs)
  }

  /// The Llama tracer's one-hot form of the per-row log-likelihood against `cross_entropy`.
  static func crossEntropy(rows: Int, vocabulary: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = [[rows, vocabulary], [rows]]
    let fused = try graph(shapes, integer: [1]) { b, x in
      try b.emit(.crossEntropy, [.value(x[0].value), .value(x[1].value)])
    }
    let primitive = try graph(shapes, integer: [1]) { b, x in
      let iota = try b.iota(shape: [rows, vocabulary], axis: 1)
      let oneHot = try iota.compare(.eq, x[1].reshaped([rows, 1])).cast(to: .f32)
      return [try -(IR.logSoftmax(x[0]) * oneHot).sum(axes: [1])]
    }
    return result(
      "xent_\(rows)x\(vocabulary)",
      try compare(fused, primitive, runs: runs, intLimit: vocabulary),
      work: Double(rows * vocabulary * 4), unit: "byte", runs: runs)
  }

  /// `g (softmax - onehot)` as autodiff forms it from the primitives, against the fused gradient.
  static func crossEntropyGradient(rows: Int, vocabulary: Int, runs: Int) throws
    -> BenchmarkResult
  {
    let shapes = [[rows, vocabulary], [rows], [rows]]
    let fused = try graph(shapes, integer: [1]) { b, x in
      try b.emit(.crossEntropyGrad, [.value(x[0].value), .value(x[1].value), .value(x[2].value)])
    }
    let primitive = try graph(shapes, integer: [1]) { b, x in
      let iota = try b.iota(shape: [rows, vocabulary], axis: 1)
      let oneHot = try iota.compare(.eq, x[1].reshaped([rows, 1])).cast(to: .f32)
      let g = try x[2].reshaped([rows, 1]).broadcast(to: [rows, vocabulary])
      let picked = try g * oneHot
      let total = try picked.sum(axes: [1], keepDims: true)
      return [try picked - exp(IR.logSoftmax(x[0])) * total]
    }
    return result(
      "xent_grad_\(rows)x\(vocabulary)",
      try compare(fused, primitive, runs: runs, intLimit: vocabulary),
      work: Double(2 * rows * vocabulary * 4), unit: "byte", runs: runs)
  }

  /// Causal grouped-query attention (SmolLM2: 9 query heads over 3 key/value heads of 64) against
  /// the tracer's sequence: heads expanded by broadcast, scores by batched matmul, scale, mask,
  /// softmax, values by batched matmul.
  static func attention(batch: Int, sequence: Int, runs: Int) throws -> BenchmarkResult {
    let (heads, groups, width) = (9, 3, 64)
    let shapes = [
      [batch, heads, sequence, width], [batch, sequence, groups, width],
      [batch, sequence, groups, width],
    ]
    func causal(_ b: GraphBuilder) throws -> Tensor {
      try b.iota(shape: [sequence, sequence], axis: 1).compare(
        .le, b.iota(shape: [sequence, sequence], axis: 0))
    }
    let scale = 1 / Double(width).squareRoot()
    let fused = try graph(shapes) { b, x in
      let (k, v) = (try x[1].transposed([0, 2, 1, 3]), try x[2].transposed([0, 2, 1, 3]))
      return try b.emit(
        .attention(scale: scale),
        [.value(x[0].value), .value(k.value), .value(v.value), .value(try causal(b).value)])
    }
    let primitive = try graph(shapes) { b, x in
      func expand(_ t: Tensor) throws -> Tensor {
        try t.reshaped([batch, sequence, groups, 1, width])
          .broadcast(to: [batch, sequence, groups, heads / groups, width])
          .reshaped([batch, sequence, heads, width]).transposed([0, 2, 1, 3])
      }
      let scores = try matmul(x[0], expand(x[1]), transposeB: true) * scale
      let masked = try b.emit(
        .select, [.value(try causal(b).value), .value(scores.value), .scalar(-.infinity)])[0]
      return [try matmul(IR.softmax(masked), expand(x[2]))]
    }
    return result(
      "attention_\(batch)x\(sequence)_gqa", try compare(fused, primitive, runs: runs),
      work: 4.0 * Double(batch * heads * sequence * sequence * width), unit: "flop", runs: runs)
  }

  /// `lora_linear` against `x W^T + s (x A) B` as three GEMMs, a scale and an add.
  static func loraLinear(m: Int, k: Int, n: Int, rank: Int, runs: Int) throws -> BenchmarkResult {
    let shapes = [[m, k], [k, rank], [rank, n]]
    var generator = SplitMix64(seed: 5)
    let weight = HostTensor(
      shape: [n, k], floats: (0..<(n * k)).map { _ in Float(generator.nextUnit() - 0.5) })
    func body(_ fusedForm: Bool) -> (GraphBuilder, [Tensor]) throws -> [Tensor] {
      { b, x in
        let w = try b.constant(name: "w", shape: [n, k])
        if fusedForm {
          return try b.emit(
            .loraLinear(scale: 2, transposeW: true),
            [.value(x[0].value), .value(w.value), .value(x[1].value), .value(x[2].value)])
        }
        let xa = try matmul(x[0], x[1])
        return [xa, try matmul(x[0], w, transposeB: true) + matmul(xa, x[2]) * 2.0]
      }
    }
    let times = try compare(
      try graph(shapes, body(true)), try graph(shapes, body(false)), constants: ["w": weight],
      runs: runs)
    return result(
      "lora_\(m)x\(k)x\(n)_r\(rank)", times,
      work: 2.0 * Double(m * n * k + m * k * rank + m * rank * n), unit: "flop", runs: runs)
  }
}
