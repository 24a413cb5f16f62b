import ArgumentParser
import Dispatch
import Foundation
import IR
import KernelBench
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

    @Argument(help: "The GGUF model.")
    var model: String

    @Option(help: "Comma-separated cache positions.")
    var positions = "16,256,1024"

    @Option(parsing: .unconditional, help: "Steps per position after one warm-up step.")
    var runs = 9

    @Option(parsing: .unconditional, help: "Threads (default: all cores).")
    var threads: Int?

    @Flag(help: "Round activations to int8 against q8_0/q4_1 weights, as llama.cpp does.")
    var int8Activations = false

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Also time --runs steps at the last position kernel by kernel (to stderr).")
    var profile = false

    func validate() throws { try validateThreads(threads) }

    func run() throws {
      let slots = positions.split(separator: ",").compactMap { Int($0) }
      guard !slots.isEmpty, slots.allSatisfy({ $0 >= 0 }) else {
        fail("--positions must be non-negative integers like 16,256,1024")
      }
      Threads.set(threads)
      let context = ((slots.max() ?? 0) + 16) / 16 * 16
      let session = DecodeSession(
        model: try LlamaModel.open(model), context: context, adapter: nil,
        target: Target(int8Activations: int8Activations))
      let step: Executable
      let start = DispatchTime.now().uptimeNanoseconds
      do {
        step = try session.compile(tokens: 1)
      } catch {
        fail("\(error)")
      }
      // Interleaving q4_1/q8_0 weights for int8 activations is loading work, not compiling.
      let packing = step.packingSeconds
      let compile = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 - packing
      var results: [(Int, Double)] = []
      for slot in slots {
        do {
          try session.setInputs(step, tokens: [504], slot: slot)
          let seconds = try KernelBenchmarks.median(runs: runs) { try step.execute() }
          results.append((slot, seconds))
          if profile && slot == slots.last { try printStepProfile(step, runs: runs) }
        } catch {
          fail("\(error)")
        }
      }
      if json {
        let entries = results.map {
          "\"\($0.0)\": {\"step_s\": \($0.1), \"tokens_per_s\": \(1 / $0.1)}"
        }
        // The top-level rate is that of the median step over the positions.
        let middle = results.map(\.1).sorted()[results.count / 2]
        print(
          "{\"context\": \(context), \"threads\": \(Threads.count), \"int8_activations\": \(int8Activations), \"runs\": \(runs), \"tokens_per_s\": \(1 / middle), \"compile_s\": \(compile), \"packing_s\": \(packing), \"packed_bytes\": \(step.packedWeightBytes), \"positions\": {\(entries.joined(separator: ", "))}, \"peak_rss_bytes\": \(peakResidentBytes())}"
        )
      } else {
        for (slot, seconds) in results {
          print(
            String(
              format: "position %5d: %6.2f ms per token, %6.1f tokens/s", slot, seconds * 1e3,
              1 / seconds))
        }
        print(
          "(context \(context), \(Threads.count) threads, \(int8Activations ? "int8" : "f32") activations, median of \(runs); attention spans the slots up to the position, the cache is \(context) slots)"
        )
      }
    }
  }
}
