import IR
import Models

/// The coefficients of the PPO objective (the tutorial's names in brackets).
public struct PPOCoefficients: Sendable, Hashable {
  /// The ratio's clip range `[1 - clip, 1 + clip]` (`clip_coef`).
  public var clip: Double
  /// The value loss's weight (`vf_coef`).
  public var valueFunction: Double
  /// The entropy bonus's weight (`ent_coef`).
  public var entropy: Double
  /// The KL penalty's weight (`kl_coef`).
  public var kl: Double

  public init(clip: Double = 0.2, valueFunction: Double = 0.15, entropy: Double = 0.001, kl: Double)
  {
    self.clip = clip
    self.valueFunction = valueFunction
    self.entropy = entropy
    self.kl = kl
  }
}

/// The graphs of RLHF traced into IR: the value head on the final normalised residual stream,
/// the rollout's evaluation and the PPO objective, all on one Llama forward pass.
///
/// Positions: a row holds `prefix` prompt tokens then `generated` sampled ones; the logits at
/// positions `prefix - 1 ..< prefix + generated - 1` predict the sampled tokens, and the values
/// at the same positions are the tutorial's `values[:, prefix_len - 1 : -1]`.
public enum RLHFGraphs {
  /// The value head's parameters in lorac's layout (`[in, out]` weights) with their PyTorch
  /// initialisation (`nn.Linear`: weight kaiming-uniform with a = sqrt 5, bias U(+-1/sqrt(in))).
  public static func valueHeadParameters(dimension d: Int) -> [(
    name: String, shape: [Int], initializer: Initializer
  )] {
    let (bound1, bound2) = (1 / Double(d).squareRoot(), 1 / Double(4 * d).squareRoot())
    return [
      ("value_head.0.weight", [d, 4 * d], .kaimingUniformDefault),
      ("value_head.0.bias", [4 * d], .uniform(low: -bound1, high: bound1)),
      ("value_head.2.weight", [4 * d, 1], .kaimingUniformDefault),
      ("value_head.2.bias", [1], .uniform(low: -bound2, high: bound2)),
    ]
  }

  /// The trainable parameters of an RLHF step: the adapter's and the value head's.
  public static let trainable = "{*.lora_{a,b},value_head.*}"

  /// `value_head(normalized)[:, prefix - 1 ..< sequence - 1]`: Linear(d, 4d), ReLU, Linear(4d, 1)
  /// on the final residual stream `x` normalised as the model's final norm does it without its
  /// weight and bias (TransformerLens's `ln_final.hook_normalized`; TransformerLens folds them into
  /// the unembedding): `x / sqrt(mean(x^2) + eps)` after an RMSNorm (Llama), `c / sqrt(mean(c^2) +
  /// eps)` with `c = x - mean(x)` after a LayerNorm (GPT-2, GPT-NeoX); as `[batch, generated]`,
  /// named "values".
  static func values(
    _ residual: Tensor, prefix: Int, config: LlamaConfig, seed: UInt64
  ) throws(TraceError) -> Tensor {
    let b = residual.builder
    let (batch, sequence, d) = (residual.shape[0], residual.shape[1], residual.shape[2])
    let generated = sequence - prefix
    let centred =
      config.architecture == .llama
      ? residual : try residual - residual.mean(axes: [-1], keepDims: true)
    let meanSquare = try (centred * centred).mean(axes: [-1], keepDims: true)
    let normalized = try (centred * rsqrt(meanSquare + config.normEpsilon))
      .named("value_head.input")
    let predicting = try normalized.slice(
      start: [0, prefix - 1, 0], end: [batch, sequence - 1, d]
    ).reshaped([batch * generated, d])
    var parameters: [String: Tensor] = [:]
    try b.atTopLevel { () throws(TraceError) in
      for (index, parameter) in valueHeadParameters(dimension: d).enumerated() {
        parameters[parameter.name] = try b.parameter(
          name: parameter.name, shape: parameter.shape, initializer: parameter.initializer,
          seed: seed &+ UInt64(index))
      }
    }
    func get(_ name: String) throws(TraceError) -> Tensor {
      guard let tensor = parameters[name] else { throw TraceError(message: "no \(name)") }
      return tensor
    }
    let hidden = try relu(
      matmul(predicting, get("value_head.0.weight")) + get("value_head.0.bias"))
    let value = try matmul(hidden, get("value_head.2.weight")) + get("value_head.2.bias")
    return try value.reshaped([batch, generated]).named("values")
  }

