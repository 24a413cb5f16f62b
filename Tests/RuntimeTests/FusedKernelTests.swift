import CKernels
import Foundation
import IR
import Models
import Passes
import Runtime
import TestSupport
import Testing

// Error bounds for the fused kernels, relative to 1 + |reference| (per element, or to the
// tensor's largest element for GEMM-based ones): rms_norm and its gradient accumulate a row in
// float lanes (1e-5); swiglu and the cross-entropy use lc_exp, within a few ulps of expf (1e-6
// relative for swiglu, 1e-5 for sums over a vocabulary row); lora_linear is three GEMMs (1e-5).
let fusedRowBound = 1e-5
let fusedElementwiseBound = 2e-6

extension RuntimeSuite {
  @Test func rmsNormAndItsGradientMatchInterpreter() throws {
    for rows in awkwardSizes {
      for width in [1, 7, 33, 576] {
        let graph = try singleOp([f32([rows, width]), f32([width]), f32([rows, width])]) {
          b, x throws(TraceError) in
          let y = try b.emit(.rmsNorm(epsilon: 1e-5), [.value(x[0].value), .value(x[1].value)])[0]
          let dx = try b.emit(
            .rmsNormGrad(epsilon: 1e-5),
            [.value(x[0].value), .value(x[1].value), .value(x[2].value)]
          )[0]
          return try concat([y, dx], axis: 1)
        }
        #expect(try compareWithInterpreter(graph) <= fusedRowBound, "\(rows) x \(width)")
      }
    }
  }

  @Test func swigluAndItsGradientMatchInterpreter() throws {
    for size in awkwardSizes + [40_000] {
      let b = GraphBuilder(name: "swiglu")
      let gate = try b.input(name: "gate", shape: [size])
      let up = try b.input(name: "up", shape: [size])
      let g = try b.input(name: "g", shape: [size])
      // Wide gates reach the clamps of lc_exp (|x| up to 40).
      let wide = try gate * 20.0
      let y = try b.emit(.swiglu, [.value(wide.value), .value(up.value)])[0]
      let grads = try b.emit(.swigluGrad, [.value(wide.value), .value(up.value), .value(g.value)])
      let graph = try b.finish(outputs: [y, grads[0], grads[1]])
      #expect(try compareWithInterpreter(graph) <= fusedElementwiseBound, "size \(size)")
    }
  }

