import Dispatch
import IR
import KernelBench
import Models
import Passes
import Runtime
import Sessions

/// LoRA train steps (forward, backward, AdamW) of a GGUF model on random tokens, every position
/// weighted, and what compiling them cost.
public struct TrainStepBenchmark: Sendable {
  public var batch: Int
  public var sequence: Int
  public var rank: Int
  public var targets: String
  /// The passes between `lora` / `freeze` and the executable.
  public var passes: String
  public var precision: WeightPrecision
  public var runs: Int
  public var target: Target

  public init(
    batch: Int, sequence: Int, rank: Int, targets: String,
    passes: String = Pipelines.trainingPasses,
    precision: WeightPrecision, runs: Int, target: Target = .host
  ) {
    self.batch = batch
    self.sequence = sequence
    self.rank = rank
    self.targets = targets
    self.passes = passes
    self.precision = precision
    self.runs = runs
    self.target = target
  }

  /// What one measurement found.
  public struct Result: Sendable {
    /// The median step.
    public var seconds: Double
    /// Compile is trace + passes + plan (and steps); `weights` (binding them, rounding to bf16)
    /// and `packing` (bf16 panels) are loading, apart from it.
    public var compile: Double
    public var trace: Double
    public var passes: Double
    public var weights: Double
    public var packing: Double
    public var packedBytes: Int
    public var arenaBytes: Int
    public var instructions: Int
    public var peakResidentBytes: Int
    public var profile: StepProfile?
  }

  /// Compiles the train step of `model` and times `runs` steps after a warm-up (and, with
  /// `profile`, one more kernel by kernel).
  public func measure(_ model: LlamaModel, profile: Bool = false) throws(SessionError) -> Result {
    if sequence > model.contextLength {
      throw SessionError(
        "--seq \(sequence) is more than the model's context of \(model.contextLength) tokens")
    }
    let start = DispatchTime.now().uptimeNanoseconds
    var phases: [Double] = []
    let pipeline = try parsePipeline(
      Pipelines.training(rank: rank, alpha: Double(2 * rank), targets: targets, passes: passes))
    let executable = try wrapping {
      let traced = try model.trace(
        batch: batch, sequence: sequence, loss: true, precision: precision)
      phases.append(seconds(since: start))
      let graph = try pipeline.run(traced)
      phases.append(seconds(since: start))
      let constants = try model.weights(for: graph)
      phases.append(seconds(since: start))
      return try Executable(graph, constants: constants, target: target)
    }
    if precision == .bf16 { Executable.trimHeap() }
    let (trace, passes, weights) = (phases[0], phases[1] - phases[0], phases[2] - phases[1])
    let packing = executable.packingSeconds
    let compile = seconds(since: start) - weights - packing
    let trainer = try GraphTrainer(
      executable, optimizer: OptimizerSettings(learningRate: 1e-4, maxGradientNorm: 1))
    var generator = SplitMix64(seed: 1)
    let count = batch * sequence
    let ids = (0..<(count + 1)).map { _ in
      Int32(generator.next() % UInt64(model.config.vocabularySize))
    }
    let shape = [batch, sequence]
    return try wrapping {
      try executable.set("tokens", HostTensor(shape: shape, ints: Array(ids.prefix(count))))
      try executable.set("targets", HostTensor(shape: shape, ints: Array(ids.dropFirst())))
      try executable.set(
        "positions", HostTensor(shape: shape, ints: (0..<count).map { Int32($0 % sequence) }))
      try executable.set(
        "weights", HostTensor(shape: shape, floats: [Float](repeating: 1, count: count)))
      let step = try KernelBenchmarks.median(runs: runs) {
        try executable.execute()
        trainer.update()
      }
      let rss = peakResidentBytes()
      return Result(
        seconds: step, compile: compile, trace: trace, passes: passes, weights: weights,
        packing: packing, packedBytes: executable.packedWeightBytes,
        arenaBytes: executable.plan.arenaBytes, instructions: executable.graph.body.count,
        peakResidentBytes: rss, profile: profile ? try StepProfile(executable, runs: 1) : nil)
    }
  }

  /// The figures as one JSON object, or as lines of text.
  public func report(_ result: Result, json: Bool) -> String {
    let rate = Double(batch * sequence) / result.seconds
    let plan = result.compile - result.trace - result.passes
    if json {
      return
        "{\"tokens_per_s\": \(rate), \"step_s\": \(result.seconds), \"runs\": \(runs), "
        + "\"batch\": \(batch), \"seq\": \(sequence), \"rank\": \(rank), "
        + "\"targets\": \"\(targets)\", \"threads\": \(Threads.count), "
        + "\"compile_s\": \(result.compile), \"trace_s\": \(result.trace), \"passes_s\": \(result.passes), "
        + "\"plan_s\": \(plan), \"weights_s\": \(result.weights), \"packing_s\": \(result.packing), "
        + "\"precision\": \"\(precision)\", \"packed_bytes\": \(result.packedBytes), "
        + "\"arena_bytes\": \(result.arenaBytes), "
        + "\"instructions\": \(result.instructions), \"peak_rss_bytes\": \(result.peakResidentBytes)}"
    }
    var lines = [
      String(
        format:
          "train step %dx%d, rank %d on %@, %@: %.1f ms, %.0f tokens/s (median of %d, %d threads)",
        batch, sequence, rank, targets, precision.description, result.seconds * 1e3, rate, runs,
        Threads.count),
      String(
        format:
          "compile %.0f ms (trace %.0f, passes %.0f, plan %.0f), %d instructions; arena %d bytes; peak RSS %d bytes",
        result.compile * 1e3, result.trace * 1e3, result.passes * 1e3, plan * 1e3,
        result.instructions, result.arenaBytes, result.peakResidentBytes),
    ]
    if precision == .bf16 {
      lines.append(
        String(
          format: "weights rounded to bf16 in %.0f ms, packed in %.0f ms (%d bytes)",
          result.weights * 1e3, result.packing * 1e3, result.packedBytes))
    }
    return lines.joined(separator: "\n")
  }
}
