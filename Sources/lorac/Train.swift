import ArgumentParser
import Dispatch
import Foundation
import Models
import Runtime
import Sessions

/// `lorac train`: fine-tune a LoRA adapter on jsonl data or the tutorials' task.
struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a LoRA adapter and write it to --out as a PEFT adapter.",
    discussion: """
      Data: --data FILE.jsonl with {"prompt","completion"}, {"text"} or {"messages":[...]} lines, \
      or --task mystery_function (the tutorials' a + b task). At every checkpoint (--save-every, \
      the end, and Ctrl-C, which then exits with status 130) writes to --out: adapter_config.json \
      and adapter_model.safetensors (PEFT), training_state.safetensors (adapter, AdamW moments, \
      data order, settings), metrics.jsonl (one line per step) and loss.svg. --resume continues \
      from the state; with the same thread count the losses equal an uninterrupted run's bit for \
      bit. A resume on another model, other data or other settings is refused.
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Option(help: "A jsonl file of training examples.")
  var data: String?

  @Option(help: "A built-in task instead of --data: mystery_function.")
  var task: String?

  @Option(parsing: .unconditional, help: "Examples to generate for --task (default: 4000).")
  var examples: Int?

  @Option(help: "The output folder.")
  var out: String

  @Option(parsing: .unconditional, help: "LoRA rank (default: 8).")
  var rank: Int?

  @Option(
    parsing: .unconditional, help: "LoRA alpha; the branch is scaled by alpha / rank (default: 16)."
  )
  var alpha: Double?

  @Option(help: "Value names to adapt, a glob (default: layers.*.attn.{q,k,v,o}).")
  var targets: String?

  @Option(parsing: .unconditional, help: "Peak learning rate (default: 0.002).")
  var lr: Double?

  @Option(
    parsing: .unconditional, help: "Linear warm-up steps before cosine decay to 10% (default: 5).")
  var warmup: Int?

  @Option(
    parsing: .unconditional,
    help: "Optimizer steps in all (default: 60; with --resume it may grow).")
  var steps: Int?

  @Option(parsing: .unconditional, help: "Sequences per micro-batch (default: 16).")
  var batch: Int?

  @Option(
    parsing: .unconditional,
    help: "Micro-batches per optimizer step; their gradients are averaged (default: 1).")
  var accumulate: Int?

  @Option(
    parsing: .unconditional,
    help: "Tokens per sequence (default: the longest example, at most 512).")
  var seq: Int?

  @Option(parsing: .unconditional, help: "AdamW weight decay (default: 0).")
  var weightDecay: Double?

  @Option(parsing: .unconditional, help: "Clip the gradients' global norm to this (default: 1).")
  var maxGradNorm: Double?

  @Option(
    parsing: .unconditional,
    help: "Seed of the adapter's initial values and of the data order (default: 0).")
  var seed: UInt64?

  @Option(
    parsing: .unconditional,
    help: "Write a checkpoint every N steps; one is also written at the end.")
  var saveEvery = 50

  @Option(
    parsing: .unconditional,
    help:
      "Stop after step N with a checkpoint, as if interrupted; the schedule still spans --steps.")
  var stopAfter: Int?

  @Flag(
    name: .customLong("rslora"),
    help: "Scale the LoRA branch by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank.")
  var rsLoRA = false

  @Flag(
    name: .customLong("per-head"),
    help:
      "One LoRA instance per attention head on q, k, v and o, as the TransformerLens tutorial's per-head Lora (q, o: query heads; k, v: key/value heads); --targets may name only those. Works with --rslora."
  )
  var perHead = false

  @Option(
    help:
      "What adapter_config.json names as the base model (default: the repository the GGUF's metadata names, else its path)."
  )
  var baseModel: String?

  @Flag(help: "Continue from the training state in --out (settings not given are taken from it).")
  var resume = false

  @Option(help: WeightPrecision.help(default: .f32))
  var precision: WeightPrecision?

  @OptionGroup var threads: ThreadsOption

  func validate() throws {
    if (data == nil) == (task == nil) {
      throw ValidationError("give exactly one of --data and --task")
    }
    if let task, task != "mystery_function" {
      throw ValidationError("unknown --task '\(task)' (known: mystery_function)")
    }
    do {
      try request.check()
    } catch {
      throw ValidationError(error.message)
    }
    try threads.check()
  }

  /// What the flags ask for.
  private var request: TrainingRequest {
    TrainingRequest(
      model: model, data: data.map { .jsonl($0) } ?? .mysteryFunction, out: out,
      examples: examples, rank: rank, alpha: alpha, targets: targets, learningRate: lr,
      warmup: warmup, steps: steps, batch: batch, accumulate: accumulate, sequence: seq,
      weightDecay: weightDecay, maxGradientNorm: maxGradNorm, seed: seed, precision: precision,
      saveEvery: saveEvery, stopAfter: stopAfter, resume: resume, rsLoRA: rsLoRA ? true : nil,
      perHead: perHead ? true : nil, baseModel: baseModel)
  }

  func run() throws {
    threads.apply()
    // Under mpirun: one rank of a data-parallel job; rank 0 alone prints and writes.
    let parallel = try DataParallel.fromEnvironment()
    let speaks = parallel?.rank ?? 0 == 0
    guard
      let job = try stoppingEveryRank(
        parallel,
        {
          try TrainingJob.prepare(
            request, dataParallel: parallel, note: { if speaks { printError($0) } })
        })
    else { return }
    try runSteps(parallel, total: job.schedule.steps, folder: job.folder) { report in
      try job.run(cancellation: Interruption.install(), progress: report)
    }
  }

  /// This command line with `--resume` (once) and without `--stop-after`, quoted for a POSIX
  /// shell.
  static func resumeCommand() -> String {
    var arguments: [String] = []
    var rest = CommandLine.arguments.dropFirst()[...]
    while let argument = rest.popFirst() {
      if argument == "--stop-after" {
        _ = rest.popFirst()
      } else if !argument.hasPrefix("--stop-after=") {
        arguments.append(argument)
      }
    }
    if !arguments.contains("--resume") { arguments.append("--resume") }
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%")
    let quoted = arguments.map { argument in
      argument.allSatisfy(safe.contains)
        ? argument : "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
    return (["lorac"] + quoted).joined(separator: " ")
  }
}
