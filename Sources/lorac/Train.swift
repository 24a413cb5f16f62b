import ArgumentParser
import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

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

  @Argument(help: "The GGUF model.")
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

  @Flag(help: "Continue from the training state in --out (settings not given are taken from it).")
  var resume = false

  @Option(help: TrainPrecision.help(default: .f32))
  var precision: TrainPrecision?

  @Option(parsing: .unconditional, help: "Threads (default: all cores).")
  var threads: Int?

  func validate() throws {
    if (data == nil) == (task == nil) {
      throw ValidationError("give exactly one of --data and --task")
    }
    if let task, task != "mystery_function" {
      throw ValidationError("unknown --task '\(task)' (known: mystery_function)")
    }
    for (name, value) in [
      ("--rank", rank), ("--steps", steps), ("--batch", batch), ("--examples", examples),
      ("--accumulate", accumulate), ("--save-every", saveEvery), ("--stop-after", stopAfter),
    ]
    where value.map({ $0 < 1 }) ?? false {
      throw ValidationError("\(name) must be at least 1, got \(value ?? 0)")
    }
    if let warmup, warmup < 0 {
      throw ValidationError("--warmup must be at least 0, got \(warmup)")
    }
    if let lr, !(lr > 0 && lr.isFinite) {
      throw ValidationError("--lr must be positive, got \(lr)")
    }
    if let alpha, !(alpha > 0 && alpha.isFinite) {
      throw ValidationError("--alpha must be positive, got \(alpha)")
    }
    if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) {
      throw ValidationError("--weight-decay must be at least 0, got \(weightDecay)")
    }
    if let maxGradNorm, !(maxGradNorm > 0 && maxGradNorm.isFinite) {
      throw ValidationError("--max-grad-norm must be positive, got \(maxGradNorm)")
    }
    try validateThreads(threads)
    if let seq, seq < 2 { throw ValidationError("--seq must be at least 2, got \(seq)") }
  }

  func run() throws {
    Threads.set(threads)
    let outFolder = URL(fileURLWithPath: out)
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: out, isDirectory: &isFolder), !isFolder.boolValue {
      fail("\(out): is a file; --out names a folder (made if missing)")
    }
    var saved: TrainingState?
    do {
      saved = try TrainingState.read(from: outFolder)
    } catch {
      fail(error.message)
    }
    if resume && saved == nil {
      fail(
        "\(out): no training state to resume (\(TrainingState.fileName) is missing); "
          + "run without --resume to start")
    }
    if !resume, let old = saved {
      FileHandle.standardError.write(
        Data(
          "note: \(out) holds a training state at step \(old.step); starting over (--resume continues it)\n"
            .utf8))
      saved = nil
    }
    // Settings: given on the command line, else (resuming) the saved ones, else the defaults.
    var settings = Settings(saved: saved?.settings ?? [:], folder: out)
    let examples = settings.resolve("examples", examples, default: 4000)
    let rank = settings.resolve("rank", rank, default: 8)
    let alpha = settings.resolve("alpha", alpha, default: 16.0)
    let targets = settings.resolve("targets", targets, default: "layers.*.attn.{q,k,v,o}")
    let lr = settings.resolve("lr", lr, default: 2e-3)
    let warmup = settings.resolve("warmup", warmup, default: 5)
    let batch = settings.resolve("batch", batch, default: 16)
    let accumulate = settings.resolve("accumulate", accumulate, default: 1)
    let weightDecay = settings.resolve("weight-decay", weightDecay, default: 0.0)
    let maxGradNorm = settings.resolve("max-grad-norm", maxGradNorm, default: 1.0)
    let seed = settings.resolve("seed", seed, default: UInt64(0))
    let precision = settings.resolve("precision", precision, default: .f32)
    if let note = precision.fallbackNote { FileHandle.standardError.write(Data(note.utf8)) }
    // The total may change on resume (the schedule then decays over the new total).
    let steps = steps ?? saved.flatMap { $0.settings["steps"] }.flatMap { Int($0) } ?? 60
    settings.values["steps"] = String(steps)
    if let saved, steps < saved.step {
      fail("\(out): the training state is at step \(saved.step), past --steps \(steps)")
    }
    if let stopAfter, stopAfter <= saved?.step ?? 0 {
      fail("--stop-after \(stopAfter) is not past the training state's step \(saved?.step ?? 0)")
    }

    let loaded: LlamaModel
    let tokenizer: Tokenizer
    let modelFingerprint: String
    do {
      loaded = try LlamaModel(path: model)
      tokenizer = try Tokenizer(gguf: loaded.file)
    } catch {
      fail(error.message)
    }
    do {
      modelFingerprint = try Fingerprint.file(model)
    } catch {
      fail(error.message)
    }
    var set: [TrainingExample]
    if let data {
      do {
        set = try Dataset.load(
          path: data, tokenizer: tokenizer,
          template: tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:)))
      } catch {
        fail(error.message)
      }
    } else {
      set = Dataset.mysteryFunction(count: examples, seed: seed &+ 1).map {
        Dataset.completion(prompt: $0.prompt, completion: $0.answer, tokenizer: tokenizer)
      }
    }
    let dataFingerprint = Fingerprint.examples(set)
    let sequence = settings.resolve(
      "seq", seq, default: min(512, loaded.contextLength, set.map { $0.ids.count }.max() ?? 2))
    if sequence > loaded.contextLength {
      fail("--seq \(sequence) is more than the model's context of \(loaded.contextLength) tokens")
    }
    if let saved {
      if saved.modelFingerprint != modelFingerprint {
        fail(
          "\(out): the training state was made with another model (fingerprint "
            + "\(saved.modelFingerprint), \(model) has \(modelFingerprint)); resume with the same model "
            + "or train into a new --out")
      }
      if saved.dataFingerprint != dataFingerprint {
        fail(
          "\(out): the training state was made with other data (fingerprint "
            + "\(saved.dataFingerprint), these examples have \(dataFingerprint)); resume with the same "
            + "--data or --task or train into a new --out")
      }
      if saved.threads != Threads.count {
        FileHandle.standardError.write(
          Data(
            ("note: the state was trained with \(saved.threads) threads, now \(Threads.count): "
              + "the losses will not match an uninterrupted run bit for bit\n").utf8))
      }
      if saved.step == steps {
        FileHandle.standardError.write(
          Data(
            "\(out): already trained \(steps) steps; nothing to do (raise --steps to continue)\n"
              .utf8))
        return
      }
    }
    let trainer = Trainer(
      model: loaded, sequence: sequence, batch: batch, rank: rank, alpha: alpha, targets: targets,
      seed: seed, precision: precision.weights)
    do {
      try FileManager.default.createDirectory(at: outFolder, withIntermediateDirectories: true)
    } catch {
      fail("\(out): cannot create the folder: \(error.localizedDescription)")
    }
    trainer.train(
      examples: set,
      schedule: Schedule(
        steps: steps, learningRate: lr, warmup: warmup, weightDecay: weightDecay,
        maxGradientNorm: maxGradNorm, accumulate: accumulate, saveEvery: saveEvery,
        stopAfter: stopAfter),
      folder: outFolder, resume: saved,
      record: CheckpointRecord(
        seed: seed, rank: rank, alpha: alpha, settings: settings.values,
        dataFingerprint: dataFingerprint, modelFingerprint: modelFingerprint,
        resumeCommand: Train.resumeCommand()))
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

/// The hyper-parameters of a run as text, checked against a saved run's when resuming.
struct Settings {
  let saved: [String: String]
  let folder: String
  var values: [String: String] = [:]

  init(saved: [String: String], folder: String) {
    self.saved = saved
    self.folder = folder
  }

  /// The value given, else the saved one, else `fallback`; a given value that differs from the
  /// saved one ends the command (a resumed run must train the same thing).
  mutating func resolve<T: LosslessStringConvertible>(
    _ name: String, _ given: T?, default fallback: T
  )
    -> T
  {
    let stored = saved[name].flatMap { T($0) }
    if let given, let stored, given.description != stored.description {
      fail(
        "\(folder): the training state was made with --\(name) \(stored), not \(given); "
          + "resume with the same value or train into a new --out")
    }
    let value = given ?? stored ?? fallback
    values[name] = value.description
    return value
  }
}
