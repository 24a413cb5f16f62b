import Dispatch
import IR
import KernelBench
import Models
import Runtime
import Sessions

/// Time to a ready model, and the prefill of a prompt of random tokens.
///
/// By default a prefill is what generation runs before its first token (and what llama.cpp and
/// PyTorch with `logits_to_keep=1` run): the KV cache of the prompt and the last position's
/// logits, through the decoding prefill graph of `lorac generate`. With `allLogits` it is the
/// forward graph of `lorac logits`, the head product at every position.
public struct PrefillBenchmark: Sendable {
  public var tokens: Int
  /// Cache slots of the decoding graph (nil: `tokens`).
  public var context: Int?
  public var allLogits: Bool
  public var runs: Int
  public var target: Target
  /// Globs of values captured in every run (each run then also copies them out).
  public var captures: [String]

  public init(
    tokens: Int, context: Int? = nil, allLogits: Bool = false, runs: Int, target: Target = .host,
    captures: [String] = []
  ) {
    self.tokens = tokens
    self.context = context
    self.allLogits = allLogits
    self.runs = runs
    self.target = target
    self.captures = captures
  }

  /// What one measurement found: seconds to a ready model (open, trace, compile), the median
  /// prefill, the arena plan, the cache slots (nil without a cache) and the profile.
  public struct Result: Sendable {
    public var ready: Double
    public var seconds: Double
    public var arenaBytes: Int
    public var naiveBytes: Int
    public var context: Int?
    public var peakResidentBytes: Int
    public var profile: StepProfile?
  }

  /// Opens the model at `path`, compiles and times `runs` prefills after a warm-up (and, with
  /// `profile`, as many again kernel by kernel; the cached prefill only).
  public func measure(_ path: String, profile: Bool = false) throws(SessionError) -> Result {
    var generator = SplitMix64(seed: 1)
    let ids = (0..<tokens).map { _ in Int32(generator.next() % 49_000) + 17 }
    let start = DispatchTime.now().uptimeNanoseconds
    let model = try LlamaModel.open(path)
    if allLogits {
      let session = try ForwardSession(
        model: model, sequence: tokens, adapter: nil, hooks: Hooks(captures: captures),
        target: target)
      let ready = seconds(since: start)
      let median = try wrapping {
        try KernelBenchmarks.median(runs: runs) { _ = try session.run(ids) }
      }
      return result(ready, median, session.executable, context: nil, profile: nil)
    }
    let slots = context ?? tokens
    let session = try DecodeSession(
      model: model, context: slots, adapter: nil, hooks: Hooks(captures: captures), target: target)
    let prefill = try session.compile(tokens: tokens)
    let ready = seconds(since: start)
    return try wrapping {
      try session.setInputs(prefill, tokens: ids, slot: 0)
      // Every run starts from empty caches, as generation's prefill does; the inputs stay set.
      let median = try KernelBenchmarks.median(runs: runs, setUp: { prefill.resetState() }) {
        try prefill.execute()
        // Captured values are copied out, as generation does.
        for output in prefill.graph.outputs.indices.dropFirst() { _ = prefill.output(output) }
      }
      var timed: StepProfile?
      if profile {
        prefill.resetState()
        timed = try StepProfile(prefill, runs: runs)
      }
      return result(ready, median, prefill, context: slots, profile: timed)
    }
  }

  private func result(
    _ ready: Double, _ seconds: Double, _ executable: Executable, context: Int?,
    profile: StepProfile?
  ) -> Result {
    Result(
      ready: ready, seconds: seconds, arenaBytes: executable.plan.arenaBytes,
      naiveBytes: executable.plan.naiveBytes, context: context,
      peakResidentBytes: peakResidentBytes(), profile: profile)
  }

  /// The figures as one JSON object, or as lines of text.
  public func report(_ result: Result, json: Bool) -> String {
    let rate = Double(tokens) / result.seconds
    let rss = result.peakResidentBytes
    if json {
      let context = result.context.map(String.init) ?? "null"
      return
        "{\"model_ready_s\": \(result.ready), \"prefill_tokens\": \(tokens), \"prefill_s\": \(result.seconds), "
        + "\"tokens_per_s\": \(rate), \"runs\": \(runs), \"threads\": \(Threads.count), "
        + "\"logits\": \"\(allLogits ? "all" : "last")\", \"context\": \(context), "
        + "\"arena_bytes\": \(result.arenaBytes), \"naive_bytes\": \(result.naiveBytes), "
        + "\"peak_rss_bytes\": \(rss)}"
    }
    let what =
      allLogits
      ? "the logits of every position, no KV cache"
      : "the KV cache (\(result.context ?? tokens) slots) and the last position's logits"
    return [
      String(
        format: "model ready in %.0f ms (open, trace, compile; weights mapped, not copied)",
        result.ready * 1e3),
      String(
        format: "prefill %d tokens: %.1f ms, %.0f tokens/s (median of %d, %d threads)", tokens,
        result.seconds * 1e3, rate, runs, Threads.count),
      "computes \(what)",
      "arena \(result.arenaBytes) bytes planned for \(result.naiveBytes) bytes of intermediates; "
        + "peak RSS \(rss) bytes",
    ].joined(separator: "\n")
  }
}
