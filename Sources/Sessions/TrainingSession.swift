import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// What a LoRA train step is compiled for: the adapter's shape and the batch's.
public struct TrainingConfiguration: Sendable, Hashable {
  public var rank: Int
  public var alpha: Double
  /// Value names to adapt, a glob (`layers.*.attn.{q,k,v,o}`).
  public var targets: String
  /// Seed of the adapter's initial values.
  public var seed: UInt64
  public var precision: WeightPrecision
  public var batch: Int
  public var sequence: Int
  /// Scale the branch by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank.
  public var rsLoRA: Bool
  /// One LoRA instance per attention head on q, k, v and o (the TransformerLens tutorial's
  /// per-head `Lora`); other targets are refused.
  public var perHead: Bool
  /// What the adapter's config names as its base model (nil: `GGUFFile.baseModelName`).
  public var baseModel: String?
  /// What the kernels are planned for (ISA tier, bf16 products).
  public var target: Target

  public init(
    rank: Int = 8, alpha: Double = 16, targets: String = "layers.*.attn.{q,k,v,o}",
    seed: UInt64 = 0, precision: WeightPrecision = .f32, batch: Int, sequence: Int,
    rsLoRA: Bool = false, perHead: Bool = false, baseModel: String? = nil, target: Target = .host
  ) {
    self.rank = rank
    self.alpha = alpha
    self.targets = targets
    self.seed = seed
    self.precision = precision
    self.batch = batch
    self.sequence = sequence
    self.rsLoRA = rsLoRA
    self.perHead = perHead
    self.baseModel = baseModel
    self.target = target
  }
}

/// The optimization schedule of a run.
public struct Schedule: Sendable, Hashable {
  public var steps: Int
  public var learningRate: Double
  /// Linear warm-up steps before cosine decay to 10% of the peak.
  public var warmup: Int
  public var weightDecay: Double
  public var maxGradientNorm: Double
  /// Micro-batches per optimizer step; their gradients are averaged.
  public var accumulate: Int
  /// A checkpoint every `saveEvery` steps (and at the end).
  public var saveEvery: Int
  /// A step to stop after with a checkpoint (the schedule still spans `steps`).
  public var stopAfter: Int?

  public init(
    steps: Int, learningRate: Double, warmup: Int = 5, weightDecay: Double = 0,
    maxGradientNorm: Double = 1, accumulate: Int = 1, saveEvery: Int = 50, stopAfter: Int? = nil
  ) {
    self.steps = steps
    self.learningRate = learningRate
    self.warmup = warmup
    self.weightDecay = weightDecay
    self.maxGradientNorm = maxGradientNorm
    self.accumulate = accumulate
    self.saveEvery = saveEvery
    self.stopAfter = stopAfter
  }

  /// Checks the counts and rates (the messages name the command's flags).
  public func check() throws(SessionError) {
    try SettingChecks.atLeast(
      1,
      [
        ("--steps", steps), ("--accumulate", accumulate), ("--save-every", saveEvery),
        ("--stop-after", stopAfter),
      ])
    try SettingChecks.atLeast(0, [("--warmup", warmup)])
    try SettingChecks.positive("--lr", learningRate)
    try SettingChecks.notNegative("--weight-decay", weightDecay)
    try SettingChecks.positive("--max-grad-norm", maxGradientNorm)
  }

  /// The learning rate of optimizer step `step` (from 0): linear warm-up, then cosine decay to
  /// 10% of the peak.
  public func learningRate(at step: Int) -> Double {
    let progressed = Double(max(0, step - warmup)) / Double(max(1, steps - warmup))
    let cosine = 0.1 + 0.9 * 0.5 * (1 + cos(Double.pi * progressed))
    return learningRate * (step < warmup ? Double(step + 1) / Double(warmup) : cosine)
  }
}

/// What a checkpoint records besides tensors: the settings and fingerprints a resume is checked
/// against.
public struct CheckpointRecord: Sendable, Hashable {
  /// The run's seed: the data order's generator starts from `seed + 2`.
  public var seed: UInt64
  /// The hyper-parameters of the run by flag name (without dashes), as decimal text.
  public var settings: [String: String]
  public var dataFingerprint: String
  public var modelFingerprint: String

  public init(
    seed: UInt64 = 0, settings: [String: String] = [:], dataFingerprint: String = "",
    modelFingerprint: String = ""
  ) {
    self.seed = seed
    self.settings = settings
    self.dataFingerprint = dataFingerprint
    self.modelFingerprint = modelFingerprint
  }
}

