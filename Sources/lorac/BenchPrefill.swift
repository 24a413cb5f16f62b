import ArgumentParser
import Dispatch
import Foundation
import IR
import Models
import Runtime

extension Bench {
  /// `lorac bench prefill`: time to a ready model, and prefill throughput.
  struct Prefill: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Measure model load (open, trace, compile) and prefill of --tokens tokens.",
      discussion:
        "Prefill computes the logits of every position. Medians of --runs runs after a warm-up.")

    @Argument(help: "The GGUF model.")
    var model: String

    @Option(help: "Prompt length.")
    var tokens: Int = 128

    @Option(help: "Runs after one warm-up run.")
    var runs: Int = 5

    @Option(parsing: .unconditional, help: "Threads (default: all cores).")
    var threads: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
      if tokens < 1 { throw ValidationError("--tokens must be at least 1") }
      if runs < 1 { throw ValidationError("--runs must be at least 1") }
      try validateThreads(threads)
    }

    func run() throws {
      Threads.set(threads)
      let start = DispatchTime.now().uptimeNanoseconds
      let session = ForwardSession(modelPath: model, sequence: tokens, adapter: nil)
      let ready = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      var generator = SplitMix64(seed: 1)
      let ids = (0..<tokens).map { _ in Int32(generator.next() % 49_000) + 17 }
      let seconds = KernelBenchmarks.median(runs: runs) { _ = session.logits(ids) }
      let rate = Double(tokens) / seconds
      let rss = peakResidentBytes()
      if json {
        print(
          "{\"model_ready_s\": \(ready), \"prefill_tokens\": \(tokens), \"prefill_s\": \(seconds), "
            + "\"tokens_per_s\": \(rate), \"runs\": \(runs), \"threads\": \(Threads.count), "
            + "\"arena_bytes\": \(session.executable.plan.arenaBytes), \"naive_bytes\": \(session.executable.plan.naiveBytes), "
            + "\"peak_rss_bytes\": \(rss)}")
      } else {
        print(
          String(
            format: "model ready in %.0f ms (open, trace, compile; weights mapped, not copied)",
            ready * 1e3))
        print(
          String(
            format: "prefill %d tokens: %.1f ms, %.0f tokens/s (median of %d, %d threads)", tokens,
            seconds * 1e3, rate, runs, Threads.count))
        print(
          "arena \(session.executable.plan.arenaBytes) bytes planned for \(session.executable.plan.naiveBytes) bytes of intermediates; peak RSS \(rss) bytes"
        )
      }
    }
  }
}

/// The process's peak resident set size in bytes (VmHWM), or 0 when unknown.
func peakResidentBytes() -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
    return 0
  }
  for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
    let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
    return kilobytes * 1024
  }
  return 0
}
