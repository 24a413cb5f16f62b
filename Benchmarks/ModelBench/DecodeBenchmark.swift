import Dispatch
import IR
import KernelBench
import Models
import Runtime
import Sessions

/// One-token KV-cache decoding steps at several cache positions.
public struct DecodeBenchmark: Sendable {
  /// Cache positions the step is timed at.
  public var positions: [Int]
  public var runs: Int
  public var target: Target

  public init(positions: [Int], runs: Int, target: Target = .host) {
    self.positions = positions
    self.runs = runs
    self.target = target
  }

  /// The cache slots: the last position, and room for it, rounded up to 16.
  public var context: Int { ((positions.max() ?? 0) + 16) / 16 * 16 }

  /// What one measurement found.
  public struct Result: Sendable {
    /// The median step at each position, in order.
    public var steps: [(position: Int, seconds: Double)]
    /// The step's compile time (trace, passes, plan), without `packing`: the weights packed once
    /// at load (q4_1/q8_0 interleaved by 16 rows, f32 copied to huge pages).
    public var compile: Double
    public var packing: Double
    public var packedBytes: Int
    public var peakResidentBytes: Int
    /// The last position's steps kernel by kernel.
    public var profile: StepProfile?
  }

  public func measure(_ model: LlamaModel, profile: Bool = false) throws(SessionError) -> Result {
    let session = DecodeSession(model: model, context: context, adapter: nil, target: target)
    let start = DispatchTime.now().uptimeNanoseconds
    let step = try session.compile(tokens: 1)
    // Interleaving q4_1/q8_0 weights for int8 activations is loading work, not compiling.
    let packing = step.packingSeconds
    let compile = seconds(since: start) - packing
    var steps: [(Int, Double)] = []
    var timed: StepProfile?
    try wrapping {
      for position in positions {
        try session.setInputs(step, tokens: [504], slot: position)
        steps.append((position, try KernelBenchmarks.median(runs: runs) { try step.execute() }))
        if profile && position == positions.last { timed = try StepProfile(step, runs: runs) }
      }
    }
    return Result(
      steps: steps, compile: compile, packing: packing, packedBytes: step.packedWeightBytes,
      peakResidentBytes: peakResidentBytes(), profile: timed)
  }

  /// The figures as one JSON object, or as lines of text.
  public func report(_ result: Result, json: Bool) -> String {
    let int8 = target.int8Activations
    if json {
      let entries = result.steps.map {
        "\"\($0.position)\": {\"step_s\": \($0.seconds), \"tokens_per_s\": \(1 / $0.seconds)}"
      }
      // The top-level rate is that of the median step over the positions.
      let middle = result.steps.map(\.seconds).sorted()[result.steps.count / 2]
      return
        "{\"context\": \(context), \"threads\": \(Threads.count), \"int8_activations\": \(int8), \"runs\": \(runs), \"tokens_per_s\": \(1 / middle), \"compile_s\": \(result.compile), \"packing_s\": \(result.packing), \"packed_bytes\": \(result.packedBytes), \"positions\": {\(entries.joined(separator: ", "))}, \"peak_rss_bytes\": \(result.peakResidentBytes)}"
    }
    let steps = result.steps.map { position, seconds in
      String(
        format: "position %5d: %6.2f ms per token, %6.1f tokens/s", position, seconds * 1e3,
        1 / seconds)
    }
    return
      (steps + [
        "(context \(context), \(Threads.count) threads, \(int8 ? "int8" : "f32") activations, median of \(runs); attention spans the slots up to the position, the cache is \(context) slots)"
      ]).joined(separator: "\n")
  }
}
