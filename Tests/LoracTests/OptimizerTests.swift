import Foundation
import IR
import Runtime
import Testing

/// A graph whose "gradient" output is its input `g` (times 1), for a parameter `p` of `count`
/// elements: it lets a test hand AdamW any gradient it likes.
private func gradientEcho(count: Int) throws -> Executable {
  let b = GraphBuilder(name: "echo")
  let g = try b.input(name: "g", shape: [count])
  let p = try b.parameter(
    name: "p", shape: [count], initializer: .uniform(low: -1, high: 1), seed: 3)
  let graph = try b.finish(outputs: [try p.sum(), try g * 1.0])
  return try Executable(graph)
}

/// PyTorch's AdamW step in double precision: the oracle.
private struct ReferenceAdamW {
  var m: [Double]
  var v: [Double]
  var step = 0
  let learningRate = 0.01
  let beta1 = 0.9
  let beta2 = 0.999
  let epsilon = 1e-8
  let weightDecay = 0.1
  let maxNorm: Double

  init(count: Int, maxNorm: Double) {
    m = [Double](repeating: 0, count: count)
    v = m
    self.maxNorm = maxNorm
  }

  /// Updates `parameters` with `gradient`; returns the gradient's norm before clipping.
  mutating func update(_ parameters: inout [Double], _ gradient: [Double]) -> Double {
    step += 1
    let norm = gradient.map { $0 * $0 }.reduce(0, +).squareRoot()
    let scale = norm > maxNorm ? maxNorm / (norm + 1e-6) : 1
    for i in parameters.indices {
      let g = gradient[i] * scale
      m[i] = beta1 * m[i] + (1 - beta1) * g
      v[i] = beta2 * v[i] + (1 - beta2) * g * g
      let mHat = m[i] / (1 - pow(beta1, Double(step)))
      let vHat = v[i] / (1 - pow(beta2, Double(step)))
      parameters[i] -=
        learningRate * (weightDecay * parameters[i] + mHat / (vHat.squareRoot() + epsilon))
    }
    return norm
  }
}

@Test func adamWAccumulationStepsWithTheMeanGradientClippedAsAWhole() throws {
  let count = 37
  let executable = try gradientEcho(count: count)
  let optimizer = try AdamW(
    executable, parameters: ["p"], gradientOutputs: [1], learningRate: 0.01, weightDecay: 0.1,
    maxGradientNorm: 1.0)
  var reference = ReferenceAdamW(count: count, maxNorm: 1.0)
  var expected = try executable.value(named: "p").floats().map(Double.init)
  var generator = SplitMix64(seed: 11)
  for step in 1...3 {
    // Three micro-batches; their mean's norm is about 1.3 (clipped) on step 1 and 0.4 after.
    let size = step == 1 ? 0.8 : 0.12
    let micro = (0..<3).map { _ in
      (0..<count).map { _ in Float((generator.nextUnit() - 0.3) * size) }
    }
    for gradient in micro {
      _ = try executable.run(inputs: ["g": HostTensor(shape: [count], floats: gradient)])
      optimizer.accumulate()
    }
    #expect(optimizer.accumulated == 3)
    let norm = optimizer.update()
    #expect(optimizer.accumulated == 0)
    let mean = (0..<count).map { i in micro.map { Double($0[i]) }.reduce(0, +) / 3 }
    let expectedNorm = reference.update(&expected, mean)
    #expect(abs(norm - expectedNorm) <= 1e-6 * expectedNorm, "step \(step)")
    if step == 1 { #expect(expectedNorm > 1) } else { #expect(expectedNorm < 1) }
    let actual = try executable.value(named: "p").floats()
    let worst = zip(actual, expected).map { abs(Double($0) - $1) }.max() ?? 0
    #expect(worst <= 1e-6, "step \(step): worst difference \(worst)")
  }
  // Without accumulate() the update uses the last run's gradient, as before.
  let last = (0..<count).map { Float($0) / Float(count) - 0.5 }
  _ = try executable.run(inputs: ["g": HostTensor(shape: [count], floats: last)])
  let norm = optimizer.update()
  let expectedNorm = reference.update(&expected, last.map(Double.init))
  #expect(abs(norm - expectedNorm) <= 1e-6 * expectedNorm)
  let actual = try executable.value(named: "p").floats()
  #expect((zip(actual, expected).map { abs(Double($0) - $1) }.max() ?? 1) <= 1e-6)
}

@Test func adamWMomentsAndStepRestoreIntoAFreshOptimizer() throws {
  let count = 10
  let gradients = (0..<4).map { step in
    (0..<count).map { Float(sin(Double($0 * 7 + step))) }
  }
  func optimizer(_ executable: Executable) throws -> AdamW {
    try AdamW(
      executable, parameters: ["p"], gradientOutputs: [1], learningRate: 0.01, weightDecay: 0.1)
  }
  func step(_ executable: Executable, _ optimizer: AdamW, _ gradient: [Float]) throws {
    _ = try executable.run(inputs: ["g": HostTensor(shape: [count], floats: gradient)])
    optimizer.update()
  }
  let straight = try gradientEcho(count: count)
  let first = try optimizer(straight)
  for gradient in gradients { try step(straight, first, gradient) }

  let interrupted = try gradientEcho(count: count)
  let before = try optimizer(interrupted)
  for gradient in gradients.prefix(2) { try step(interrupted, before, gradient) }
  let moments = try #require(before.moments(of: "p"))
  #expect(moments.first.count == count && moments.second.allSatisfy { $0 > 0 })
  #expect(before.moments(of: "q") == nil)
  // A fresh executable and optimizer given the saved parameter, moments and step.
  let resumed = try gradientEcho(count: count)
  try resumed.set("p", try interrupted.value(named: "p"))
  let after = try optimizer(resumed)
  try after.setMoments(of: "p", first: moments.first, second: moments.second)
  after.step = before.step
  for gradient in gradients.dropFirst(2) { try step(resumed, after, gradient) }
  #expect(try resumed.value(named: "p") == straight.value(named: "p"))
  #expect(after.step == 4)

  #expect(throws: RuntimeError.self) {
    try after.setMoments(of: "p", first: [1], second: [1])
  }
  do {
    try after.setMoments(of: "q", first: [], second: [])
    Issue.record("no error for an unknown parameter")
  } catch {
    #expect(error.message == "adamw: no parameter named 'q'")
  }
}