  @Test func crossEntropyAndItsGradientMatchInterpreter() throws {
    for (rows, vocabulary) in [(1, 1), (3, 7), (7, 33), (33, 129), (5, 49_152)] {
      let b = GraphBuilder(name: "ce")
      let logits = try b.input(name: "logits", shape: [rows, vocabulary])
      // Targets from -1 (ignored) to vocabulary (outside: ignored too).
      let raw = try b.input(name: "targets", shape: [rows], dtype: .i32)
      let targets = try raw - 1
      let g = try b.input(name: "g", shape: [rows])
      // Spread logits so the softmax is peaked (x 8) and rows with g = 0 take the fast path.
      let spread = try logits * 8.0
      let weights = try maximum(g, b.fill(0, shape: [rows]))
      let loss = try b.emit(.crossEntropy, [.value(spread.value), .value(targets.value)])[0]
      let grad = try b.emit(
        .crossEntropyGrad, [.value(spread.value), .value(targets.value), .value(weights.value)])[0]
      let graph = try b.finish(outputs: [loss, grad])
      #expect(
        try compareWithInterpreter(graph, intLimit: vocabulary + 2) <= fusedRowBound,
        "\(rows) x \(vocabulary)")
    }
  }

  /// A row as wide as SmolLM2's vocabulary with logits spread over [-8, 8]: the loss stays within
  /// 1e-5 of the float64 value however the compiler vectorises (one running float sum, which a
  /// build without vectorisation gave, was 5e-5 off).
  @Test func crossEntropyOverAWholeVocabularyIsAccurateUnvectorised() {
    let (rows, vocabulary) = (8, 49_152)
    var generator = SplitMix64(seed: 11)
    let logits = (0..<(rows * vocabulary)).map { _ in Float(generator.nextUnit() * 16 - 8) }
    let targets = (0..<rows).map { Int32($0 * 977) }
    var loss = [Float](repeating: 0, count: rows)
    lc_cross_entropy_f32(&loss, logits, targets, Int64(rows), Int64(vocabulary))
    var worst = 0.0
    for row in 0..<rows {
      let x = logits[(row * vocabulary)..<((row + 1) * vocabulary)].map(Double.init)
      let m = x.max() ?? 0
      let reference = m + log(x.map { exp($0 - m) }.reduce(0, +)) - x[Int(targets[row])]
      worst = max(worst, abs(Double(loss[row]) - reference))
    }
    #expect(worst <= 1e-5, "worst loss error \(worst)")
  }

  @Test(arguments: [DType.f32, .q8_0, .q4_1, .q4_k])
  func loraLinearMatchesInterpreter(_ dtype: DType) throws {
    let k = dtype.blockSize >= 256 ? 256 : 96
    for (m, n, r) in [(1, 7, 1), (3, 33, 2), (33, 129, 8), (130, 65, 4)] {
      for transposeW in dtype == .f32 ? [true, false] : [true] {
        let graph = try loraLinearGraph(
          m: m, n: n, k: k, r: r, dtype: dtype, transposeW: transposeW)
        let weight = try randomStorage(
          TensorType(dtype, transposeW ? [n, k] : [k, n]), seed: UInt64(m * 31 + n))
        #expect(
          try compareWithInterpreter(graph, constants: ["w": weight], scale: .tensor)
            <= accumulationBound, "\(dtype) m \(m) n \(n) r \(r) transpose_w \(transposeW)")
      }
    }
  }

  @Test func attentionAndItsGradientMatchInterpreter() throws {
    // (batch, heads, groups, rows, keys, width): grouped and not, one row (decoding: by chunks of
    // 128 keys, merged; 64-wide heads in groups of up to 4 on their own path), a long cache, odd
    // head widths; the mask is random, so some rows (and some chunks) see no key at all.
    for (batch, heads, groups, rows, keys, width) in [
      (1, 1, 1, 1, 1, 1), (2, 4, 2, 3, 7, 5), (1, 9, 3, 33, 33, 64), (1, 3, 3, 3, 129, 64),
      (3, 2, 1, 7, 3, 33), (2, 9, 3, 1, 257, 64), (1, 10, 2, 1, 300, 64), (3, 4, 4, 1, 130, 16),
    ] {
      let graph = try attentionAndGradient(
        batch: batch, heads: heads, groups: groups, rows: rows, keys: keys, width: width,
        maskShape: [batch, 1, rows, keys], constantMask: false)
      #expect(
        try compareWithInterpreter(graph, intLimit: 2, scale: .tensor) <= accumulationBound,
        "\(batch) x \(heads)/\(groups) x \(rows) x \(keys) x \(width)")
    }
  }

  /// Causal masks over more rows than one 32-row block: each block's products, softmax and
  /// gradient stop at its diagonal (the last block a partial one), a prompt of `rows` tokens after
  /// `offset` cached ones; checked against the interpreter, forward and gradient.
  @Test func causalAttentionByRowBlocksMatchesInterpreter() throws {
    for (batch, heads, groups, rows, offset, width) in [
      (2, 4, 2, 129, 0, 16), (1, 3, 1, 64, 0, 33), (1, 2, 2, 70, 30, 8),
    ] {
      let keys = offset + rows
      let graph = try attentionAndGradient(
        batch: batch, heads: heads, groups: groups, rows: rows, keys: keys, width: width,
        maskShape: [1, 1, rows, keys], constantMask: true)
      let causal = (0..<(rows * keys)).map { Int32($0 % keys <= offset + $0 / keys ? 1 : 0) }
      #expect(
        try compareWithInterpreter(
          graph, constants: ["mask": HostTensor(shape: [1, 1, rows, keys], ints: causal)],
          scale: .tensor) <= accumulationBound,
        "\(batch) x \(heads)/\(groups) x \(rows) after \(offset) x \(width)")
    }
  }

  @Test func attentionOverAPartlyFilledCacheMatchesInterpreter() throws {
    // Decoding over a KV cache: batch row b holds filled[b] keys (the slots after them hold stale
    // values), and the query rows are its last `rows` tokens, each seeing the slots up to its
    // own. The kernel's softmax stops at the last filled slot of the (batch, head); the reference
    // interpreter skips every masked slot.
    for (heads, groups, rows, keys, width, filled) in [
      (9, 3, 1, 256, 64, [17]), (9, 3, 1, 64, 64, [1, 40, 64]), (4, 2, 5, 48, 33, [5, 30]),
      (8, 2, 1, 300, 64, [129, 300, 1, 128]), (10, 2, 1, 200, 64, [150]), (4, 4, 1, 140, 16, [140]),
      (9, 3, 16, 300, 64, [16]), (2, 1, 3, 7, 5, [3, 7, 4]),
    ] {
      let batch = filled.count
      let b = GraphBuilder(name: "attention")
      let q = try b.input(name: "q", shape: [batch, heads, rows, width])
      let k = try b.input(name: "k", shape: [batch, groups, keys, width])
      let v = try b.input(name: "v", shape: [batch, groups, keys, width])
      let mask = try b.constant(name: "mask", shape: [batch, 1, rows, keys], dtype: .i32)
      let out = try b.emit(
        .attention(scale: 0.125),
        [.value(q.value), .value(k.value), .value(v.value), .value(mask.value)])[0]
      let graph = try b.finish(outputs: [out])
      var seen = [Int32](repeating: 0, count: batch * rows * keys)
      for row in 0..<batch {
        for s in 0..<rows {
          for t in 0..<(filled[row] - rows + s + 1) { seen[(row * rows + s) * keys + t] = 1 }
        }
      }
      let constants = ["mask": HostTensor(shape: [batch, 1, rows, keys], ints: seen)]
      // The host's path (AVX-512 for one row of width 64) and the portable loops.
      for target in [Target.host, Target(isa: .portable)] {
        let oneRow = rows == 1 && width == 64 && heads / groups <= 4 && target.isa >= .avx512
        #expect(KernelPlan(graph, target: target).entries[0].isa == (oneRow ? .avx512 : nil))
        #expect(
          try compareWithInterpreter(graph, constants: constants, scale: .tensor, target: target)
            <= accumulationBound,
          "\(heads)/\(groups) x \(rows) x \(keys) filled \(filled) \(target.isa)")
      }
    }
  }

  @Test func resetStateEmptiesTheCachesOfAPrefill() throws {
    // A decoding prefill, then a step that writes the next cache slot, then a reset: the caches
    // are those of a newly compiled executable again, and the prefill gives the same bits.
    let forward = try Llama.trace(tinyLlama, batch: 1, sequence: 3)
    let prefillGraph = try Pipeline(parsing: "fuse,decode{context=8}").run(forward)
    let stepGraph = try Pipeline(parsing: "fuse,decode{context=8}").run(
      try Llama.trace(tinyLlama, batch: 1, sequence: 1))
    let weights = try randomWeights(prefillGraph, seed: 5)
    func inputs(_ tokens: [Int32], slot: Int) -> [String: HostTensor] {
      let count = tokens.count
      var mask = [Int32](repeating: 0, count: count * 8)
      for t in 0..<count { for s in 0...(slot + t) { mask[t * 8 + s] = 1 } }
      return [
        "tokens": HostTensor(shape: [1, count], ints: tokens),
        "positions": HostTensor(shape: [1, count], ints: (0..<count).map { Int32(slot + $0) }),
        "cache_start": HostTensor(shape: [4], ints: [0, 0, Int32(slot), 0]),
        "key_mask": HostTensor(shape: [1, count, 8], ints: mask),
      ]
    }
    let caches = prefillGraph.declarations.filter { $0.kind == .state }.map(\.name)
    #expect(caches.count == 4)
    let fresh = try Executable(prefillGraph, constants: weights)
    let prefill = try Executable(prefillGraph, constants: weights)
    let step = try Executable(stepGraph, constants: weights)
    let first = try prefill.run(inputs: inputs([5, 9, 2], slot: 0))[0]
    try step.copyState(from: prefill)
    _ = try step.run(inputs: inputs([7], slot: 3))
    try prefill.copyState(from: step)
    let written = try caches.map { try prefill.value(named: $0).floats() }
    #expect(written != (try caches.map { try fresh.value(named: $0).floats() }))
    prefill.resetState()
    for name in caches {
      #expect(try prefill.value(named: name).data == fresh.value(named: name).data, "\(name)")
    }
    let again = try prefill.run(inputs: inputs([5, 9, 2], slot: 0))[0]
    #expect(again.data == first.data)
  }

  @Test func fusedTrainStepMatchesTheUnfusedOne() throws {
    // The 2-layer GQA Llama with LoRA on every attention projection, trained one step: the fused
    // executable's loss and gradients against the unfused executable's (both checked against
    // the interpreter elsewhere), with q8_0 / q4_1 weights in places.
    let trace = { () throws -> Graph in
      try Llama.trace(tinyLlama, batch: 2, sequence: 7, loss: true) { name in
        name.hasSuffix("attn_q.weight") ? .q8_0 : name.hasSuffix("ffn_up.weight") ? .q4_1 : nil
      }
    }
    let lora = "lora{rank=4,alpha=8,targets=layers.*.attn.{q,k,v,o},seed=2},freeze"
    let plain = try Pipeline(parsing: lora + ",autodiff{loss=loss},dce").run(trace())
    let fused = try Pipeline(parsing: lora + ",fuse,autodiff{loss=loss},dce").run(trace())
    #expect(Fuse.census(fused)["lora_linear"] == 8)
    let weights = try randomWeights(plain, seed: 11)
    let inputs: [String: HostTensor] = [
      "tokens": randomTensor(TensorType(.i32, [2, 7]), seed: 3, intLimit: 67).host,
      "positions": HostTensor(shape: [2, 7], ints: (0..<14).map { Int32($0 % 7) }),
      "targets": HostTensor(
        shape: [2, 7], ints: (0..<14).map { $0 == 3 ? -100 : Int32(($0 * 5) % 67) }),
      "weights": HostTensor(shape: [2, 7], floats: (0..<14).map { $0 % 4 == 0 ? 0 : 1 }),
    ]
    var results: [[HostTensor]] = []
    for graph in [plain, fused] {
      let executable = try Executable(graph, constants: weights)
      // Non-zero B so the branch contributes.
      for declaration in graph.declarations where declaration.name.hasSuffix("lora_b") {
        let type = graph.type(of: declaration.value)
        try executable.set(
          declaration.name,
          HostTensor(
            shape: type.shape,
            floats: (0..<type.elementCount).map { Float(($0 * 7) % 13) * 0.01 - 0.06 }))
      }
      results.append(try executable.run(inputs: inputs))
    }
    #expect(results[0].count == results[1].count)
    for (index, (a, b)) in zip(results[0], results[1]).enumerated() {
      let (x, y) = (a.floats(), b.floats())
      let norm = y.map { Double($0 * $0) }.reduce(0, +).squareRoot()
      let difference = zip(x, y).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +).squareRoot()
      #expect(difference <= 1e-4 * max(norm, 1e-3), "output \(index)")
    }
  }
}

