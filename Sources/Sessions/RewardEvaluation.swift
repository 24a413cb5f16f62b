import Dispatch
import Models
import Runtime

/// The mean reward of a policy over samples after a prefix.
///
/// The samples are drawn as `lorac rlhf`'s rollouts are (batched KV-cache decoding, temperature
/// and top-k, never stopping at end-of-sequence) and scored by a reward. What the RLHF demo reports for the base model and for the trained adapter.
public struct RewardEvaluation {
  public var prefix: String
  public var reward: RewardFunction
  public var samples: Int
  /// Rows decoded together.
  public var batch: Int
  public var generated: Int
  public var temperature: Double
  public var topK: Int?
  /// The seed of the draws: one stream for every sample, in row order.
  public var seed: UInt64

  public init(
    prefix: String, reward: RewardFunction, samples: Int, batch: Int, generated: Int,
    temperature: Double, topK: Int?, seed: UInt64
  ) {
    self.prefix = prefix
    self.reward = reward
    self.samples = samples
    self.batch = batch
    self.generated = generated
    self.temperature = temperature
    self.topK = topK
    self.seed = seed
  }

  /// What one evaluation found.
  public struct Result: Sendable {
    /// The completions (prefix excluded) in the order drawn.
    public var completions: [String]
    public var rewards: [Double]
    public var mean: Double
    /// With Bessel's correction (0 for one sample).
    public var standardDeviation: Double
    /// Sampling and scoring.
    public var seconds: Double
  }

  /// Samples and scores `samples` completions of `model` through `adapter` (nil: the base model)
  /// at `adapterScale`.
  public func run(
    model: LlamaModel, tokenizer: Tokenizer, adapter: PEFTAdapter?, adapterScale: Float = 1,
    target: Target = .host
  ) throws(SessionError) -> Result {
    try SettingChecks.atLeast(
      1, [("--count", samples), ("--batch", batch), ("--gen-len", generated)])
    guard temperature.isFinite, temperature >= 0 else {
      throw SessionError("--temperature must be a finite number at least 0, got \(temperature)")
    }
    if let topK, topK < 1 { throw SessionError("--top-k must be at least 1, got \(topK)") }
    let start = DispatchTime.now().uptimeNanoseconds
    let tokens = try tokenizer.prompt(prefix, chat: false)
    try model.checkPrompt(tokens, vocabulary: model.config.vocabularySize, option: "--prefix")
    let context = tokens.count + generated
    if context > model.contextLength {
      throw SessionError(
        "--prefix and --gen-len make \(context) tokens, more than the model's context of "
          + "\(model.contextLength)")
    }
    let decoder = DecodeSession(model: model, context: context, adapter: adapter, target: target)
    if adapterScale != 1 { try decoder.setAdapterScale(adapterScale) }
    var sampler = RolloutSampler(temperature: temperature, topK: topK, seed: seed)
    var completions: [String] = []
    while completions.count < samples {
      let rows = min(batch, samples - completions.count)
      let drawn = try decoder.sample(
        prefix: tokens, batch: rows, generated: generated, sampler: &sampler)
      completions += drawn.map { tokenizer.decode($0) }
    }
    let rewards = try reward.rewards(prompt: prefix, completions: completions)
    let (mean, deviation) = meanAndDeviation(rewards)
    return Result(
      completions: completions, rewards: rewards, mean: mean, standardDeviation: deviation,
      seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
  }
}
