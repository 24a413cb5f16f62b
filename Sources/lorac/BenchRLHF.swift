import ArgumentParser
import Foundation
import ModelBench
import Models
import Runtime
import Sessions

extension Bench {
  /// `lorac bench rlhf`: one RLHF phase of `lorac rlhf`, part by part.
  struct RLHF: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "rlhf",
      abstract:
        "Measure RLHF phases (rollout, reward, policy and reference log-probs, PPO updates).",
      discussion: """
        The phases of `lorac rlhf` with its defaults unless given (reward char-count:. after \
        "This is"); the median of --runs phases after a warm-up phase. tokens_per_s counts the \
        generated tokens (batch x gen-len) per second of the whole phase; compile_s is making \
        the session (its three graphs traced, differentiated and compiled).
        """)

    private static let defaults = RLHFConfiguration()

    @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
    var model: String

    @Option(parsing: .unconditional, help: "Samples per phase.")
    var batch = defaults.batch

    @Option(parsing: .unconditional, help: "Tokens sampled after the prefix.")
    var genLen = defaults.generated

    @Option(parsing: .unconditional, help: "Minibatches per pass.")
    var minibatches = defaults.minibatches

    @Option(parsing: .unconditional, help: "Shuffled passes over the rollout per phase.")
    var batchesPerPhase = defaults.batchesPerPhase

    @Option(parsing: .unconditional, help: "LoRA rank.")
    var rank = defaults.rank

    @Option(help: "Value names to adapt, a glob.")
    var targets = defaults.targets

    @Flag(name: .customLong("per-head"), help: "One LoRA instance per attention head.")
    var perHead = false

    @Option(parsing: .unconditional, help: "Weight of the KL penalty to the reference.")
    var klCoef = defaults.coefficients.kl

    @Option(help: "The text every sample starts with.")
    var prefix = defaults.prefix

    @Option(parsing: .unconditional, help: "Phases measured after one warm-up phase.")
    var runs = 3

    @OptionGroup var threads: ThreadsOption

    @OptionGroup var isa: ISAOption

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
      if runs < 1 { throw ValidationError("--runs must be at least 1, got \(runs)") }
      try threads.check()
      do { try settings(target: .host).check() } catch { throw ValidationError(error.message) }
    }

    private func settings(target: Target) -> RLHFConfiguration {
      var c = RLHFConfiguration()
      (c.batch, c.generated, c.minibatches, c.batchesPerPhase) = (
        batch, genLen, minibatches, batchesPerPhase
      )
      (c.rank, c.targets, c.perHead, c.prefix) = (rank, targets, perHead, prefix)
      c.coefficients.kl = klCoef
      c.phases = runs + 1
      c.target = target
      return c
    }

    func run() throws {
      threads.apply()
      let benchmark = RLHFBenchmark(
        configuration: settings(target: try isa.target()), reward: .characterCount("."),
        runs: runs)
      let result = try benchmark.measure(try LlamaModel.open(model))
      print(benchmark.report(result, json: json))
    }
  }
}