extension RuntimeSuite {
  @Test func switchingTheAdapterOffGivesTheBaseModelBitForBit() throws {
    let trace = { () throws -> Graph in try Llama.trace(tinyLlama, batch: 1, sequence: 5) }
    let base = try Pipeline(parsing: "fuse").run(trace())
    let adapted = try Pipeline(
      parsing: "lora{rank=4,alpha=8,targets=layers.*.attn.{q,v},seed=2},fuse"
    ).run(trace())
    let half = try Pipeline(
      parsing: "lora{rank=4,alpha=4,targets=layers.*.attn.{q,v},seed=2},fuse"
    ).run(trace())
    let weights = try randomWeights(base, seed: 21)
    let inputs: [String: HostTensor] = [
      "tokens": HostTensor(shape: [1, 5], ints: [3, 1, 4, 1, 5]),
      "positions": HostTensor(shape: [1, 5], ints: [0, 1, 2, 3, 4]),
    ]
    let reference = try Executable(base, constants: weights).run(inputs: inputs)[0]
    var outputs: [[Float]] = []
    for graph in [adapted, half] {
      let executable = try Executable(graph, constants: weights)
      #expect(executable.hasAdapterSwitch)
      for declaration in graph.declarations where declaration.name.hasSuffix("lora_b") {
        let type = graph.type(of: declaration.value)
        try executable.set(
          declaration.name,
          HostTensor(
            shape: type.shape, floats: (0..<type.elementCount).map { Float($0 % 5) * 0.05 - 0.1 }))
      }
      let on = try executable.run(inputs: inputs)[0]
      executable.adapterScale = 0
      let off = try executable.run(inputs: inputs)[0]
      #expect(off.data == reference.data)
      #expect(on.data != reference.data)
      executable.adapterScale = graph == adapted ? 0.5 : 1
      outputs.append(try executable.run(inputs: inputs)[0].floats())
    }
    // Half the factor at alpha 8 is the adapter at alpha 4.
    for (a, b) in zip(outputs[0], outputs[1]) { #expect(abs(a - b) <= 1e-5 * (1 + abs(b))) }
    #expect(!(try Executable(base, constants: weights)).hasAdapterSwitch)
  }
}

extension RuntimeSuite {
  @Test func whatDependsOnlyOnConstantsRunsOnce() throws {
    // The causal mask (iota, compare) and a product of two constants are computed when the
    // executable is made; every later run reads them, whatever else the arena holds.
    let b = GraphBuilder(name: "once")
    let x = try b.input(name: "x", shape: [6, 6])
    let c = try b.constant(name: "c", shape: [6, 6])
    let rows = try b.iota(shape: [6, 6], axis: 0)
    let mask = try b.iota(shape: [6, 6], axis: 1).compare(.le, rows)
    let square = try matmul(c, c)
    let scratch = try (x * 3.0).apply(.exp)
    let y = try select(mask, matmul(scratch, square), b.fill(-1, shape: []))
    let graph = try b.finish(outputs: [y])
    let constant = HostTensor(shape: [6, 6], floats: (0..<36).map { Float($0 % 5) * 0.1 })
    let executable = try Executable(graph, constants: ["c": constant])
    let runsOnce = executable.runsOnce.map { graph.body[$0].op.mnemonic }.sorted()
    #expect(runsOnce == ["fill", "iota", "iota", "le", "matmul"])
    for seed in [UInt64(1), 2, 3] {
      let input = randomTensor(TensorType(.f32, [6, 6]), seed: seed)
      let expected = try Interpreter().run(
        graph, bindings: ["x": input, "c": DenseTensor(constant)])[0]
      let actual = try executable.run(inputs: ["x": input.host])[0]
      for (a, e) in zip(DenseTensor(actual).scalars, expected.scalars) {
        #expect(abs(a - e) <= 1e-5 * (1 + abs(e)))
      }
    }
  }
}

extension RuntimeSuite {
  @Test func aReleasedWorkspaceKeepsWhatRunsOnceAndRunsAgain() throws {
    // Wide enough that the values computed at load (mask, constant product) fill pages of
    // their own and the workspace spans many more: giving the workspace back must keep them.
    let n = 96
    let b = GraphBuilder(name: "release")
    let x = try b.input(name: "x", shape: [n, n])
    let c = try b.constant(name: "c", shape: [n, n])
    let rows = try b.iota(shape: [n, n], axis: 0)
    let mask = try b.iota(shape: [n, n], axis: 1).compare(.le, rows)
    let product = try matmul(c, c)
    let hidden = try (x * 0.5).apply(.tanh) + x
    let y = try select(mask, matmul(hidden, product), b.fill(-1, shape: []))
    let graph = try b.finish(outputs: [y])
    let constant = HostTensor(shape: [n, n], floats: (0..<(n * n)).map { Float($0 % 7) * 0.01 })
    let executable = try Executable(graph, constants: ["c": constant])
    #expect(executable.plan.persistentBytes > 4096)
    #expect(executable.plan.arenaBytes > executable.plan.persistentBytes + 3 * 4096)
    for seed in [UInt64(1), 2, 3] {
      let input = randomTensor(TensorType(.f32, [n, n]), seed: seed)
      let expected = try Interpreter().run(
        graph, bindings: ["x": input, "c": DenseTensor(constant)])[0]
      let actual = try executable.run(inputs: ["x": input.host])[0]
      executable.releaseWorkspace()
      for (a, e) in zip(DenseTensor(actual).scalars, expected.scalars) {
        #expect(abs(a - e) <= 1e-4 * (1 + abs(e)))
      }
    }
  }
}

extension RuntimeSuite {
  /// A fused chain with every node kind: operands read twice, a literal on each side, a unary
  /// literal-free function, and a leaf reshaped from another shape.
  static func chainGraphs(size: Int) throws -> (primitive: Graph, fused: Graph) {
    let b = GraphBuilder(name: "chain")
    let x = try b.input(name: "x", shape: [size])
    let y = try b.input(name: "y", shape: [size])
    let z = try b.input(name: "z", shape: [1, size])
    let chain = try (2.0 - sigmoid(x * y)) * (x + z.reshaped([size])) / 3.0
    let primitive = try b.finish(outputs: [try maximum(chain, y)])
    return (primitive, try Fuse(elementwise: true).run(primitive))
  }

