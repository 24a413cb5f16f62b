import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// A preference pair tokenized: the prompt followed by the chosen and by the rejected completion
/// (end-of-sequence appended), weighted on the completion's tokens only.
public struct PreferencePair: Sendable, Hashable {
  public var chosen: TrainingExample
  public var rejected: TrainingExample

  public init(chosen: TrainingExample, rejected: TrainingExample) {
    self.chosen = chosen
    self.rejected = rejected
  }

  /// Reads `{"prompt", "chosen", "rejected"}` lines; a bad line is named with its number.
  public static func load(path: String, tokenizer: Tokenizer) throws(SessionError)
    -> [PreferencePair]
  {
    let lines: [(line: Int, object: JSONValue)]
    do {
      lines = try Dataset.jsonLines(path: path)
    } catch {
      throw SessionError(error.message)
    }
    var pairs: [PreferencePair] = []
    for (line, object) in lines {
      var texts: [String] = []
      for key in ["prompt", "chosen", "rejected"] {
        guard let value = object[key] else {
          throw SessionError("\(path):\(line): expected \"prompt\", \"chosen\" and \"rejected\"")
        }
        guard case .string(let text) = value else {
          throw SessionError("\(path):\(line): \"\(key)\" must be a string, got \(value.kindName)")
        }
        texts.append(text)
      }
      pairs.append(
        PreferencePair(
          chosen: Dataset.completion(prompt: texts[0], completion: texts[1], tokenizer: tokenizer),
          rejected: Dataset.completion(
            prompt: texts[0], completion: texts[2], tokenizer: tokenizer)))
    }
    return pairs
  }
}

/// The DPO graphs traced into IR: the summed log-probability of each row's weighted tokens and
/// the DPO loss on it.
public enum DPOGraphs {
  /// `sum_t w[t] log softmax(logits[t])[target[t]]` per row, `[rows]`, named "logps".
  static func sequenceLogProbabilities(_ logits: Tensor, targets: Tensor, weights: Tensor)
    throws(TraceError) -> Tensor
  {
    let picked = try RLHFGraphs.pick(logSoftmax(logits), targets)
    return try (picked * weights).sum(axes: [1]).named("logps")
  }

  /// Traces the forward graph of `rows` rows returning their `logps`.
  ///
  /// The reference's, run at adapter scale 0. Inputs `tokens`, `positions`, `targets` (i32), `weights` (f32), all
  /// `[rows, sequence]`.
  public static func logProbabilities(
    _ config: LlamaConfig, rows: Int, sequence: Int, weightType: @escaping (String) -> DType?
  ) throws(TraceError) -> Graph {
    try Llama.trace(config, batch: rows, sequence: sequence, weightType: weightType) {
      _, _, logits throws(TraceError) in
      let b = logits.builder
      let targets = try b.input(name: "targets", shape: [rows, sequence], dtype: .i32)
      let weights = try b.input(name: "weights", shape: [rows, sequence])
      return [try sequenceLogProbabilities(logits, targets: targets, weights: weights)]
    }
  }

  /// The DPO loss of `pairs` pairs (TRL's sigmoid loss).
  ///
  /// Rows `0 ..< pairs` are chosen and `pairs ..< 2 pairs` rejected:
  /// ```
  /// x    = beta ((logp(c) - ref(c)) - (logp(r) - ref(r)))
  /// loss = mean(-log sigmoid(x)) = mean(softplus(-x))
  /// ```
  /// Inputs as `logProbabilities` for `2 pairs` rows plus `reference_logps: f32[2 pairs]`.
  /// Outputs: `loss`, `reward_margin` (mean of `beta (logp(c) - ref(c)) - beta (logp(r) -
  /// ref(r))`), `accuracy` (the fraction of pairs whose chosen reward is the larger),
  /// `chosen_reward`, `rejected_reward` (means).
  public static func objective(
    _ config: LlamaConfig, pairs: Int, sequence: Int, beta: Double,
    weightType: @escaping (String) -> DType?
  ) throws(TraceError) -> Graph {
    let rows = 2 * pairs
    return try Llama.trace(config, batch: rows, sequence: sequence, weightType: weightType) {
      _, _, logits throws(TraceError) in
      let b = logits.builder
      let targets = try b.input(name: "targets", shape: [rows, sequence], dtype: .i32)
      let weights = try b.input(name: "weights", shape: [rows, sequence])
      let reference = try b.input(name: "reference_logps", shape: [rows])
      let logps = try sequenceLogProbabilities(logits, targets: targets, weights: weights)
      let ratios = try logps - reference
      let chosen = try (beta * ratios.slice(start: [0], end: [pairs])).named("chosen_rewards")
      let rejected = try (beta * ratios.slice(start: [pairs], end: [rows]))
        .named("rejected_rewards")
      let x = try chosen - rejected
      // -log sigmoid(x) = -log_softmax([x, 0])[0]: stable for any x, and its gradient at x = 0 is
      // -1/2 (relu(-x) + log(1 + exp(-|x|)) has the same value but a zero subgradient there,
      // where every run starts: the policy equals the reference, so nothing ever learned).
      let pairsAndZero = try concat(
        [x.reshaped([pairs, 1]), b.fill(0, shape: [pairs, 1])], axis: 1)
      let losses = try -logSoftmax(pairsAndZero, axis: 1).slice(start: [0, 0], end: [pairs, 1])
        .reshaped([pairs])
      let loss = try losses.mean(axes: [0]).named("loss")
      let margin = try x.mean(axes: [0]).named("reward_margin")
      let accuracy = try x.compare(.gt, 0).cast(to: .f32).mean(axes: [0]).named("accuracy")
      return [
        loss, margin, accuracy, try chosen.mean(axes: [0]).named("chosen_reward"),
        try rejected.mean(axes: [0]).named("rejected_reward"),
      ]
    }
  }
}