/// One optimizer step's figures, reported as training goes.
public struct StepReport: Sendable, Hashable {
  /// The step just taken (from 1) and the schedule's last.
  public var step: Int
  public var total: Int
  /// Whether it is the first step of this run (a resumed run starts past 1).
  public var isFirst: Bool
  /// The mean of the micro-batch losses, the loss whose gradient the update follows.
  public var loss: Float
  public var learningRate: Double
  public var gradientNorm: Double
  public var tokensPerSecond: Double
  /// Seconds the remaining steps should take at this run's pace.
  public var remainingSeconds: Double
}

/// How a call to `train` ended; every ending but an error leaves a checkpoint of the last step.
public enum TrainingOutcome: Sendable, Hashable {
  /// The schedule's last step is done.
  case finished
  /// Stopped after `Schedule.stopAfter`.
  case stopped(step: Int)
  /// Stopped after the step under way when cancellation was requested.
  case cancelled(step: Int)
}

/// A LoRA train step of a GGUF model compiled for one batch shape, with AdamW, and the loop that
/// runs it: schedules, gradient accumulation, checkpoints, resume and cancellation.
public final class TrainingSession {
  public let model: LlamaModel
  public let configuration: TrainingConfiguration
  public let trainer: GraphTrainer
  /// Trainable parameter names, in the order of their gradients among the outputs (from 1).
  public var parameters: [String] { trainer.parameters }
  public var executable: Executable { trainer.executable }

  /// Traces the loss graph, inserts LoRA branches, differentiates and compiles.
  public init(model: LlamaModel, configuration: TrainingConfiguration) throws(SessionError) {
    self.model = model
    self.configuration = configuration
    let c = configuration
    let pipeline = try parsePipeline(
      Pipelines.training(
        rank: c.rank, alpha: c.alpha, targets: c.targets, seed: c.seed,
        rsLoRA: c.rsLoRA ? true : nil, perHead: c.perHead ? true : nil))
    trainer = try wrapping {
      let graph = try pipeline.run(
        try model.trace(
          batch: c.batch, sequence: c.sequence, loss: true,
          precision: c.precision.effective(on: c.target)))
      return try GraphTrainer(
        graph, constants: try model.weights(for: graph),
        optimizer: OptimizerSettings(learningRate: 0, maxGradientNorm: 1), target: c.target)
    }
    // Checked before any step: an adapter on anything else could never be saved.
    let targets = trainer.parameters.filter { $0.hasSuffix(".lora_a") }.map { $0.dropLast(7) }
    if let bad = targets.first(where: { !PEFTAdapter.canAdapt(String($0)) }) {
      throw SessionError(
        "--targets '\(c.targets)' selects '\(bad)', which a PEFT adapter cannot hold; "
          + "adaptable: \(PEFTAdapter.adaptableTargets)")
    }
    // bf16 weights: the rounded copies only the packed forms needed are gone by now.
    if c.precision.effective(on: c.target) == .bf16 { Executable.trimHeap() }
  }

