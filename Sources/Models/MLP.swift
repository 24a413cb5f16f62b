import IR

/// The multilayer perceptron of the classic LoRA tutorials, traced with the same API as the real
/// models.
///
/// Features `2-32-32-2` by default: linear layers `fc1`, `fc2`, `fc3` with ReLU between them, each
/// weight stored `[out, in]` (torch's and GGUF's layout, applied with `transpose_b`) and
/// initialised as torch's `nn.Linear` does, `U(-1/sqrt(in), 1/sqrt(in))` for weight and bias.
/// The loss is the tutorials' cross-entropy against one-hot labels:
/// `loss = -sum(log_softmax(logits) * labels) / batch`.
public enum MLP {
  /// The XOR data set of the tutorials: inputs `[[-1,-1],[-1,1],[1,-1],[1,1]]`, one-hot labels
  /// (class 1 where the signs agree).
  public static let xorInputs: [Float] = [-1, -1, -1, 1, 1, -1, 1, 1]
  public static let xorLabels: [Float] = [0, 1, 1, 0, 1, 0, 0, 1]

  /// Traces the MLP into a graph `mlp(x: f32[batch, f0], labels: f32[batch, fN]) -> (loss, logits)`.
  ///
  /// - Parameters:
  ///   - batch: The number of examples per run.
  ///   - features: Layer widths, input first; at least two entries.
  ///   - seed: The base seed of the parameters' initializers (layer `k` uses `seed + 2k` for
  ///     its weight and `seed + 2k + 1` for its bias).
  public static func trace(
    batch: Int = 4, features: [Int] = [2, 32, 32, 2], seed: UInt64 = 0
  ) throws(TraceError) -> Graph {
    guard features.count >= 2 else {
      throw TraceError(message: "mlp: expected at least two feature sizes, got \(features)")
    }
    let builder = GraphBuilder(name: "mlp")
    var h = try builder.input(name: "x", shape: [batch, features[0]])
    let labels = try builder.input(name: "labels", shape: [batch, features[features.count - 1]])
    for layer in 0..<(features.count - 1) {
      let (fanIn, fanOut) = (features[layer], features[layer + 1])
      let bound = 1.0 / Double(fanIn).squareRoot()
      let layerSeed = seed &+ UInt64(2 * layer)
      let name = "fc\(layer + 1)"
      let (weight, bias) = try builder.scope(name) { () throws(TraceError) in
        (
          try builder.parameter(
            name: "weight", shape: [fanOut, fanIn],
            initializer: .uniform(low: -bound, high: bound), seed: layerSeed),
          try builder.parameter(
            name: "bias", shape: [fanOut], initializer: .uniform(low: -bound, high: bound),
            seed: layerSeed &+ 1)
        )
      }
      h = try matmul(h, weight, transposeB: true).named(name) + bias
      if layer < features.count - 2 { h = try relu(h) }
    }
    let logits = try h.named("logits")
    let loss = try (-(logSoftmax(logits) * labels).sum() / Double(batch)).named("loss")
    return try builder.finish(outputs: [loss, logits])
  }
}