  @Test func elementwiseChainsMatchTheirPrimitivesBitForBit() throws {
    for size in awkwardSizes + [40_000] {
      let (primitive, fused) = try Self.chainGraphs(size: size)
      #expect(fused.body.filter(\.op.isElementwise).count == 1, "\(Printer().print(fused))")
      #expect(fused.body.count < primitive.body.count)
      #expect(try compareWithInterpreter(fused) <= elementwiseBound, "size \(size)")
      // Same kernels per node, same rounding: the fused executable equals the unfused one.
      var inputs: [String: HostTensor] = [:]
      for (offset, input) in primitive.inputs.enumerated() {
        inputs[input.name] =
          randomTensor(primitive.type(of: input.value), seed: 40 &+ UInt64(offset)).host
      }
      let expected = try Executable(primitive).run(inputs: inputs)[0]
      let actual = try Executable(fused).run(inputs: inputs)[0]
      #expect(
        actual.floats().map(\.bitPattern) == expected.floats().map(\.bitPattern), "size \(size)")
    }
  }
}

/// `attention` and `attention_grad` (scale 0.3) of q [B, H, S, D], k, v [B, G, T, D], a mask (an
/// input, or a constant named "mask") and an upstream gradient g; outputs: out, dq, dk, dv.
func attentionAndGradient(
  batch: Int, heads: Int, groups: Int, rows: Int, keys: Int, width: Int, maskShape: [Int],
  constantMask: Bool
) throws -> Graph {
  let b = GraphBuilder(name: "attention")
  let q = try b.input(name: "q", shape: [batch, heads, rows, width])
  let k = try b.input(name: "k", shape: [batch, groups, keys, width])
  let v = try b.input(name: "v", shape: [batch, groups, keys, width])
  let mask =
    constantMask
    ? try b.constant(name: "mask", shape: maskShape, dtype: .i32)
    : try b.input(name: "mask", shape: maskShape, dtype: .i32)
  let g = try b.input(name: "g", shape: [batch, heads, rows, width])
  let operands: [Operand] = [.value(q.value), .value(k.value), .value(v.value), .value(mask.value)]
  let out = try b.emit(.attention(scale: 0.3), operands)[0]
  let grads = try b.emit(.attentionGrad(scale: 0.3), operands + [.value(g.value)])
  return try b.finish(outputs: [out] + grads)
}

