import Runtime

/// What an RLHF run is: the adapter, the rollout, the PPO learning phase and the schedule, with
/// the TransformerLens tutorial's trainer as the default wherever it fits SmolLM2 on 2 cores
/// (docs/rlhf.md lists which defaults differ and why).
public struct RLHFConfiguration: Sendable, Hashable {
  // The adapter.
  public var rank = 4
  public var alpha = 32.0
  public var targets = "layers.*.attn.{q,k,v,o}"
  public var rsLoRA = false
  /// One LoRA instance per attention head, as the tutorial's `LoraHooks` (q, k, v, o only).
  public var perHead = false
  // The rollout.
  public var prefix = "This is"
  /// Samples per phase (`batch_size`).
  public var batch = 16
  /// Tokens sampled after the prefix (`gen_len`).
  public var generated = 24
  public var temperature = 1.0
  public var topK: Int? = 10
  // The learning phase.
  /// Passes over the rollout per phase (`batches_per_learning_phase`).
  public var batchesPerPhase = 2
  /// Minibatches per pass (`num_minibatches`); `batch` must be a multiple.
  public var minibatches = 2
  public var coefficients = PPOCoefficients(kl: 0.05)
  /// The adapter's peak learning rate (`base_lr`) and the value head's (`head_lr`).
  public var learningRate = 1e-3
  public var headLearningRate = 5e-4
  /// Phases of linear warm-up, then linear decay to `finalScale` of the peak at the last phase.
  public var warmup = 0
  public var finalScale = 0.1
  public var maxGradientNorm = 1.0
  /// torch.optim.AdamW's default, which the tutorial keeps.
  public var weightDecay = 0.01
  /// Generalised advantage estimation; the tutorial's one-step estimate is lambda 0, gamma 1.
  public var gaeLambda = 0.0
  public var gamma = 1.0
  /// Rewards normalised over the batch, `(r - mean) / (std + 1e-5)`.
  public var normalizeReward = true
  public var phases = 60
  public var seed: UInt64 = 1
  /// What the adapter's config names as its base model (nil: `GGUFFile.baseModelName`).
  public var baseModel: String?
  public var target: Target = .host

  public init() {}

  /// Rows per minibatch.
  public var minibatchSize: Int { batch / max(1, minibatches) }

  /// The seed of the value head's initial values (the adapter's is `seed`; its four tensors take
  /// this seed plus 0, 1, 2, 3).
  public var valueHeadSeed: UInt64 { seed &+ 1000 }

  /// Checks the counts and rates (the messages name the command's flags).
  public func check() throws(SessionError) {
    try SettingChecks.atLeast(
      1,
      [
        ("--batch", batch), ("--gen-len", generated), ("--batches-per-phase", batchesPerPhase),
        ("--minibatches", minibatches), ("--phases", phases), ("--rank", rank), ("--top-k", topK),
      ])
    try SettingChecks.atLeast(0, [("--warmup", warmup)])
    guard batch % minibatches == 0 else {
      throw SessionError(
        "--batch \(batch) is not a multiple of --minibatches \(minibatches)")
    }
    if normalizeReward && batch < 2 {
      throw SessionError("--batch must be at least 2 to normalise the rewards, got \(batch)")
    }
    if minibatchSize * generated < 2 {
      throw SessionError(
        "a minibatch of \(minibatchSize) rows of \(generated) tokens has too few advantages to "
          + "normalise; raise --batch or --gen-len")
    }
    try SettingChecks.positive("--alpha", alpha)
    try SettingChecks.positive("--lr", learningRate)
    try SettingChecks.notNegative("--head-lr", headLearningRate)
    try SettingChecks.notNegative("--temperature", temperature)
    try SettingChecks.notNegative("--clip", coefficients.clip)
    try SettingChecks.notNegative("--vf-coef", coefficients.valueFunction)
    try SettingChecks.notNegative("--ent-coef", coefficients.entropy)
    try SettingChecks.notNegative("--kl-coef", coefficients.kl)
    try SettingChecks.notNegative("--final-scale", finalScale)
    try SettingChecks.positive("--max-grad-norm", maxGradientNorm)
    try SettingChecks.notNegative("--weight-decay", weightDecay)
    for (name, value) in [("--gae-lambda", gaeLambda), ("--gamma", gamma)]
    where !(value >= 0 && value <= 1) {
      throw SessionError("\(name) must be in [0, 1], got \(value)")
    }
    if warmup >= phases && warmup > 0 {
      throw SessionError("--warmup \(warmup) must be below --phases \(phases)")
    }
  }

