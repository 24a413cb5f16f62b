import ArgumentParser
import Dispatch
import Foundation
import IR
import KernelBench
import Models
import Runtime
import Sessions

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

    @Argument(help: "The GGUF model.")
    var model: String

    @Option(help: "Prompt length.")
    var tokens: Int = 128

    @Option(help: "Cache slots of the decoding graph (default: --tokens).")
    var context: Int?

    @Flag(help: "Compute the logits of every position (the forward graph), not the KV cache.")
    var allLogits = false

    @Option(help: "Runs after one warm-up run.")
    var runs: Int = 5

    @Option(parsing: .unconditional, help: "Threads (default: all cores).")
    var threads: Int?

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
      try validateThreads(threads)
    }

    func run() throws {
      Threads.set(threads)
      var generator = SplitMix64(seed: 1)
      let ids = (0..<tokens).map { _ in Int32(generator.next() % 49_000) + 17 }
      let start = DispatchTime.now().uptimeNanoseconds
      let measured = allLogits ? forward(ids, start: start) : cached(ids, start: start)
      let rate = Double(tokens) / measured.seconds
      let rss = peakResidentBytes()
      let plan = measured.executable.plan
      let what =
        allLogits
        ? "the logits of every position, no KV cache"
        : "the KV cache (\(measured.context ?? tokens) slots) and the last position's logits"
      if json {
        let context = measured.context.map(String.init) ?? "null"
        print(
          "{\"model_ready_s\": \(measured.ready), \"prefill_tokens\": \(tokens), \"prefill_s\": \(measured.seconds), "
            + "\"tokens_per_s\": \(rate), \"runs\": \(runs), \"threads\": \(Threads.count), "
            + "\"logits\": \"\(allLogits ? "all" : "last")\", \"context\": \(context), "
            + "\"arena_bytes\": \(plan.arenaBytes), \"naive_bytes\": \(plan.naiveBytes), "
            + "\"peak_rss_bytes\": \(rss)}")
      } else {
        print(
          String(
            format: "model ready in %.0f ms (open, trace, compile; weights mapped, not copied)",
            measured.ready * 1e3))
        print(
          String(
            format: "prefill %d tokens: %.1f ms, %.0f tokens/s (median of %d, %d threads)", tokens,
            measured.seconds * 1e3, rate, runs, Threads.count))
        print("computes \(what)")
        print(
          "arena \(plan.arenaBytes) bytes planned for \(plan.naiveBytes) bytes of intermediates; peak RSS \(rss) bytes"
        )
      }
    }

    /// What one measurement found: seconds to a ready model, the median prefill, the executable
    /// and its cache slots (nil without a cache).
    private struct Measured {
      var ready: Double
      var seconds: Double
      var executable: Executable
      var context: Int?
    }

    private func seconds(since start: UInt64) -> Double {
      Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// The decoding prefill graph of `lorac generate`: KV caches and the last position's logits.
    private func cached(_ ids: [Int32], start: UInt64) -> Measured {
      let slots = context ?? tokens
      do {
        let session = DecodeSession(model: try LlamaModel.open(model), context: slots, adapter: nil)
        let prefill = try session.compile(tokens: tokens)
        let ready = seconds(since: start)
        try session.setInputs(prefill, tokens: ids, slot: 0)
        // Every run starts from empty caches, as generation's prefill does; the inputs stay set.
        let median = try KernelBenchmarks.median(runs: runs, setUp: { prefill.resetState() }) {
          try prefill.execute()
        }
        if profile {
          prefill.resetState()
          try printStepProfile(prefill, runs: runs)
        }
        return Measured(ready: ready, seconds: median, executable: prefill, context: slots)
      } catch {
        fail("\(error)")
      }
    }

    /// The forward graph of `lorac logits`: every position's logits.
    private func forward(_ ids: [Int32], start: UInt64) -> Measured {
      do {
        let session = try ForwardSession(
          model: try LlamaModel.open(model), sequence: tokens, adapter: nil)
        let ready = seconds(since: start)
        let median = try KernelBenchmarks.median(runs: runs) { _ = try session.logits(ids) }
        return Measured(ready: ready, seconds: median, executable: session.executable, context: nil)
      } catch {
        fail("\(error)")
      }
    }
  }
}
