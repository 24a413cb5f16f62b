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
      or --task mystery_function (the tutorials' a + b task). Writes adapter_config.json, \
      adapter_model.safetensors and metrics.jsonl to --out.
      """)

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "A jsonl file of training examples.")
  var data: String?

  @Option(help: "A built-in task instead of --data: mystery_function.")
  var task: String?

  @Option(help: "Examples to generate for --task.")
  var examples = 4000

  @Option(help: "The output folder.")
  var out: String

  @Option(help: "LoRA rank.")
  var rank = 8

  @Option(help: "LoRA alpha (the branch is scaled by alpha / rank).")
  var alpha = 16.0

  @Option(help: "Value names to adapt (a glob).")
  var targets = "layers.*.attn.{q,k,v,o}"

  @Option(help: "Peak learning rate.")
  var lr = 2e-3

  @Option(help: "Linear warm-up steps before cosine decay to 10%.")
  var warmup = 5

  @Option(help: "Optimizer steps.")
  var steps = 60

  @Option(help: "Sequences per step.")
  var batch = 16

  @Option(help: "Tokens per sequence (default: the longest example, at most 512).")
  var seq: Int?

  @Option(help: "AdamW weight decay.")
  var weightDecay = 0.0

  @Option(help: "Clip the gradients' global norm to this.")
  var maxGradNorm = 1.0

  @Option(help: "Seed of the adapter's initial values and of the data order.")
  var seed: UInt64 = 0

  @Option(help: "Threads (default: all cores).")
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
    ]
    where value < 1 {
      throw ValidationError("\(name) must be at least 1, got \(value)")
    }
    if !(lr > 0) { throw ValidationError("--lr must be positive, got \(lr)") }
    if let seq, seq < 2 { throw ValidationError("--seq must be at least 2, got \(seq)") }
  }

  func run() throws {
    Threads.set(threads)
    let loaded: LlamaModel
    let tokenizer: Tokenizer
    do {
      loaded = try LlamaModel(path: model)
      tokenizer = try Tokenizer(gguf: loaded.file)
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
    let sequence = seq ?? min(512, set.map { $0.ids.count }.max() ?? 2)
    let trainer = Trainer(
      model: loaded, sequence: sequence, batch: batch, rank: rank, alpha: alpha, targets: targets,
      seed: seed)
    let outFolder = URL(fileURLWithPath: out)
    do {
      try FileManager.default.createDirectory(at: outFolder, withIntermediateDirectories: true)
    } catch {
      fail("\(out): cannot create the folder: \(error.localizedDescription)")
    }
    trainer.train(
      examples: set, steps: steps, learningRate: lr, warmup: warmup, weightDecay: weightDecay,
      maxGradientNorm: maxGradNorm, seed: seed,
      metrics: outFolder.appendingPathComponent("metrics.jsonl"))
    trainer.save(to: outFolder, alpha: alpha, rank: rank)
  }
}