  /// The positions whose logits predict the sampled tokens: the only ones the graphs compute
  /// the head at (`Llama.trace`'s `logitPositions`).
  static func predicting(prefix: Int, generated: Int) -> Range<Int> {
    (prefix - 1)..<(prefix + generated - 1)
  }

  /// `x[b, t, indices[b, t]]` of `x: [batch, positions, vocab]`: one gather from the flattened
  /// values (its gradient one scatter), never a one-hot mask as large as `x`.
  static func pick(_ x: Tensor, _ indices: Tensor) throws(TraceError) -> Tensor {
    let b = x.builder
    let (batch, positions, vocabulary) = (x.shape[0], x.shape[1], x.shape[2])
    let shape = [batch, positions]
    let row = try b.iota(shape: shape, axis: 0) * Double(positions) + b.iota(shape: shape, axis: 1)
    let flat = try row * Double(vocabulary) + indices
    return try gather(x.reshaped([batch * positions * vocabulary, 1]), flat, axis: 0)
      .reshaped(shape)
  }

  /// The rollout's evaluation: outputs `log_probs: f32[batch, generated, vocab]` (log-softmax of
  /// the predicting logits) and `values: f32[batch, generated]`.
  public static func evaluation(
    _ config: LlamaConfig, batch: Int, prefix: Int, generated: Int, valueHeadSeed: UInt64,
    weightType: @escaping (String) -> DType?
  ) throws(TraceError) -> Graph {
    try checkShape(prefix: prefix, generated: generated)
    return try Llama.trace(
      config, batch: batch, sequence: prefix + generated, weightType: weightType,
      logitPositions: predicting(prefix: prefix, generated: generated)
    ) { _, residual, logits throws(TraceError) in
      let logProbabilities = try logSoftmax(logits).named("log_probs")
      let values = try values(residual, prefix: prefix, config: config, seed: valueHeadSeed)
      return [logProbabilities, values]
    }
  }

