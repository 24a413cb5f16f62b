import ArgumentParser
import Foundation
import Sessions

/// `lorac dpo`: train a LoRA adapter on preference pairs with DPO, the base model as reference.
struct DPO: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dpo",
    abstract: "Train a LoRA adapter on preference pairs with DPO, the base model as the reference.",
    discussion: """
      --data is a jsonl file of {"prompt", "chosen", "rejected"} lines. Each step's loss is TRL's \
      sigmoid DPO loss, -log sigmoid(beta ((log p(chosen) - log p_ref(chosen)) - (log p(rejected) \
      - log p_ref(rejected)))), with the log-probabilities summed over the completion's tokens \
      (end-of-sequence included, prompt tokens masked) and the reference from the same model at \
      adapter scale 0. Checkpoints, --resume and progress are as `lorac train`'s; metrics.jsonl \
      holds loss, reward_margin, accuracy, chosen_reward and rejected_reward per step.
      """)

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "A jsonl file of {\"prompt\", \"chosen\", \"rejected\"} lines.")
  var data: String

  @Option(help: "The output folder.")
  var out: String

  @Option(parsing: .unconditional, help: "DPO's beta (default: 0.1).")
  var beta: Double?

  @Option(parsing: .unconditional, help: "LoRA rank (default: 8).")
  var rank: Int?

  @Option(parsing: .unconditional, help: "LoRA alpha (default: 16).")
  var alpha: Double?

  @Option(help: "Value names to adapt, a glob (default: layers.*.attn.{q,k,v,o}).")
  var targets: String?

  @Option(parsing: .unconditional, help: "Peak learning rate (default: 0.0005).")
  var lr: Double?

  @Option(
    parsing: .unconditional, help: "Linear warm-up steps before cosine decay to 10% (default: 5).")
  var warmup: Int?

  @Option(parsing: .unconditional, help: "Optimizer steps in all (default: 60).")
  var steps: Int?

  @Option(parsing: .unconditional, help: "Pairs per step (default: 4).")
  var batch: Int?

  @Option(
    parsing: .unconditional, help: "Tokens per sequence (default: the longest pair's).")
  var seq: Int?

  @Option(parsing: .unconditional, help: "AdamW weight decay (default: 0).")
  var weightDecay: Double?

  @Option(parsing: .unconditional, help: "Clip the gradients' global norm to this (default: 1).")
  var maxGradNorm: Double?

  @Option(parsing: .unconditional, help: "Seed of the adapter and the pair order (default: 0).")
  var seed: UInt64?

  @Option(parsing: .unconditional, help: "Write a checkpoint every N steps and at the end.")
  var saveEvery = 50

  @Option(
    parsing: .unconditional,
    help:
      "Stop after step N with a checkpoint, as if interrupted; the schedule still spans --steps."
  )
  var stopAfter: Int?

  @Flag(
    name: .customLong("rslora"),
    help: "Scale the LoRA branch by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank.")
  var rsLoRA = false

  @Option(help: "What adapter_config.json names as the base model.")
  var baseModel: String?

  @Flag(help: "Continue from the training state in --out (settings not given are taken from it).")
  var resume = false

  @OptionGroup var threads: ThreadsOption

  private var request: DPORequest {
    var r = DPORequest(model: model, data: data, out: out)
    (r.beta, r.rank, r.alpha, r.targets, r.learningRate) = (beta, rank, alpha, targets, lr)
    (r.warmup, r.steps, r.batch, r.sequence) = (warmup, steps, batch, seq)
    (r.weightDecay, r.maxGradientNorm, r.seed) = (weightDecay, maxGradNorm, seed)
    (r.rsLoRA, r.saveEvery, r.stopAfter) = (rsLoRA ? true : nil, saveEvery, stopAfter)
    (r.baseModel, r.resume) = (baseModel, resume)
    return r
  }

  func validate() throws {
    try threads.check()
    do {
      try request.check()
    } catch {
      throw ValidationError(error.message)
    }
  }

  func run() throws {
    threads.apply()
    // Under mpirun: one rank of a data-parallel job; rank 0 alone prints and writes.
    let parallel = try DataParallel.fromEnvironment()
    let speaks = parallel?.rank ?? 0 == 0
    let job = try stoppingEveryRank(parallel) {
      try DPOJob.prepare(request, dataParallel: parallel, note: { if speaks { printError($0) } })
    }
    try runSteps(parallel, total: job.schedule.steps, folder: job.folder) { report in
      try job.run(cancellation: Interruption.install()) { step, _ in report(step) }
    }
  }
}
