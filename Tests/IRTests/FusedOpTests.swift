import Foundation
import IR
import TestSupport
import Testing

/// The interpreter's fused ops against hand computation and against the primitive sequences the
/// `fuse` pass replaces with them.
private func evaluate(_ op: Op, _ operands: [DenseTensor]) throws -> [DenseTensor] {
  try Interpreter(precision: .f64).evaluate(op, operands.map { .tensor($0) })
}

@Test func rmsNormByHand() throws {
  // Row [3, 4]: mean square 12.5, r = 1/sqrt(12.5 + 0.5) = 1/sqrt(13).
  let x = DenseTensor(shape: [1, 2], floats: [3, 4])
  let w = DenseTensor(shape: [2], floats: [2, -1])
  let y = try evaluate(.rmsNorm(epsilon: 0.5), [x, w])[0]
  let r = 1 / 13.0.squareRoot()
  #expect(close(y.scalars, [6 * r, -4 * r]))
  // Gradient for g = [1, 0]: r g w - x r^3 mean(g w x) = [2r, 0] - [3, 4] r^3 (2 * 3) / 2.
  let g = DenseTensor(shape: [1, 2], floats: [1, 0])
  let dx = try evaluate(.rmsNormGrad(epsilon: 0.5), [x, w, g])[0]
  let c = r * r * r * 3
  #expect(close(dx.scalars, [2 * r - 3 * c, -4 * c]))
}

@Test func swigluByHand() throws {
  let gate = DenseTensor(shape: [3], floats: [0, 1, -2])
  let up = DenseTensor(shape: [3], floats: [5, 2, 3])
  let s = [0.5, 1 / (1 + exp(-1.0)), 1 / (1 + exp(2.0))]
  let y = try evaluate(.swiglu, [gate, up])[0]
  #expect(close(y.scalars, [0, 1 * s[1] * 2, -2 * s[2] * 3]))
  let g = DenseTensor(shape: [3], floats: [1, 1, 2])
  let grads = try evaluate(.swigluGrad, [gate, up, g])
  #expect(grads.count == 2)
  var dGate: [Double] = []
  var dUp: [Double] = []
  for i in 0..<3 {
    let (a, u, d): (Double, Double, Double) = (gate.scalars[i], up.scalars[i], g.scalars[i])
    let slope: Double = s[i] * (1 + a * (1 - s[i]))
    dGate.append(d * u * slope)
    dUp.append(d * a * s[i])
  }
  #expect(close(grads[0].scalars, dGate))
  #expect(close(grads[1].scalars, dUp))
}

@Test func crossEntropyByHandWithIgnoredRows() throws {
  // Row 0 [0, ln 3]: logsumexp = ln 4; target 1 -> ln 4 - ln 3. Row 1 ignored (-100), row 2
  // target 3 is outside the vocabulary of 2: ignored too.
  let logits = DenseTensor(shape: [3, 2], floats: [0, Float(log(3.0)), 7, -7, 1, 2])
  let targets = DenseTensor(shape: [3], ints: [1, -100, 3])
  let loss = try evaluate(.crossEntropy, [logits, targets])[0]
  #expect(loss.shape == [3])
  #expect(close(loss.scalars, [log(4.0) - Double(Float(log(3.0))), 0, 0], 1e-7))
  let g = DenseTensor(shape: [3], floats: [2, 5, 5])
  let grad = try evaluate(.crossEntropyGrad, [logits, targets, g])[0]
  // softmax of row 0 is [1/4, 3/4]; minus onehot(1), times 2.
  #expect(close(grad.scalars, [0.5, -0.5, 0, 0, 0, 0], 1e-7))
}

@Test func crossEntropyEqualsTheOneHotPattern() throws {
  // The primitive form the Llama tracer emits: -sum(log_softmax(z) * onehot(t)).
  let b = GraphBuilder(name: "ce")
  let z = try b.input(name: "z", shape: [2, 3, 5])
  let t = try b.input(name: "t", shape: [2, 3], dtype: .i32)
  let vocabulary = try b.iota(shape: [2, 3, 5], axis: 2)
  let oneHot = try vocabulary.compare(.eq, t.reshaped([2, 3, 1])).cast(to: .f32)
  let picked = try (logSoftmax(z) * oneHot).sum(axes: [2])
  let fused = try b.emit(.crossEntropy, [.value(z.value), .value(t.value)])[0]
  let graph = try b.finish(outputs: [picked, fused])
  var generator = SplitMix64(seed: 3)
  let zValues = (0..<30).map { _ in Float(generator.nextUnit() * 8 - 4) }
  let outputs = try Interpreter(precision: .f64).run(
    graph,
    bindings: [
      "z": DenseTensor(shape: [2, 3, 5], floats: zValues),
      "t": DenseTensor(shape: [2, 3], ints: [0, 4, 2, -1, 3, 9]),
    ])
  #expect(close(outputs[0].scalars.map { -$0 }, outputs[1].scalars, 1e-12))
}

@Test func loraLinearByHand() throws {
  // x [1, 2] = [1, 2]; W stored [out=2, in=2]; A [2, 1]; B [1, 2]; scale 3.
  let x = DenseTensor(shape: [1, 2], floats: [1, 2])
  let w = DenseTensor(shape: [2, 2], floats: [1, 0, 1, 1])
  let a = DenseTensor(shape: [2, 1], floats: [0.5, -1])
  let b = DenseTensor(shape: [1, 2], floats: [2, 4])
  let results = try evaluate(.loraLinear(scale: 3, transposeW: true), [x, w, a, b])
  // xa = 0.5 - 2 = -1.5; x W^T = [1, 3]; y = [1, 3] + 3 * -1.5 * [2, 4] = [-8, -15].
  #expect(results[0].scalars == [-1.5])
  #expect(results[1].scalars == [-8, -15])
  #expect(results[1].shape == [1, 2])
}

@Test func fusedOpTypeErrorsNameTheOp() throws {
  let x = TensorType(.f32, [2, 3])
  func message(_ op: Op, _ types: [TensorType]) -> String {
    do {
      _ = try op.resultTypes(types.map { .tensor($0) })
      return ""
    } catch {
      return error.description
    }
  }
  #expect(
    message(.rmsNorm(epsilon: 1e-5), [x, TensorType(.f32, [2])])
      == "rms_norm: expected the scale f32[3] for f32[2,3], got f32[2]")
  #expect(
    message(.rmsNorm(epsilon: -1), [x, TensorType(.f32, [3])])
      == "rms_norm: eps must be a finite number >= 0, got -1.0")
  #expect(
    message(.crossEntropy, [x, TensorType(.i32, [3])])
      == "cross_entropy: targets must be i32[2] for f32[2,3], got i32[3]")
  #expect(
    message(.swiglu, [x, TensorType(.f32, [3])])
      == "swiglu: operands must all be f32[2,3]: f32[2,3], f32[3]")
  #expect(
    message(
      .loraLinear(scale: 1, transposeW: true),
      [x, TensorType(.q4_1, [4, 32]), TensorType(.f32, [3, 2]), TensorType(.f32, [2, 4])])
      == "lora_linear: contraction mismatch: f32[2,3] x q4_1[4,32]")
  #expect(
    message(
      .loraLinear(scale: 1, transposeW: false),
      [x, TensorType(.f32, [3, 4]), TensorType(.f32, [3, 2]), TensorType(.f32, [3, 4])])
      == "lora_linear: expected A f32[3, r] and B f32[r, 4], got f32[3,2] and f32[3,4]")
}
