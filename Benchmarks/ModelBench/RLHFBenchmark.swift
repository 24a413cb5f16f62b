import Dispatch
import KernelBench
import Models
import Runtime
import Sessions

/// RLHF phases of `lorac rlhf` (rollout, reward, evaluation under the policy and the reference,
/// PPO learning), timed part by part, with what compiling the session cost and the peak RSS.
public struct RLHFBenchmark: Sendable {
  public var configuration: RLHFConfiguration
  public var reward: RewardFunction
  /// Phases measured after one warm-up phase.
  public var runs: Int

  public init(configuration: RLHFConfiguration, reward: RewardFunction, runs: Int) {
    self.configuration = configuration
    self.reward = reward
    self.runs = runs
  }

  /// What one measurement found: medians over the measured phases.
  public struct Result: Sendable {
    /// Making the session: tracing, differentiating and compiling its three graphs.
    public var compile: Double
    public var phase: Double
    public var parts: PhaseSeconds
    public var phaseTimes: [Double]
    public var rewardMean: Double
    public var peakResidentBytes: Int
    public var sequence: Int
  }

  /// Compiles the session, runs a warm-up phase, then `runs` phases.
  public func measure(_ model: LlamaModel) throws(SessionError) -> Result {
    let start = DispatchTime.now().uptimeNanoseconds
    let session = try RLHFSession(
      model: model, tokenizer: try model.tokenizer(), configuration: configuration)
    let compile = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    // Each phase's times and rewards (not its rollout, which holds the reference's
    // log-probabilities: 50 MB with the defaults).
    var outcomes: [(seconds: Double, parts: PhaseSeconds, rewards: [Double])] = []
    for phase in 0...runs {
      let phaseStart = DispatchTime.now().uptimeNanoseconds
      let outcome = try session.runPhase(phase, reward: reward)
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - phaseStart) / 1e9
      if phase > 0 { outcomes.append((seconds, outcome.seconds, outcome.rewards)) }
    }
    func median(_ values: [Double]) -> Double { values.sorted()[(values.count - 1) / 2] }
    let parts = outcomes.map(\.parts)
    let rewards = outcomes.flatMap(\.rewards)
    return Result(
      compile: compile, phase: median(outcomes.map(\.seconds)),
      parts: PhaseSeconds(
        rollout: median(parts.map(\.rollout)), reward: median(parts.map(\.reward)),
        evaluation: median(parts.map(\.evaluation)), learning: median(parts.map(\.learning))),
      phaseTimes: outcomes.map(\.seconds),
      rewardMean: rewards.reduce(0, +) / Double(max(1, rewards.count)),
      peakResidentBytes: peakResidentBytes(), sequence: session.sequence)
  }

  /// The figures as one JSON object, or as lines of text.
  ///
  /// `tokens_per_s` counts the generated tokens of a phase (batch x gen-len) per second of the
  /// whole phase.
  public func report(_ result: Result, json: Bool) -> String {
    let c = configuration
    let tokens = Double(c.batch * c.generated)
    if json {
      let times = result.phaseTimes.map { "\($0)" }.joined(separator: ", ")
      return
        "{\"tokens_per_s\": \(tokens / result.phase), \"samples_per_s\": \(Double(c.batch) / result.phase), "
        + "\"phase_s\": \(result.phase), \"phase_times_s\": [\(times)], "
        + "\"rollout_s\": \(result.parts.rollout), \"reward_s\": \(result.parts.reward), "
        + "\"evaluate_s\": \(result.parts.evaluation), \"learn_s\": \(result.parts.learning), "
        + "\"compile_s\": \(result.compile), \"runs\": \(runs), \"batch\": \(c.batch), "
        + "\"gen_len\": \(c.generated), \"seq\": \(result.sequence), \"minibatches\": \(c.minibatches), "
        + "\"batches_per_phase\": \(c.batchesPerPhase), \"rank\": \(c.rank), "
        + "\"targets\": \"\(c.targets)\", \"per_head\": \(c.perHead), \"threads\": \(Threads.count), "
        + "\"reward_mean\": \(result.rewardMean), \"peak_rss_bytes\": \(result.peakResidentBytes)}"
    }
    return [
      String(
        format:
          "RLHF phase, batch %d x gen-len %d (%d tokens a row), %d x %d minibatches, rank %d on %@: %.2f s, %.1f samples/s (median of %d, %d threads)",
        c.batch, c.generated, result.sequence, c.batchesPerPhase, c.minibatches, c.rank,
        c.targets, result.phase, Double(c.batch) / result.phase, runs, Threads.count),
      String(
        format:
          "  rollout %.2f s, reward %.3f s, evaluation (policy + reference) %.2f s, learning %.2f s",
        result.parts.rollout, result.parts.reward, result.parts.evaluation,
        result.parts.learning),
      String(
        format: "  session compiled in %.2f s; peak RSS %d bytes", result.compile,
        result.peakResidentBytes),
    ].joined(separator: "\n")
  }
}