  /// The PPO objective of one minibatch as a loss to minimise, `loss = -J`.
  ///
  /// `J = surrogate - value_loss + entropy_bonus - kl_penalty` (rlhf.md), every mean taken over
  /// the generated positions weighted by `mask` and divided by `count`:
  /// ```
  /// A'      = (A - advantage_mean) / (advantage_std + 1e-8)
  /// ratio   = exp(log p(token) - old_logprobs)
  /// surrogate     = mean(min(ratio A', clip(ratio, 1 - c, 1 + c) A'))
  /// value_loss    = 0.5 vf_coef mean((V - returns)^2)
  /// entropy_bonus = ent_coef mean(-sum_v p log p)
  /// kl_penalty    = kl_coef mean(sum_v p (log p - reference_logprobs))
  /// ```
  /// The minibatch's statistics are inputs, computed on the host over the whole minibatch:
  /// `count` (the mask's sum), `advantage_mean` and `advantage_std` (the masked mean and the
  /// standard deviation with Bessel's correction). A data-parallel run evaluates each rank's share
  /// of a minibatch with the whole minibatch's statistics, so the ranks' objectives (and their
  /// gradients) add up to the whole minibatch's.
  ///
  /// Inputs: `tokens`, `positions` (i32 `[batch, sequence]`), `mask`, `old_logprobs`,
  /// `advantages`, `returns` (f32 `[batch, generated]`), `reference_logprobs`
  /// (f32 `[batch, generated, vocab]`), `count`, `advantage_mean`, `advantage_std` (f32 `[]`).
  /// Outputs: `loss`, `surrogate`, `value_loss`,
  /// `entropy_bonus`, `kl_penalty`, `entropy`, `kl`, `clipfrac` (all f32[]).
  public static func objective(
    _ config: LlamaConfig, batch: Int, prefix: Int, generated: Int,
    coefficients: PPOCoefficients, valueHeadSeed: UInt64,
    weightType: @escaping (String) -> DType?
  ) throws(TraceError) -> Graph {
    try checkShape(prefix: prefix, generated: generated)
    let c = coefficients
    let sequence = prefix + generated
    let vocabulary = config.vocabularySize
    return try Llama.trace(
      config, batch: batch, sequence: sequence, weightType: weightType,
      logitPositions: predicting(prefix: prefix, generated: generated)
    ) { tokens, residual, logits throws(TraceError) in
      let b = logits.builder
      let shape = [batch, generated]
      let mask = try b.input(name: "mask", shape: shape)
      let old = try b.input(name: "old_logprobs", shape: shape)
      let advantages = try b.input(name: "advantages", shape: shape)
      let returns = try b.input(name: "returns", shape: shape)
      let reference = try b.input(
        name: "reference_logprobs", shape: [batch, generated, vocabulary])
      let values = try values(residual, prefix: prefix, config: config, seed: valueHeadSeed)
      let logProbabilities = try logSoftmax(logits)
      let targets = try tokens.slice(start: [0, prefix], end: [batch, sequence])
      let picked = try pick(logProbabilities, targets).named("logprobs")
      let count = try b.input(name: "count", shape: [])
      let advantageMean = try b.input(name: "advantage_mean", shape: [])
      let deviation = try b.input(name: "advantage_std", shape: [])
      func mean(_ x: Tensor) throws(TraceError) -> Tensor { try (x * mask).sum() / count }

      let normalized = try (advantages - advantageMean) / (deviation + 1e-8)
      let ratio = try exp(picked - old).named("ratio")
      let clipped = try ratio.apply(.min, 1 + c.clip).apply(.max, 1 - c.clip)
      let surrogate = try mean(minimum(ratio * normalized, clipped * normalized))
        .named("surrogate")
      let error = try values - returns
      let valueLoss = try (0.5 * c.valueFunction * mean(error * error)).named("value_loss")
      let probabilities = try exp(logProbabilities)
      let entropy = try mean(-(probabilities * logProbabilities).sum(axes: [-1])).named("entropy")
      let kl = try mean((probabilities * (logProbabilities - reference)).sum(axes: [-1]))
        .named("kl")
      let entropyBonus = try (c.entropy * entropy).named("entropy_bonus")
      let klPenalty = try (c.kl * kl).named("kl_penalty")
      let objective = try (surrogate - valueLoss + entropyBonus - klPenalty).named("objective")
      let loss = try (-objective).named("loss")
      let outside = try (ratio - 1.0).apply(.abs).compare(.gt, c.clip).cast(to: .f32)
      let clipFraction = try mean(outside).named("clipfrac")
      return [
        loss, surrogate, valueLoss, entropyBonus, klPenalty, entropy, kl, clipFraction,
      ]
    }
  }

  /// The names of the objective graph's outputs before the gradients, in order.
  public static let objectiveOutputs = [
    "loss", "surrogate", "value_loss", "entropy_bonus", "kl_penalty", "entropy", "kl", "clipfrac",
  ]

  private static func checkShape(prefix: Int, generated: Int) throws(TraceError) {
    guard prefix >= 1, generated >= 1 else {
      throw TraceError(
        message:
          "rlhf: a row needs at least 1 prefix and 1 generated token, got \(prefix) and \(generated)"
      )
    }
  }
}

extension LlamaModel {
  /// The storage dtype of each weight as the file stores it (the f32 precision's graphs).
  public var storedWeightType: (String) -> DType? {
    let model = self
    return { name in model.storedType(of: name)?.dtype }
  }
}
