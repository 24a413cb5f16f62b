import ArgumentParser
import Foundation
import Sessions

/// `lorac rlhf`: RLHF with LoRA (PPO with a value head; the adapter switched off is the
/// reference policy).
struct RLHF: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rlhf",
    abstract: "Train a LoRA adapter with PPO on a reward (RLHF), the base model as the reference.",
    discussion: """
      Follows the TransformerLens tutorial's RLHF trainer (docs/rlhf.md). Each phase samples \
      --batch rows of --gen-len tokens after --prefix, scores them (--reward char-count:C counts C \
      in prefix + completion; --reward length counts the completion's characters; --reward-cmd \
      runs a program that reads {"prompt","completion"} JSON lines on stdin and writes one number \
      per line), evaluates them under the policy and the reference (the same model at adapter \
      scale 0), then takes --batches-per-phase x --minibatches PPO steps. Writes to --out at every \
      checkpoint (--save-every, the end, Ctrl-C): adapter_config.json + adapter_model.safetensors \
      (PEFT), value_head.safetensors, rlhf_state.safetensors, metrics.jsonl (one line per phase) \
      and reward.svg. --resume continues the run with the same settings (only --phases may \
      grow); with the same threads it equals an uninterrupted run bit for bit. Under mpirun the \
      ranks share every phase's rows and minibatches (docs/distributed.md).
      """)

  private static let defaults = RLHFConfiguration()

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "The output folder.")
  var out: String

  @Option(help: "The text every sample starts with (BOS first when the tokenizer asks for it).")
  var prefix = defaults.prefix

  @Option(help: "The reward: char-count:C or length.")
  var reward: String?

  @Option(help: "A reward program run with /bin/sh -c instead of --reward.")
  var rewardCmd: String?

  @Option(parsing: .unconditional, help: "Samples per phase.")
  var batch = defaults.batch

  @Option(parsing: .unconditional, help: "Tokens sampled after the prefix.")
  var genLen = defaults.generated

  @Option(parsing: .unconditional, help: "Sampling temperature of the rollout.")
  var temperature = defaults.temperature

  @Option(parsing: .unconditional, help: "Sample among the k most likely tokens.")
  var topK = defaults.topK ?? 10

  @Option(parsing: .unconditional, help: "Shuffled passes over the rollout per phase.")
  var batchesPerPhase = defaults.batchesPerPhase

  @Option(parsing: .unconditional, help: "Minibatches per pass (--batch must be a multiple).")
  var minibatches = defaults.minibatches

  @Option(
    parsing: .unconditional,
    help:
      "Run each minibatch (and the rollout) in N parts whose gradients are summed (default: 1, or the number of ranks under mpirun); N ranks compute what one process does with --accumulate N."
  )
  var accumulate: Int?

  @Option(parsing: .unconditional, help: "The PPO ratio's clip range, 1 +- clip.")
  var clip = defaults.coefficients.clip

  @Option(parsing: .unconditional, help: "Weight of the value loss.")
  var vfCoef = defaults.coefficients.valueFunction

  @Option(parsing: .unconditional, help: "Weight of the entropy bonus.")
  var entCoef = defaults.coefficients.entropy

  @Option(parsing: .unconditional, help: "Weight of the KL penalty to the reference.")
  var klCoef = defaults.coefficients.kl

  @Option(parsing: .unconditional, help: "The adapter's peak learning rate.")
  var lr = defaults.learningRate

  @Option(parsing: .unconditional, help: "The value head's peak learning rate.")
  var headLr = defaults.headLearningRate

  @Option(parsing: .unconditional, help: "Phases of linear warm-up.")
  var warmup = defaults.warmup

  @Option(parsing: .unconditional, help: "The learning rates decay linearly to this fraction.")
  var finalScale = defaults.finalScale

  @Option(parsing: .unconditional, help: "Clip the gradients' global norm to this.")
  var maxGradNorm = defaults.maxGradientNorm

  @Option(parsing: .unconditional, help: "GAE lambda (the tutorial's one-step estimate: 0).")
  var gaeLambda = defaults.gaeLambda

  @Option(parsing: .unconditional, help: "Discount of the advantages (the tutorial's: 1).")
  var gamma = defaults.gamma

  @Option(parsing: .unconditional, help: "LoRA rank.")
  var rank = defaults.rank

  @Option(parsing: .unconditional, help: "LoRA alpha; the branch is scaled by alpha / rank.")
  var alpha = defaults.alpha

  @Option(help: "Value names to adapt, a glob.")
  var targets = defaults.targets

  @Flag(
    name: .customLong("rslora"),
    help: "Scale the LoRA branch by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank.")
  var rsLoRA = false

  @Flag(
    name: .customLong("per-head"),
    help:
      "One LoRA instance per attention head (q, o: per query head; k, v: per key/value head), as the TransformerLens tutorial's LoraHooks."
  )
  var perHead = false

  @Option(parsing: .unconditional, help: "Phases (rollout + learning) in all.")
  var phases = defaults.phases

  @Option(
    parsing: .unconditional,
    help: "Seed of the adapter and value head, the samples and the minibatches.")
  var seed = defaults.seed

  @Option(parsing: .unconditional, help: "Write a checkpoint every N phases and at the end.")
  var saveEvery = 10

  @Option(
    parsing: .unconditional,
    help:
      "Stop after phase N with a checkpoint, as if interrupted; the schedule still spans --phases."
  )
  var stopAfter: Int?

  @Option(parsing: .unconditional, help: "Print a few samples every N phases (0: never).")
  var showEvery = 10

  @Option(
    help:
      "What adapter_config.json names as the base model (default: the repository the GGUF's metadata names, else its path)."
  )
  var baseModel: String?

  @Flag(help: "Continue the run whose state is in --out (same settings; --phases may grow).")
  var resume = false

  @OptionGroup var threads: ThreadsOption

  func validate() throws {
    if (reward == nil) == (rewardCmd == nil) {
      throw ValidationError("give exactly one of --reward and --reward-cmd")
    }
    if showEvery < 0 { throw ValidationError("--show-every must be at least 0, got \(showEvery)") }
    if let accumulate, accumulate < 1 {
      throw ValidationError("--accumulate must be at least 1, got \(accumulate)")
    }
    try threads.check()
    do {
      try configuration.check()
      if let accumulate {
        try RLHFSession.checkRanks(configuration, ranks: 1, accumulate: accumulate)
      }
      _ = try rewardFunction()
    } catch {
      throw ValidationError(error.message)
    }
  }

  /// What the flags ask for.
  private var configuration: RLHFConfiguration {
    var c = RLHFConfiguration()
    (c.prefix, c.batch, c.generated, c.temperature, c.topK) = (
      prefix, batch, genLen, temperature, topK
    )
    (c.batchesPerPhase, c.minibatches) = (batchesPerPhase, minibatches)
    c.coefficients = PPOCoefficients(
      clip: clip, valueFunction: vfCoef, entropy: entCoef, kl: klCoef)
    (c.learningRate, c.headLearningRate, c.warmup, c.finalScale) = (lr, headLr, warmup, finalScale)
    (c.maxGradientNorm, c.gaeLambda, c.gamma) = (maxGradNorm, gaeLambda, gamma)
    (c.rank, c.alpha, c.targets, c.rsLoRA, c.perHead) = (rank, alpha, targets, rsLoRA, perHead)
    (c.phases, c.seed, c.baseModel) = (phases, seed, baseModel)
    return c
  }

  private func rewardFunction() throws(SessionError) -> RewardFunction {
    if let rewardCmd { return .command(rewardCmd) }
    return try RewardFunction(parsing: reward ?? "")
  }

  func run() throws {
    threads.apply()
    // Under mpirun: one rank of a data-parallel job; rank 0 alone prints and writes.
    let parallel = try DataParallel.fromEnvironment()
    let speaks = parallel?.rank ?? 0 == 0
    let job = try stoppingEveryRank(parallel) {
      try RLHFJob.prepare(
        model: model, out: out, configuration: configuration, reward: try rewardFunction(),
        saveEvery: saveEvery, stopAfter: stopAfter, resume: resume, dataParallel: parallel,
        accumulate: accumulate, note: { if speaks { printError($0) } })
    }
    var progress = RLHFProgress(showEvery: showEvery)
    let outcome: RLHFOutcome
    do {
      outcome = try stoppingEveryRank(parallel) {
        try job.run(cancellation: Interruption.install()) { if speaks { progress.report($0) } }
      }
    } catch {
      progress.finishLine()
      throw error
    }
    progress.finishLine()
    switch outcome {
    case .finished: break
    case .stopped(let phase), .cancelled(let phase):
      let cancelled = outcome == .cancelled(phase: phase)
      if speaks {
        progress.message(
          "\(cancelled ? "interrupted" : "stopped"): saved phase \(phase)/\(phases) in "
            + "\(job.folder.path); resume with: \(Train.resumeCommand())")
      }
      if cancelled { throw ExitCode(130) }
    }
  }
}

/// Progress of `lorac rlhf` on stderr: a live line on a terminal, else a line every fifth phase;
/// a few samples every `showEvery` phases.
struct RLHFProgress {
  let showEvery: Int
  private var line = TrainingProgress()

  init(showEvery: Int) { self.showEvery = showEvery }

  mutating func report(_ r: PhaseReport) {
    let text = String(
      format:
        "phase %d/%d  reward %.3f (sd %.3f)  kl %.4f  entropy %.3f  clipfrac %.3f  %.1f samples/s  eta %@",
      r.phase, r.total, r.rewardMean, r.rewardStandardDeviation, r.kl, r.entropy, r.clipFraction,
      r.samplesPerSecond, TrainingProgress.duration(r.remainingSeconds))
    let samples = showEvery > 0 && (r.phase % showEvery == 0 || r.isFirst)
    line.show(text, final: r.phase == r.total, plain: r.isFirst || r.phase % 5 == 0 || samples)
    if samples {
      line.message(r.samples.map { "  " + $0.debugDescription }.joined(separator: "\n"))
    }
  }

  mutating func finishLine() { line.finishLine() }
  mutating func message(_ text: String) { line.message(text) }
}
