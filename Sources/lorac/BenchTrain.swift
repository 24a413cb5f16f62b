import ArgumentParser
import Foundation
import ModelBench
import Models
import Runtime
import Sessions

extension Bench {
  /// `lorac bench train`: LoRA training steps (forward, backward, AdamW) on random tokens.
  struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Measure LoRA train steps (forward, backward, AdamW) and the train compile time.",
      discussion: """
        Random tokens, every position weighted in the loss. Prints the median of --runs steps \
        after a warm-up step; tokens/s counts batch x seq tokens per step. Compile time is \
        trace + passes + memory plan.
        """)

    @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
    var model: String

    @Option(parsing: .unconditional, help: "Sequences per step.")
    var batch = 16

    @Option(parsing: .unconditional, help: "Tokens per sequence.")
    var seq = 32

    @Option(parsing: .unconditional, help: "LoRA rank.")
    var rank = 8

    @Option(help: "Value names to adapt (a glob).")
    var targets = "layers.*.attn.{q,k,v,o}"

    @Option(help: "The passes between lora/freeze and the executable.")
    var passes = Pipelines.trainingPasses

    @Option(help: WeightPrecision.help(default: nil))
    var precision: WeightPrecision = .f32

    @Option(parsing: .unconditional, help: "Steps measured after one warm-up step.")
    var runs = 5

    @OptionGroup var threads: ThreadsOption

    @OptionGroup var isa: ISAOption

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "After the measured steps, time one more step kernel by kernel and print the ops.")
    var profile = false

    func validate() throws {
      for (name, value) in [("--batch", batch), ("--seq", seq), ("--rank", rank), ("--runs", runs)]
      where value < 1 {
        throw ValidationError("\(name) must be at least 1, got \(value)")
      }
      try threads.check()
    }

    func run() throws {
      threads.apply()
      let target = try isa.target()
      if let note = precisionNote(precision, target: target) { printError(note) }
      let benchmark = TrainStepBenchmark(
        batch: batch, sequence: seq, rank: rank, targets: targets, passes: passes,
        precision: precision.effective(on: target), runs: runs, target: target)
      let result = try benchmark.measure(try LlamaModel.open(model), profile: profile)
      if let profile = result.profile { printError(profile.text, newline: false) }
      print(benchmark.report(result, json: json))
    }
  }
}
