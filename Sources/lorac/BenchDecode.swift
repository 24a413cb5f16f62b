import ArgumentParser
import Foundation
import ModelBench
import Models
import Runtime
import Sessions

extension Bench {
  /// `lorac bench decode`: one-token KV-cache steps at several cache positions.
  struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Measure one-token decoding steps over the KV cache at several positions.",
      discussion: """
        Medians of --runs steps after a warm-up, at each of --positions. With --json, \
        tokens_per_s is the rate of the median position, compile_s the step's compile time \
        (trace, passes, plan) and packing_s the time spent packing weights once at load \
        (q4_1/q8_0 interleaved by 16 rows, f32 copied to huge pages; loading work, apart from \
        compile_s).
        """)

    @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
    var model: String

    @Option(help: "Comma-separated cache positions.")
    var positions = "16,256,1024"

    @Option(parsing: .unconditional, help: "Steps per position after one warm-up step.")
    var runs = 9

    @OptionGroup var threads: ThreadsOption

    func validate() throws { try threads.check() }

    @Flag(help: "Round activations to int8 against q8_0/q4_1 weights, as llama.cpp does.")
    var int8Activations = false

    @OptionGroup var isa: ISAOption

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Also time --runs steps at the last position kernel by kernel (to stderr).")
    var profile = false

    func run() throws {
      let slots = positions.split(separator: ",").compactMap { Int($0) }
      guard !slots.isEmpty, slots.allSatisfy({ $0 >= 0 }) else {
        fail("--positions must be non-negative integers like 16,256,1024")
      }
      threads.apply()
      let benchmark = DecodeBenchmark(
        positions: slots, runs: runs, target: try isa.target(int8Activations: int8Activations))
      let result = try benchmark.measure(try LlamaModel.open(model), profile: profile)
      if let profile = result.profile { printError(profile.text, newline: false) }
      print(benchmark.report(result, json: json))
    }
  }
}
