import ArgumentParser
import Foundation
import ModelBench
import Runtime

extension Bench {
  /// `lorac bench prefill`: time to a ready model, and prefill throughput.
  ///
  /// By default a prefill is what generation runs before its first token (and what llama.cpp and
  /// PyTorch with `logits_to_keep=1` run): the KV cache of the prompt and the last position's
  /// logits, through the decoding prefill graph of `lorac generate`. `--all-logits` measures the
  /// forward graph of `lorac logits` instead, with the head product at every position.
  struct Prefill: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Measure model load (open, trace, compile) and prefill of --tokens tokens.",
      discussion: """
        Prefill fills the KV cache of a --tokens prompt and computes the last position's logits, \
        as lorac generate does before its first token (the decoding prefill graph, with a cache \
        of --context slots). --all-logits measures the forward graph of lorac logits instead: \
        the logits of every position, no cache. Medians of --runs runs after a warm-up; the \
        caches are emptied before each run, outside the timed part.
        """)

    @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
    var model: String

    @Option(help: "Prompt length.")
    var tokens: Int = 128

    @Option(help: "Cache slots of the decoding graph (default: --tokens).")
    var context: Int?

    @Flag(help: "Compute the logits of every position (the forward graph), not the KV cache.")
    var allLogits = false

    @Option(help: "Runs after one warm-up run.")
    var runs: Int = 5

    @OptionGroup var threads: ThreadsOption

    @OptionGroup var isa: ISAOption

    @Option(
      help:
        "Capture the values this glob matches in every run (repeatable), to measure what a capture costs."
    )
    var capture: [String] = []

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Also time --runs prefills kernel by kernel (to stderr; the cached prefill only).")
    var profile = false

    func validate() throws {
      if tokens < 1 { throw ValidationError("--tokens must be at least 1, got \(tokens)") }
      if runs < 1 { throw ValidationError("--runs must be at least 1, got \(runs)") }
      if let context {
        if allLogits { throw ValidationError("--context needs the KV cache; drop --all-logits") }
        if context < tokens {
          throw ValidationError("--context must be at least --tokens (\(tokens)), got \(context)")
        }
      }
      try threads.check()
    }

    func run() throws {
      threads.apply()
      let benchmark = PrefillBenchmark(
        tokens: tokens, context: context, allLogits: allLogits, runs: runs,
        target: try isa.target(), captures: capture)
      let result = try benchmark.measure(model, profile: profile)
      if let profile = result.profile { printError(profile.text, newline: false) }
      print(benchmark.report(result, json: json))
    }
  }
}