extension RuntimeSuite {
  /// exp, sigmoid and silu (vectorised, `lc_exp`) at the ends of float's range, alone and inside
  /// a fused chain: within 2 ulp of the f64 value where it is a normal float, inf past e^88.72,
  /// 0 below e^-87.34, NaN for NaN; the chain computes in place in its block buffers.
  @Test func exponentialsAtTheEndsOfTheRange() throws {
    let values: [Float] = [
      -.infinity, -200, -100, -88, -87.3, -20, -1, -0.5, 0, 1e-7, 0.5, 1, 20, 88, 88.7, 88.8, 100,
      .infinity, .nan,
    ]
    let count = values.count
    let oracles: [(String, (Tensor) throws -> Tensor, (Double) -> Double)] = [
      ("exp", { try IR.exp($0) }, { Foundation.exp($0) }),
      ("sigmoid", { try IR.sigmoid($0) }, { 1 / (1 + Foundation.exp(-$0)) }),
      ("silu", { try IR.silu($0) }, { $0 / (1 + Foundation.exp(-$0)) }),
      // A fused chain: the unary op reads and writes the same block buffer.
      ("chain", { try IR.sigmoid($0 * 2.0) * $0 }, { 2 * $0 / 2 / (1 + Foundation.exp(-2 * $0)) }),
    ]
    for (name, op, oracle) in oracles {
      let b = GraphBuilder(name: name)
      let x = try b.input(name: "x", shape: [count])
      var graph = try b.finish(outputs: [try op(x)])
      if name == "chain" {
        graph = try Fuse(elementwise: true).run(graph).compacted()
        let fused = graph.body.contains { if case .elementwise = $0.op { true } else { false } }
        #expect(fused, "the chain is one elementwise instruction")
      }
      let out = try Executable(graph).run(inputs: ["x": HostTensor(shape: [count], floats: values)])
      for (value, got) in zip(values, out[0].floats()) {
        let want = oracle(Double(value))
        let context = "\(name)(\(value)) = \(got), want \(want)"
        if want.isNaN {
          #expect(got.isNaN, "\(context)")
        } else if abs(want) < Double(Float.leastNormalMagnitude) {
          // Below the normal range lc_exp flushes to zero, or (sigmoid's clamp) ~e^-88.
          #expect(abs(Double(got)) < 1e-37, "\(context)")
        } else if want.isInfinite || abs(want) > Double(Float.greatestFiniteMagnitude) {
          #expect(got.isInfinite && (got > 0) == (want > 0), "\(context)")
        } else {
          #expect(abs(Double(got) - want) <= 2 * Double(Float(want).ulp), "\(context)")
        }
      }
    }
  }
}