  /// Runs optimizer steps `resume.step + 1 ... schedule.steps` over `examples` (shuffled,
  /// cycled), each on the mean gradient of `schedule.accumulate` micro-batches; appends one JSON
  /// line per step to `folder/metrics.jsonl` and writes a checkpoint (adapter, training state,
  /// metrics, loss curve) every `schedule.saveEvery` steps, at the end, after
  /// `schedule.stopAfter`, and when `cancellation` is requested (after the step under way).
  ///
  /// `progress` is called after every step. A loss that is not finite ends the run with an error.
  ///
  /// With `dataParallel`, each step takes `schedule.accumulate` micro-batches per rank from one
  /// global data order (rank r the r-th share), the gradients are summed across the ranks before
  /// clipping and AdamW, and rank 0 alone writes; the losses are those of one process with
  /// `accumulate` times as many micro-batches. The ranks first check that they agree on the model,
  /// the data and the settings, and compare a checksum of the adapter at every checkpoint.
  public func train(
    examples: [TrainingExample], schedule: Schedule, folder: URL, resume: TrainingState?,
    record: CheckpointRecord, cancellation: Cancellation? = nil,
    dataParallel: DataParallel? = nil, progress: (StepReport) -> Void = { _ in }
  ) throws(SessionError) -> TrainingOutcome {
    guard !trained else {
      throw SessionError(
        "this training session has trained already; make a new one (a resume reads the checkpoint)")
    }
    try schedule.check()
    guard !examples.isEmpty else { throw SessionError("no training examples") }
    trained = true
    if let dataParallel {
      try dataParallel.checkAgreement(
        record: record, resumedStep: resume?.step, examples: examples.count, folder: folder)
    }
    let (ranks, me) = (dataParallel?.size ?? 1, dataParallel?.rank ?? 0)
    let microBatches = schedule.accumulate * ranks
    let optimizer = trainer.optimizer
    optimizer.weightDecay = schedule.weightDecay
    optimizer.maxGradientNorm = schedule.maxGradientNorm
    var generator = SplitMix64(seed: record.seed &+ 2)
    var order = Array(examples.indices)
    var cursor = order.count
    var metrics = Metrics()
    var firstStep = 0
    var elapsedBefore = 0.0
    if let state = resume {
      try trainer.restore(
        parameters: state.parameters, first: state.firstMoments, second: state.secondMoments,
        file: folder.appendingPathComponent(TrainingState.fileName).path)
      guard state.order.count == examples.count else {
        throw SessionError(
          "\(folder.path): the training state orders \(state.order.count) examples, not \(examples.count)"
        )
      }
      optimizer.step = state.optimizerStep
      generator.state = state.generator
      order = state.order
      cursor = state.cursor
      firstStep = state.step
      elapsedBefore = state.elapsed
      metrics = Metrics(reading: folder.appendingPathComponent("metrics.jsonl"), upTo: state.step)
    }
    let (batch, sequence) = (configuration.batch, configuration.sequence)
    let start = DispatchTime.now().uptimeNanoseconds
    var tokensSeen = 0
    for step in firstStep..<schedule.steps {
      optimizer.learningRate = schedule.learningRate(at: step)
      var losses: [Float] = []
      // Every rank walks the whole global order and runs its own share of it.
      for microBatch in 0..<microBatches {
        var rows: [TrainingExample] = []
        for _ in 0..<batch {
          if cursor == order.count {
            order.shuffle(using: &generator)
            cursor = 0
          }
          rows.append(examples[order[cursor]])
          cursor += 1
        }
        tokensSeen += batch * sequence
        guard microBatch / schedule.accumulate == me else { continue }
        losses.append(try trainer.run(PackedBatch(rows, sequence: sequence).inputs))
        if microBatches > 1 { trainer.accumulate() }
      }
      var cancelled = cancellation?.isCancelled ?? false
      var reduceSeconds: Double?
      if let dataParallel {
        let reduceStart = DispatchTime.now().uptimeNanoseconds
        // The ranks' losses in global order, and whether any rank was asked to stop (all stop
        // after the same step, or the next step's collectives would wait forever).
        let gathered = try dataParallel.allGather(
          losses.map(Double.init) + [cancelled ? 1 : 0])
        losses = gathered.flatMap { $0.dropLast().map(Float.init) }
        cancelled = gathered.contains { $0.last != 0 }
        try optimizer.reduceSums(count: microBatches) { (sums, count) throws(SessionError) in
          try dataParallel.allreduceSum(sums, count: count)
        }
        reduceSeconds = Double(DispatchTime.now().uptimeNanoseconds - reduceStart) / 1e9
      }
      let loss =
        losses.count == 1
        ? losses[0] : Float(losses.map(Double.init).reduce(0, +) / Double(losses.count))
      let norm = trainer.update()
      let session = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      let rate = Double(tokensSeen) / session
      let remaining = session / Double(step + 1 - firstStep) * Double(schedule.steps - step - 1)
      metrics.append(
        step: step + 1, loss: loss,
        line:
          "{\"step\": \(step + 1), \"loss\": \(loss), \"lr\": \(optimizer.learningRate), \"grad_norm\": \(norm), \"tokens_per_s\": \(rate), \"elapsed_s\": \(elapsedBefore + session), \"rss_bytes\": \(residentBytes()), \"peak_rss_bytes\": \(peakResidentBytes())"
          + (reduceSeconds.map { ", \"ranks\": \(ranks), \"allreduce_s\": \($0)" } ?? "") + "}"
      )
      progress(
        StepReport(
          step: step + 1, total: schedule.steps, isFirst: step == firstStep, loss: loss,
          learningRate: optimizer.learningRate, gradientNorm: norm, tokensPerSecond: rate,
          remainingSeconds: remaining))
      if !loss.isFinite {
        throw SessionError("the loss is \(loss) at step \(step + 1); lower --lr")
      }
      // One process stops for a request made up to here (the progress callback may make one);
      // ranks stop for the request they agreed on in the step's gather.
      if dataParallel == nil { cancelled = cancellation?.isCancelled ?? false }
      let stopping = cancelled || step + 1 == schedule.stopAfter
      if (step + 1) % schedule.saveEvery == 0 || step + 1 == schedule.steps || stopping {
        if let dataParallel {
          try dataParallel.checkSameAdapter(executable, parameters, step: step + 1)
        }
        var state = TrainingState(
          step: step + 1, optimizerStep: optimizer.step, elapsed: elapsedBefore + session,
          generator: generator.state, order: order, cursor: cursor, threads: Threads.count,
          settings: record.settings, dataFingerprint: record.dataFingerprint,
          modelFingerprint: record.modelFingerprint, parameters: [:], firstMoments: [:],
          secondMoments: [:])
        for name in parameters {
          guard let moments = optimizer.moments(of: name) else { continue }
          state.firstMoments[name] = moments.first
          state.secondMoments[name] = moments.second
        }
        if me == 0 { try checkpoint(folder: folder, state: state, metrics: metrics) }
      }
      if stopping && step + 1 < schedule.steps {
        return cancelled ? .cancelled(step: step + 1) : .stopped(step: step + 1)
      }
    }
    return .finished
  }