  /// The factor on both peak learning rates during phase `phase` (from 0): the tutorial's
  /// `LambdaLR`, `phase / warmup` during warm-up, then linear decay to `finalScale` at the last.
  public func learningRateFactor(phase: Int) -> Double {
    if phase < warmup { return Double(phase) / Double(warmup) }
    return 1 - (1 - finalScale) * Double(phase - warmup) / Double(max(1, phases - warmup))
  }

  /// The run's settings by flag name, as a checkpoint records them (a resume must match).
  public var settings: [String: String] {
    [
      "rank": String(rank), "alpha": String(alpha), "targets": targets, "rslora": String(rsLoRA),
      "per-head": String(perHead),
      "prefix": prefix, "batch": String(batch), "gen-len": String(generated),
      "temperature": String(temperature), "top-k": topK.map(String.init) ?? "none",
      "batches-per-phase": String(batchesPerPhase), "minibatches": String(minibatches),
      "clip": String(coefficients.clip), "vf-coef": String(coefficients.valueFunction),
      "ent-coef": String(coefficients.entropy), "kl-coef": String(coefficients.kl),
      "lr": String(learningRate), "head-lr": String(headLearningRate), "warmup": String(warmup),
      "final-scale": String(finalScale), "max-grad-norm": String(maxGradientNorm),
      "weight-decay": String(weightDecay), "gae-lambda": String(gaeLambda),
      "gamma": String(gamma), "normalize-reward": String(normalizeReward),
      "phases": String(phases), "seed": String(seed),
    ]
  }
}

extension Pipelines {
  /// The PPO objective's pipeline: the adapter, the adapter and the value head trainable, the
  /// train step's passes with the loss `-J`, and `cse` after `autodiff`: the log-softmax's
  /// gradient forms `exp(log p)` again, which the entropy and the KL already formed (a
  /// vocabulary-wide product, computed once instead of twice).
  public static func rlhf(_ c: RLHFConfiguration) -> String {
    training(
      rank: c.rank, alpha: c.alpha, targets: c.targets, seed: c.seed,
      rsLoRA: c.rsLoRA ? true : nil, perHead: c.perHead ? true : nil,
      passes: trainingPasses.replacingOccurrences(
        of: "autodiff{loss=loss},", with: "autodiff{loss=loss},cse,")
    ).replacingOccurrences(of: "},freeze,", with: "},freeze{trainable=\(RLHFGraphs.trainable)},")
  }

  /// The rollout evaluation's pipeline: the same adapter (values set from the trainer), fused so
  /// the adapter scale switches it off, no gradients.
  public static func rlhfEvaluation(_ c: RLHFConfiguration) -> String {
    adapted(
      rank: c.rank, alpha: c.alpha, targets: c.targets, seed: c.seed, rsLoRA: c.rsLoRA,
      perHead: c.perHead)
  }

  /// A `lora` pass then `passes` with no `freeze`: the adapter's parameters stay parameters, set
  /// by name from a trainer; `fuse` makes its branches switchable by the adapter scale.
  public static func adapted(
    rank: Int, alpha: Double, targets: String, seed: UInt64, rsLoRA: Bool, perHead: Bool = false,
    passes: String = "fuse,dce"
  ) -> String {
    // `training` writes `lora{...},freeze,PASSES`; a target glob never holds "},freeze,".
    training(
      rank: rank, alpha: alpha, targets: targets, seed: seed, rsLoRA: rsLoRA ? true : nil,
      perHead: perHead ? true : nil, passes: passes
    ).replacingOccurrences(of: "},freeze,", with: "},")
  }
}