/// What a DPO step is compiled for.
public struct DPOConfiguration: Sendable, Hashable {
  public var rank = 8
  public var alpha = 16.0
  public var targets = "layers.*.attn.{q,k,v,o}"
  public var seed: UInt64 = 0
  public var rsLoRA = false
  public var beta = 0.1
  /// Pairs per step (the graph holds twice as many rows).
  public var pairs = 4
  public var sequence = 64
  /// What the adapter's config names as its base model (nil: `GGUFFile.baseModelName`).
  public var baseModel: String?
  public var target: Target = .host

  public init() {}
}

/// One DPO step's figures.
public struct DPOFigures: Sendable, Hashable {
  public var loss: Double
  public var rewardMargin: Double
  public var accuracy: Double
  public var chosenReward: Double
  public var rejectedReward: Double
}

/// DPO with LoRA: the policy is the model with the adapter, the reference the same compiled
/// forward graph at adapter scale 0 (no second copy of the weights).
public final class DPOSession {
  public let model: LlamaModel
  public let configuration: DPOConfiguration
  public let trainer: GraphTrainer
  /// The summed log-probabilities of `2 pairs` rows at adapter scale 0: the reference.
  public let reference: Executable
  public var parameters: [String] { trainer.parameters }

  public init(model: LlamaModel, configuration c: DPOConfiguration) throws(SessionError) {
    self.model = model
    configuration = c
    guard c.pairs >= 1, c.sequence >= 1, c.beta > 0, c.beta.isFinite else {
      throw SessionError("DPO needs at least 1 pair per step, 1 token and a positive beta")
    }
    let lora = Pipelines.training(
      rank: c.rank, alpha: c.alpha, targets: c.targets, seed: c.seed,
      rsLoRA: c.rsLoRA ? true : nil)
    let forms = PackedForms()
    trainer = try wrapping {
      let graph = try parsePipeline(lora).run(
        try DPOGraphs.objective(
          model.config, pairs: c.pairs, sequence: c.sequence, beta: c.beta,
          weightType: model.storedWeightType))
      let executable = try Executable(
        graph, constants: try model.weights(for: graph), packedForms: forms, target: c.target)
      return try GraphTrainer(
        executable, optimizer: OptimizerSettings(learningRate: 0, maxGradientNorm: 1))
    }
    let adapted = trainer.parameters.filter { $0.hasSuffix(".lora_a") }.map { $0.dropLast(7) }
    if adapted.isEmpty {
      throw SessionError("--targets '\(c.targets)' selects no linear layer of the model")
    }
    if let bad = adapted.first(where: { !PEFTAdapter.canAdapt(String($0)) }) {
      throw SessionError(
        "--targets '\(c.targets)' selects '\(bad)', which a PEFT adapter cannot hold; "
          + "adaptable: \(PEFTAdapter.adaptableTargets)")
    }
    reference = try wrapping {
      let graph = try parsePipeline(
        Pipelines.adapted(
          rank: c.rank, alpha: c.alpha, targets: c.targets, seed: c.seed, rsLoRA: c.rsLoRA)
      ).run(
        try DPOGraphs.logProbabilities(
          model.config, rows: 2 * c.pairs, sequence: c.sequence,
          weightType: model.storedWeightType))
      return try Executable(
        graph, constants: try model.weights(for: graph), packedForms: forms, target: c.target)
    }
    try setAdapterScale(0, of: reference)
  }