  /// One optimizer step on one micro-batch of `rows` (cut or padded to the configured sequence;
  /// as many rows as the configured batch) at `learningRate`; returns the loss before the update.
  ///
  /// AdamW clips the gradients' global norm to 1 with no weight decay (`trainer.optimizer` holds
  /// the settings); a session that steps cannot `train` afterwards.
  public func step(_ rows: [TrainingExample], learningRate: Double) throws(SessionError) -> Float {
    guard rows.count == configuration.batch else {
      throw SessionError(
        "a train step takes \(configuration.batch) examples (the configured batch), got \(rows.count)"
      )
    }
    trained = true
    trainer.optimizer.learningRate = learningRate
    return try trainer.step(PackedBatch(rows, sequence: configuration.sequence).inputs)
  }

  /// The adapter as trained so far, for decoding or evaluation in the same process.
  public func adapter() throws(SessionError) -> PEFTAdapter {
    var tensors: [String: HostTensor] = [:]
    for name in parameters { tensors[name] = try wrapping { try executable.value(named: name) } }
    let targets = parameters.filter { $0.hasSuffix(".lora_a") }.map { String($0.dropLast(7)) }
    return PEFTAdapter(
      rank: configuration.rank, alpha: configuration.alpha, useRSLoRA: configuration.rsLoRA,
      targets: targets, tensors: tensors, perHead: configuration.perHead)
  }

  /// The files a checkpoint writes, in order: the training state last.
  public static let checkpointFiles = [
    "metrics.jsonl", "loss.svg", "adapter_model.safetensors", "adapter_config.json",
    TrainingState.fileName,
  ]

  /// Whether this session has cleared the folder's stale temporary files yet.
  private var clearedStaleFiles = false

  /// Whether `train` or `step` has run: the parameters and AdamW's moments are no longer the
  /// initial ones, so `train` (which starts from them, or from a saved state) refuses.
  private var trained = false

  /// Writes metrics.jsonl, loss.svg, the PEFT adapter and, last, the training state, each
  /// crash-safely: after a crash the state never claims steps the other files lack.
  ///
  /// The first checkpoint of a session also removes the temporary files (`.NAME.UUID.tmp`) that
  /// an earlier, killed run left mid-write for these names.
  public func checkpoint(
    folder: URL, state: TrainingState, metrics: Metrics
  ) throws(SessionError) {
    var state = state
    do {
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    } catch {
      throw SessionError("\(folder.path): cannot create the folder: \(error.localizedDescription)")
    }
    if !clearedStaleFiles {
      removeStaleTemporaryFiles(in: folder, for: TrainingSession.checkpointFiles)
      clearedStaleFiles = true
    }
    try wrapping {
      for name in parameters { state.parameters[name] = try executable.value(named: name) }
      try writeAtomically(
        Data(metrics.lines.map { $0 + "\n" }.joined().utf8),
        to: folder.appendingPathComponent("metrics.jsonl"))
      try writeAtomically(
        Data(LossCurve.svg(metrics.losses).utf8), to: folder.appendingPathComponent("loss.svg"))
    }
    try saveAdapter(to: folder)
    do {
      try state.write(to: folder)
    } catch {
      throw SessionError(error.message)
    }
  }

  /// Writes the adapter in PEFT's layout to `folder`: adapter_model.safetensors and
  /// adapter_config.json (the configuration's rank and alpha).
  public func saveAdapter(to folder: URL) throws(SessionError) {
    let adapter = try adapter()
    let baseModel = configuration.baseModel ?? model.baseModelName
    try wrapping { try adapter.save(to: folder, config: model.config, baseModel: baseModel) }
  }
}

/// The lines of metrics.jsonl and the losses they hold.
public struct Metrics: Sendable {
  public var lines: [String] = []
  public var losses: [(step: Int, loss: Double)] = []

  public init() {}

  /// The lines of an earlier run's file up to step `last` (a crash may have left later ones).
  public init(reading url: URL, upTo last: Int) {
    guard let text = try? String(contentsOf: url, encoding: .utf8) else { return }
    for line in text.split(separator: "\n") {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let step = object["step"] as? Int, let loss = object["loss"] as? Double, step <= last
      else { continue }
      lines.append(String(line))
      losses.append((step, loss))
    }
  }

  public mutating func append(step: Int, loss: Float, line: String) {
    lines.append(line)
    losses.append((step, Double(loss)))
  }
}