  /// The inputs of a step on `pairs`: chosen rows, then rejected rows, and their reference
  /// log-probabilities (computed here, at adapter scale 0).
  public func inputs(_ pairs: [PreferencePair]) throws(SessionError) -> [String: HostTensor] {
    guard pairs.count == configuration.pairs else {
      throw SessionError(
        "a DPO step takes \(configuration.pairs) pairs (the configured batch), got \(pairs.count)")
    }
    var inputs = PackedBatch(
      pairs.map(\.chosen) + pairs.map(\.rejected), sequence: configuration.sequence
    ).inputs
    let outputs = try wrapping { try reference.run(inputs: inputs) }
    inputs["reference_logps"] = outputs[0]
    return inputs
  }

  /// The loss and figures of a step on `pairs` with its gradients, no update.
  public func evaluate(_ pairs: [PreferencePair]) throws(SessionError) -> DPOFigures {
    let outputs = try trainer.outputs(try inputs(pairs))
    let figures = outputs.prefix(5).map { Double($0.floats()[0]) }
    return DPOFigures(
      loss: figures[0], rewardMargin: figures[1], accuracy: figures[2], chosenReward: figures[3],
      rejectedReward: figures[4])
  }

  /// The gradients of the loss of the last run, by parameter.
  public func gradients() -> [String: [Float]] {
    let first = trainer.executable.graph.outputs.count - parameters.count
    var result: [String: [Float]] = [:]
    for (index, name) in parameters.enumerated() {
      result[name] = trainer.executable.output(first + index).floats()
    }
    return result
  }

  /// Replaces adapter parameters by name (a test's fixed values).
  public func setParameters(_ tensors: [String: HostTensor]) throws(SessionError) {
    for (name, tensor) in tensors { try wrapping { try trainer.executable.set(name, tensor) } }
  }

  /// Runs steps `resume.step + 1 ... schedule.steps` over `pairs` (shuffled, cycled), as
  /// `TrainingSession.train` does for SFT: one JSON line per step in `folder/metrics.jsonl`
  /// (`step`, `loss`, `reward_margin`, `accuracy`, `chosen_reward`, `rejected_reward`, `lr`,
  /// `grad_norm`, `pairs_per_s`, `elapsed_s`), checkpoints (adapter, training state, metrics,
  /// loss curve) every `schedule.saveEvery` steps, at the end, after `schedule.stopAfter` and on
  /// cancellation.
  public func train(
    pairs: [PreferencePair], schedule: Schedule, folder: URL, resume: TrainingState?,
    record: CheckpointRecord, cancellation: Cancellation? = nil, dataParallel: DataParallel? = nil,
    progress: (StepReport, DPOFigures) -> Void = { _, _ in }
  ) throws(SessionError) -> TrainingOutcome {
    try schedule.check()
    guard !pairs.isEmpty else { throw SessionError("no preference pairs") }
    if let dataParallel {
      try dataParallel.checkAgreement(
        record: record, resumedStep: resume?.step, examples: pairs.count, folder: folder)
    }
    let (ranks, me) = (dataParallel?.size ?? 1, dataParallel?.rank ?? 0)
    let optimizer = trainer.optimizer
    optimizer.weightDecay = schedule.weightDecay
    optimizer.maxGradientNorm = schedule.maxGradientNorm
    var generator = SplitMix64(seed: record.seed &+ 2)
    var order = Array(pairs.indices)
    var cursor = order.count
    var metrics = Metrics()
    var firstStep = 0
    var elapsedBefore = 0.0
    if let state = resume {
      try trainer.restore(
        parameters: state.parameters, first: state.firstMoments, second: state.secondMoments,
        file: folder.appendingPathComponent(TrainingState.fileName).path)
      guard state.order.count == pairs.count else {
        throw SessionError(
          "\(folder.path): the training state orders \(state.order.count) pairs, not \(pairs.count)"
        )
      }
      optimizer.step = state.optimizerStep
      generator.state = state.generator
      (order, cursor, firstStep, elapsedBefore) = (
        state.order, state.cursor, state.step, state.elapsed
      )
      metrics = Metrics(reading: folder.appendingPathComponent("metrics.jsonl"), upTo: state.step)
    }
    let start = DispatchTime.now().uptimeNanoseconds
    for step in firstStep..<schedule.steps {
      optimizer.learningRate = schedule.learningRate(at: step)
      // Every rank walks the whole global order (a step's pairs for all ranks) and runs its share.
      var batch: [PreferencePair] = []
      for index in 0..<(configuration.pairs * ranks) {
        if cursor == order.count {
          order.shuffle(using: &generator)
          cursor = 0
        }
        if index / configuration.pairs == me { batch.append(pairs[order[cursor]]) }
        cursor += 1
      }
      var figures = try evaluate(batch)
      var cancelled = cancellation?.isCancelled ?? false
      if let dataParallel {
        // The step's figures and gradient are the means over the ranks' equal shares; every rank
        // stops after the same step.
        trainer.accumulate()
        let f = figures
        let gathered = try dataParallel.allGather(
          [f.loss, f.rewardMargin, f.accuracy, f.chosenReward, f.rejectedReward, cancelled ? 1 : 0])
        let mean = (0..<5).map { k in gathered.map { $0[k] }.reduce(0, +) / Double(ranks) }
        figures = DPOFigures(
          loss: mean[0], rewardMargin: mean[1], accuracy: mean[2], chosenReward: mean[3],
          rejectedReward: mean[4])
        cancelled = gathered.contains { $0[5] != 0 }
        try optimizer.reduceSums(count: ranks) { (sums, count) throws(SessionError) in
          try dataParallel.allreduceSum(sums, count: count)
        }
      }
      let norm = trainer.update()
      let session = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      let rate = Double((step + 1 - firstStep) * configuration.pairs * ranks) / session
      let loss = Float(figures.loss)
      metrics.append(
        step: step + 1, loss: loss,
        line:
          "{\"step\": \(step + 1), \"loss\": \(figures.loss), \"reward_margin\": \(figures.rewardMargin), \"accuracy\": \(figures.accuracy), \"chosen_reward\": \(figures.chosenReward), \"rejected_reward\": \(figures.rejectedReward), \"lr\": \(optimizer.learningRate), \"grad_norm\": \(norm), \"pairs_per_s\": \(rate), \"elapsed_s\": \(elapsedBefore + session)}"
      )
      progress(
        StepReport(
          step: step + 1, total: schedule.steps, isFirst: step == firstStep, loss: loss,
          learningRate: optimizer.learningRate, gradientNorm: norm,
          tokensPerSecond: rate * Double(2 * configuration.sequence),
          remainingSeconds: session / Double(step + 1 - firstStep)
            * Double(schedule.steps - step - 1)),
        figures)
      if !figures.loss.isFinite {
        throw SessionError("the DPO loss is \(figures.loss) at step \(step + 1); lower --lr")
      }
      if dataParallel == nil { cancelled = cancellation?.isCancelled ?? false }
      let stopping = cancelled || step + 1 == schedule.stopAfter
      if (step + 1) % schedule.saveEvery == 0 || step + 1 == schedule.steps || stopping {
        if let dataParallel {
          try dataParallel.checkSameAdapter(trainer.executable, parameters, step: step + 1)
        }
        var state = TrainingState(
          step: step + 1, optimizerStep: optimizer.step, elapsed: elapsedBefore + session,
          generator: generator.state, order: order, cursor: cursor, threads: Threads.count,
          settings: record.settings, dataFingerprint: record.dataFingerprint,
          modelFingerprint: record.modelFingerprint, parameters: [:], firstMoments: [:],
          secondMoments: [:])
        for name in parameters {
          state.parameters[name] = try wrapping { try trainer.executable.value(named: name) }
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

  private var clearedStaleFiles = false

  /// Writes metrics.jsonl, loss.svg, the PEFT adapter and, last, the training state, each
  /// crash-safely.
  func checkpoint(folder: URL, state: TrainingState, metrics: Metrics) throws(SessionError) {
    do {
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    } catch {
      throw SessionError("\(folder.path): cannot create the folder: \(error.localizedDescription)")
    }
    if !clearedStaleFiles {
      removeStaleTemporaryFiles(in: folder, for: TrainingSession.checkpointFiles)
      clearedStaleFiles = true
    }
    let c = configuration
    try wrapping {
      try writeAtomically(
        Data(metrics.lines.map { $0 + "\n" }.joined().utf8),
        to: folder.appendingPathComponent("metrics.jsonl"))
      try writeAtomically(
        Data(LossCurve.svg(metrics.losses, title: "DPO loss").utf8),
        to: folder.appendingPathComponent("loss.svg"))
      var tensors: [String: HostTensor] = [:]
      for name in parameters { tensors[name] = try trainer.executable.value(named: name) }
      let targets = parameters.filter { $0.hasSuffix(".lora_a") }.map { String($0.dropLast(7)) }
      try PEFTAdapter(
        rank: c.rank, alpha: c.alpha, useRSLoRA: c.rsLoRA, targets: targets, tensors: tensors
      ).save(to: folder, config: model.config, baseModel: c.baseModel ?? model.baseModelName)
      try state.write(to: folder)
    }
  }
}
