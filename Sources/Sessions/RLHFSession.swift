import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// A rollout scored and evaluated: everything a learning phase reads (the tutorial's
/// `ReplayMemory`), row-major.
public struct RolloutEvaluation: Sendable {
  public var batch: Int
  public var generated: Int
  public var vocabulary: Int
  /// Every row's tokens, prefix then sampled ones, `[batch, prefix + generated]`.
  public var rows: [[Int32]]
  /// The rewards as scored and as the advantages use them (normalised when the run says so).
  public var rewards: [Double]
  public var normalizedRewards: [Float]
  /// `[batch, generated]`: the sampled tokens' log-probabilities under the policy, the values,
  /// the advantages and the returns.
  public var logprobs: [Float]
  public var values: [Float]
  public var advantages: [Float]
  public var returns: [Float]
  /// The reference's log-softmax at the predicting positions, `[batch, generated, vocab]`.
  public var reference: [Float]
  /// Means over the generated positions of KL(policy || reference) and of the policy's entropy.
  public var kl: Double
  public var entropy: Double
}

/// One minibatch's PPO figures: the objective's terms (as the tutorial names them) and the
/// gradients' global norm before clipping.
public struct PPOTerms: Sendable, Hashable {
  public var objective: Double
  public var surrogate: Double
  public var valueLoss: Double
  public var entropyBonus: Double
  public var klPenalty: Double
  public var entropy: Double
  public var kl: Double
  public var clipFraction: Double
}

extension PPOTerms {
  /// The terms in the objective graph's output order (the objective first, not the loss).
  var figures: [Double] {
    [objective, surrogate, valueLoss, entropyBonus, klPenalty, entropy, kl, clipFraction]
  }

  /// Terms from `figures` in that order.
  init(figures f: [Double]) {
    (objective, surrogate, valueLoss, entropyBonus, klPenalty, entropy, kl, clipFraction) = (
      f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]
    )
  }
}

/// One phase's figures, reported as training goes and written to metrics.jsonl.
public struct PhaseReport: Sendable {
  /// The phase just done (from 1) and the last.
  public var phase: Int
  public var total: Int
  public var isFirst: Bool
  public var rewardMean: Double
  public var rewardStandardDeviation: Double
  /// The rollout's mean KL(policy || reference) and policy entropy per generated token.
  public var kl: Double
  public var entropy: Double
  /// Means over the phase's minibatches.
  public var clipFraction: Double
  /// `-surrogate`, the policy's loss.
  public var policyLoss: Double
  public var valueLoss: Double
  public var samplesPerSecond: Double
  public var learningRate: Double
  public var remainingSeconds: Double
  /// Where the phase's time went.
  public var seconds: PhaseSeconds
  /// A few of the phase's samples, prefix included.
  public var samples: [String]
}

/// What `RLHFSession.runPhase` did: the samples, their rewards, the scored rollout and the mean
/// PPO terms of the learning phase, with the time of each part.
public struct PhaseOutcome: Sendable {
  /// The completions' text (prefix excluded), in row order.
  public var completions: [String]
  public var rewards: [Double]
  public var rollout: RolloutEvaluation
  public var terms: PPOTerms
  public var seconds: PhaseSeconds
}

/// The seconds of a phase's parts: sampling, scoring, evaluating (policy and reference), learning.
public struct PhaseSeconds: Sendable, Hashable {
  public var rollout: Double
  public var reward: Double
  public var evaluation: Double
  public var learning: Double

  public init(rollout: Double, reward: Double, evaluation: Double, learning: Double) {
    (self.rollout, self.reward, self.evaluation, self.learning) = (
      rollout, reward, evaluation, learning
    )
  }
}

/// How a call to `train` ended; every ending but an error leaves a checkpoint of the last phase.
public enum RLHFOutcome: Sendable, Hashable {
  case finished
  /// Stopped after the run's `stopAfter` phase.
  case stopped(phase: Int)
  case cancelled(phase: Int)
}

/// RLHF with LoRA: PPO with a value head, the reference policy being the same executables with
/// the adapter switched off (adapter scale 0), so no second copy of the weights exists.
///
/// Three compiled graphs share the mapped weights: the decoding graphs of the rollout (batched
/// KV-cache prefill and one-token steps), the evaluation graph (log-softmax at the predicting
/// positions and values, run at scale 1 for the policy and 0 for the reference) and the
/// differentiated PPO objective with AdamW over the adapter and the value head.
public final class RLHFSession {
  public let model: LlamaModel
  public let tokenizer: Tokenizer
  public let configuration: RLHFConfiguration
  /// The prefix's ids (BOS first when the tokenizer asks for it).
  public let prefix: [Int32]
  public let trainer: GraphTrainer
  /// The evaluation graph for a minibatch of rows (a rank's share of one, data-parallel).
  public let evaluator: Executable
  let decoder: DecodeSession
  /// The job this session is a rank of (`mpirun`), or nil (one process); see RLHFDataParallel.
  public let dataParallel: DataParallel?
  /// The runs each minibatch is cut into (`--accumulate`; the rollout and the evaluation too),
  /// shared by the ranks: their gradients are summed before the update.
  public let accumulate: Int
  /// The rows the objective and the evaluation graphs take per run: the minibatch's divided by
  /// `accumulate`.
  public let rowsPerRun: Int
  /// Trainable parameter names (adapter, then value head), in the order of their gradients.
  public var parameters: [String] { trainer.parameters }
  public var sequence: Int { prefix.count + configuration.generated }

  /// Traces, differentiates and compiles the objective, the evaluation and the decoding graphs.
  ///
  /// Each minibatch runs in `accumulate` parts (default: 1, or the number of ranks), with the
  /// rollout and the evaluation cut alike. With `dataParallel` (a rank of an `mpirun` job) the
  /// ranks share the parts and the phase's collectives run with the other ranks
  /// (RLHFDataParallel.swift); N ranks compute what one process with `accumulate` N does.
  public init(
    model: LlamaModel, tokenizer: Tokenizer, configuration: RLHFConfiguration,
    dataParallel: DataParallel? = nil, accumulate: Int? = nil
  ) throws(SessionError) {
    try configuration.check()
    let parts = accumulate ?? dataParallel?.size ?? 1
    try RLHFSession.checkRanks(configuration, ranks: dataParallel?.size ?? 1, accumulate: parts)
    self.dataParallel = dataParallel
    self.accumulate = parts
    rowsPerRun = configuration.minibatchSize / parts
    self.model = model
    self.tokenizer = tokenizer
    self.configuration = configuration
    let c = configuration
    prefix = try tokenizer.prompt(c.prefix, chat: false)
    try model.checkPrompt(prefix, vocabulary: model.config.vocabularySize, option: "--prefix")
    let sequence = prefix.count + c.generated
    if sequence > model.contextLength {
      throw SessionError(
        "--prefix and --gen-len make \(sequence) tokens, more than the model's context of "
          + "\(model.contextLength)")
    }
    let forms = PackedForms()
    let prefixLength = prefix.count
    let objective = try RLHFSession.objectiveGraph(
      model: model, configuration: c, prefix: prefixLength, rows: rowsPerRun)
    trainer = try wrapping {
      let executable = try Executable(
        objective, constants: try model.weights(for: objective), packedForms: forms,
        target: c.target)
      return try GraphTrainer(
        executable,
        optimizer: OptimizerSettings(
          learningRate: c.learningRate, weightDecay: c.weightDecay,
          maxGradientNorm: c.maxGradientNorm))
    }
    let lora = trainer.parameters.filter { $0.hasSuffix(".lora_a") }.map { $0.dropLast(7) }
    if lora.isEmpty {
      throw SessionError("--targets '\(c.targets)' selects no linear layer of the model")
    }
    if let bad = lora.first(where: { !PEFTAdapter.canAdapt(String($0)) }) {
      throw SessionError(
        "--targets '\(c.targets)' selects '\(bad)', which a PEFT adapter cannot hold; "
          + "adaptable: \(PEFTAdapter.adaptableTargets)")
    }
    evaluator = try RLHFSession.evaluationExecutable(
      model: model, configuration: c, prefix: prefixLength, adapted: true, rows: rowsPerRun,
      packedForms: forms)
    decoder = DecodeSession(
      model: model, context: sequence,
      adapter: try RLHFSession.adapter(of: trainer, configuration: c), target: c.target)
    for name in trainer.parameters where name.hasPrefix("value_head.") {
      trainer.optimizer.parameterLearningRates[name] = c.headLearningRate
    }
  }

  /// The differentiated PPO objective for one minibatch (or `rows` of it), as `lorac dump-ir
  /// --rlhf` prints it.
  public static func objectiveGraph(
    model: LlamaModel, configuration c: RLHFConfiguration, prefix: Int, rows: Int? = nil
  ) throws(SessionError) -> Graph {
    try wrapping {
      let traced = try RLHFGraphs.objective(
        model.config, batch: rows ?? c.minibatchSize, prefix: prefix, generated: c.generated,
        coefficients: c.coefficients, valueHeadSeed: c.valueHeadSeed,
        weightType: model.storedWeightType)
      return try parsePipeline(Pipelines.rlhf(c)).run(traced)
    }
  }

  /// The rollout's evaluation graph for a minibatch of rows (or `rows` rows), compiled: with the
  /// run's adapter (`adapted`; its values are set from the trainer) or with none (the base model).
  public static func evaluationExecutable(
    model: LlamaModel, configuration c: RLHFConfiguration, prefix: Int, adapted: Bool,
    rows: Int? = nil, packedForms: PackedForms? = nil
  ) throws(SessionError) -> Executable {
    try wrapping {
      let traced = try RLHFGraphs.evaluation(
        model.config, batch: rows ?? c.minibatchSize, prefix: prefix, generated: c.generated,
        valueHeadSeed: c.valueHeadSeed, weightType: model.storedWeightType)
      let pipeline = adapted ? Pipelines.rlhfEvaluation(c) : "fuse,dce"
      let graph = try parsePipeline(pipeline).run(traced)
      return try Executable(
        graph, constants: try model.weights(for: graph), packedForms: packedForms,
        target: c.target)
    }
  }

  // MARK: - Parameters

  /// The adapter as trained so far (lorac's names and layout).
  public func currentAdapter() throws(SessionError) -> PEFTAdapter {
    try RLHFSession.adapter(of: trainer, configuration: configuration)
  }

  private static func adapter(of trainer: GraphTrainer, configuration: RLHFConfiguration)
    throws(SessionError) -> PEFTAdapter
  {
    let parameters = trainer.parameters
    var tensors: [String: HostTensor] = [:]
    for name in parameters where !name.hasPrefix("value_head.") {
      tensors[name] = try wrapping { try trainer.executable.value(named: name) }
    }
    let targets = parameters.filter { $0.hasSuffix(".lora_a") }.map { String($0.dropLast(7)) }
    return PEFTAdapter(
      rank: configuration.rank, alpha: configuration.alpha, useRSLoRA: configuration.rsLoRA,
      targets: targets, tensors: tensors, perHead: configuration.perHead)
  }

  /// Replaces trainable parameters by name (a resume, or a test's fixed values).
  public func setParameters(_ tensors: [String: HostTensor]) throws(SessionError) {
    for (name, tensor) in tensors {
      guard parameters.contains(name) else {
        throw SessionError("the RLHF session has no parameter '\(name)'")
      }
      try wrapping { try trainer.executable.set(name, tensor) }
    }
  }

  /// Copies the trained parameters into the evaluation and decoding graphs.
  func synchronize() throws(SessionError) {
    for name in parameters {
      let tensor = try wrapping { try trainer.executable.value(named: name) }
      try wrapping { try evaluator.set(name, tensor) }
    }
    try decoder.setAdapter(try currentAdapter())
  }

  // MARK: - One phase, step by step

  /// A seed for one purpose in one phase, so a resumed run draws what the first run would have.
  func seed(_ purpose: UInt64, phase: Int) -> UInt64 {
    var generator = SplitMix64(
      seed: configuration.seed &* 0x9E37_79B9_7F4A_7C15 ^ (purpose << 32 | UInt64(phase)))
    return generator.next()
  }

  /// Samples the phase's rows `rows` (all `batch` when nil) of `generated` tokens after the prefix
  /// with the adapter on: one batched prefill, then one-token steps over the KV cache, never
  /// stopping at end-of-sequence.
  ///
  /// Each row draws from its own stream, seeded by the run's seed, the phase and the row's index
  /// in the phase, so a row's tokens do not depend on which rows are sampled with it (or on the
  /// number of ranks sharing the batch).
  public func rollout(phase: Int, rows: Range<Int>? = nil) throws(SessionError) -> [[Int32]] {
    try synchronize()
    let c = configuration
    let rows = rows ?? 0..<c.batch
    // Decoded `batch / accumulate` rows at a time, so each rank decodes the shapes one process
    // with `accumulate` parts does.
    let group = c.batch / accumulate
    var result: [[Int32]] = []
    for first in stride(from: rows.lowerBound, to: rows.upperBound, by: group) {
      var samplers = (first..<min(first + group, rows.upperBound)).map {
        RolloutSampler(
          temperature: c.temperature, topK: c.topK, seed: rolloutSeed(phase: phase, row: $0))
      }
      result += try decoder.sample(prefix: prefix, generated: c.generated, samplers: &samplers)
    }
    return result.map { prefix + $0 }
  }

  /// The sampling stream's seed of row `row` in phase `phase`.
  func rolloutSeed(phase: Int, row: Int) -> UInt64 {
    var generator = SplitMix64(seed: seed(1, phase: phase) ^ (UInt64(row) &* 0xD1B5_4A32_D192_ED03))
    return generator.next()
  }

  /// The completions' text (the sampled tokens decoded) of full rows.
  public func completions(_ rows: [[Int32]]) -> [String] {
    rows.map { tokenizer.decode(Array($0.dropFirst(prefix.count))) }
  }

  /// Evaluates a scored rollout without gradients: the policy's log-probabilities and values
  /// (adapter on), the reference's log-softmax (adapter scale 0, same executable), then the
  /// normalised rewards, the advantages and the returns (rlhf.md, step 2).
  ///
  /// Data-parallel, every rank evaluates its own rows (`ownRows`) and gathers the others', so
  /// each rank returns the whole rollout's evaluation.
  public func evaluate(rows: [[Int32]], rewards: [Double]) throws(SessionError)
    -> RolloutEvaluation
  {
    let c = configuration
    let (batch, generated, length) = (c.batch, c.generated, prefix.count)
    let vocabulary = model.config.vocabularySize
    guard rows.count == batch, rewards.count == batch,
      rows.allSatisfy({ $0.count == sequence && Array($0.prefix(length)) == prefix })
    else {
      throw SessionError(
        "an RLHF evaluation takes \(batch) rows of \(sequence) tokens that start with the prefix, "
          + "and \(batch) rewards")
    }
    let vocabularyRange = 0..<Int32(vocabulary)
    if let bad = rows.joined().first(where: { !vocabularyRange.contains($0) }) {
      throw SessionError("rollout: token \(bad) is out of range 0..<\(vocabulary)")
    }
    try synchronize()
    let part = try gather(try evaluatePart(rows[ownRows]))
    // The runs' sums of KL and entropy added in the runs' order, however the ranks shared them.
    let (kl, entropy) = (part.kl.reduce(0, +), part.entropy.reduce(0, +))
    let positionsCount = Double(batch * generated)
    let normalized = normalizedRewards(rewards)
    let (advantages, returns) = RLHFSession.advantages(
      values: part.values, rewards: normalized, generated: generated, gamma: Float(c.gamma),
      lambda: Float(c.gaeLambda))
    return RolloutEvaluation(
      batch: batch, generated: generated, vocabulary: vocabulary, rows: rows, rewards: rewards,
      normalizedRewards: normalized, logprobs: part.logprobs, values: part.values,
      advantages: advantages, returns: returns, reference: part.reference,
      kl: kl / positionsCount, entropy: entropy / positionsCount)
  }

  /// What the evaluation graph gives for some rows: their policy log-probabilities and values,
  /// the reference's log-softmax, and each run's sums (not yet means) of KL and entropy.
  struct EvaluatedRows {
    var logprobs: [Float]
    var values: [Float]
    var reference: [Float]
    var kl: [Double]
    var entropy: [Double]
  }

  /// Evaluates `rows` (a multiple of `rowsPerRun`) in runs of `rowsPerRun`.
  func evaluatePart(_ rows: ArraySlice<[Int32]>) throws(SessionError) -> EvaluatedRows {
    let (generated, length) = (configuration.generated, prefix.count)
    let vocabulary = model.config.vocabularySize
    let (batch, chunk) = (rows.count, rowsPerRun)
    let rows = Array(rows)
    let perRow = generated * vocabulary
    var logprobs = [Float](repeating: 0, count: batch * generated)
    var values = [Float](repeating: 0, count: batch * generated)
    var reference = [Float](repeating: 0, count: batch * perRow)
    var policy = [Float](repeating: 0, count: chunk * perRow)
    var (klSums, entropySums): ([Double], [Double]) = ([], [])
    for first in stride(from: 0, to: batch, by: chunk) {
      var (kl, entropy) = (0.0, 0.0)
      let tokens = Array(rows[first..<(first + chunk)].joined())
      try wrapping {
        try evaluator.set("tokens", HostTensor(shape: [chunk, sequence], ints: tokens))
        try evaluator.set("positions", positions(rows: chunk))
        try Sessions.setAdapterScale(1, of: evaluator)
        try evaluator.execute()
      }
      let out = evaluator.outputAddress(0).assumingMemoryBound(to: Float.self)
      policy.withUnsafeMutableBufferPointer {
        $0.baseAddress?.update(from: out, count: chunk * perRow)
      }
      let valuesOut = evaluator.outputAddress(1).assumingMemoryBound(to: Float.self)
      for index in 0..<(chunk * generated) {
        values[first * generated + index] = valuesOut[index]
        let (row, t) = (index / generated, index % generated)
        let token = Int(rows[first + row][length + t])
        logprobs[first * generated + index] = policy[index * vocabulary + token]
      }
      try wrapping {
        try Sessions.setAdapterScale(0, of: evaluator)
        try evaluator.execute()
      }
      let referenceOut = evaluator.outputAddress(0).assumingMemoryBound(to: Float.self)
      reference.withUnsafeMutableBufferPointer {
        $0.baseAddress?.advanced(by: first * perRow).update(
          from: referenceOut, count: chunk * perRow)
      }
      for index in 0..<(chunk * perRow) {
        let logP = Double(policy[index])
        let p = exp(logP)
        kl += p * (logP - Double(referenceOut[index]))
        entropy -= p * logP
      }
      klSums.append(kl)
      entropySums.append(entropy)
    }
    try wrapping { try Sessions.setAdapterScale(1, of: evaluator) }
    return EvaluatedRows(
      logprobs: logprobs, values: values, reference: reference, kl: klSums,
      entropy: entropySums)
  }

  /// `(r - mean) / (std + 1e-5)` with Bessel's correction, when the run normalises rewards.
  func normalizedRewards(_ rewards: [Double]) -> [Float] {
    guard configuration.normalizeReward else { return rewards.map { Float($0) } }
    let (mean, deviation) = meanAndDeviation(rewards)
    return rewards.map { Float(($0 - mean) / (deviation + 1e-5)) }
  }

  /// Advantages by generalised advantage estimation over each row's generated positions.
  ///
  /// Returns are `A + V`. The reward comes at the last token and the value after it is 0:
  /// `delta[t] = gamma V[t+1] - V[t]` (`reward - V[last]` at the last), `A[t] = delta[t] +
  /// gamma lambda A[t+1]`. Lambda 0, gamma 1 is the tutorial's one-step estimate.
  public static func advantages(
    values: [Float], rewards: [Float], generated: Int, gamma: Float, lambda: Float
  ) -> (advantages: [Float], returns: [Float]) {
    var advantages = [Float](repeating: 0, count: values.count)
    var returns = advantages
    for row in rewards.indices {
      let base = row * generated
      var next: Float = 0
      for t in stride(from: generated - 1, through: 0, by: -1) {
        let delta =
          t == generated - 1
          ? rewards[row] - values[base + t]
          : (gamma == 1 ? values[base + t + 1] : gamma * values[base + t + 1]) - values[base + t]
        let advantage = t == generated - 1 || lambda == 0 ? delta : delta + gamma * lambda * next
        advantages[base + t] = advantage
        returns[base + t] = advantage + values[base + t]
        next = advantage
      }
    }
    return (advantages, returns)
  }

  /// The positions input of `rows` rows, counting from 0 in each.
  func positions(rows: Int) -> HostTensor {
    HostTensor(
      shape: [rows, sequence],
      ints: Array((0..<rows).map { _ in (0..<sequence).map { Int32($0) } }.joined()))
  }

  /// Runs the objective and its gradients on the minibatch of `rows` (indices into the rollout)
  /// without updating anything; the gradients wait in the trainer's outputs for `update()`.
  ///
  /// Data-parallel, `rows` is this rank's share of `minibatch`, whose statistics (the advantages'
  /// mean and deviation, the count of positions) the objective uses, and the terms are this
  /// rank's part of the minibatch's (they add up over the ranks).
  public func objective(_ rollout: RolloutEvaluation, rows: [Int], minibatch: [Int]? = nil)
    throws(SessionError) -> PPOTerms
  {
    let minibatch = minibatch ?? rows
    guard rows.count == rowsPerRun,
      (rows + minibatch).allSatisfy({ rollout.rows.indices.contains($0) })
    else {
      throw SessionError(
        "a PPO minibatch takes \(rowsPerRun) row indices below \(rollout.batch), got \(rows)")
    }
    let (generated, vocabulary) = (rollout.generated, rollout.vocabulary)
    // The mask is all ones: every generated position counts.
    var advantages: [Double] = []
    for row in minibatch {
      advantages += rollout.advantages[(row * generated)..<((row + 1) * generated)].map(Double.init)
    }
    let (mean, deviation) = meanAndDeviation(advantages)
    func scalar(_ value: Double) -> HostTensor { HostTensor(shape: [], floats: [Float(value)]) }
    func pick(_ values: [Float], width: Int) -> HostTensor {
      var picked: [Float] = []
      picked.reserveCapacity(rows.count * width)
      for row in rows { picked += values[(row * width)..<((row + 1) * width)] }
      return HostTensor(
        shape: width == generated ? [rows.count, generated] : [rows.count, generated, vocabulary],
        floats: picked)
    }
    let inputs: [String: HostTensor] = [
      "tokens": HostTensor(
        shape: [rows.count, sequence], ints: Array(rows.map { rollout.rows[$0] }.joined())),
      "positions": positions(rows: rows.count),
      "mask": HostTensor(
        shape: [rows.count, generated],
        floats: [Float](repeating: 1, count: rows.count * generated)),
      "old_logprobs": pick(rollout.logprobs, width: generated),
      "advantages": pick(rollout.advantages, width: generated),
      "returns": pick(rollout.returns, width: generated),
      "reference_logprobs": pick(rollout.reference, width: generated * vocabulary),
      "count": scalar(Double(advantages.count)), "advantage_mean": scalar(mean),
      "advantage_std": scalar(deviation),
    ]
    _ = try trainer.run(inputs)
    let figures = (0..<RLHFGraphs.objectiveOutputs.count).map {
      Double(trainer.executable.outputAddress($0).assumingMemoryBound(to: Float.self).pointee)
    }
    return PPOTerms(figures: [-figures[0]] + figures[1...])
  }

  /// The gradients of the objective J (to maximise) of the last `objective` run, by parameter.
  public func objectiveGradients() -> [String: [Float]] {
    let first = trainer.executable.graph.outputs.count - parameters.count
    var result: [String: [Float]] = [:]
    for (index, name) in parameters.enumerated() {
      result[name] = trainer.executable.output(first + index).floats().map { -$0 }
    }
    return result
  }

  /// One optimizer step (AdamW maximising J, gradients clipped) at phase `phase`'s learning
  /// rates from the last `objective` run; returns the gradients' norm before clipping.
  @discardableResult
  public func update(phase: Int) -> Double {
    let factor = configuration.learningRateFactor(phase: phase)
    let optimizer = trainer.optimizer
    optimizer.learningRate = configuration.learningRate * factor
    for name in parameters where name.hasPrefix("value_head.") {
      optimizer.parameterLearningRates[name] = configuration.headLearningRate * factor
    }
    return trainer.update()
  }

  /// The minibatches of one learning phase: `batchesPerPhase` shuffles of the rows, each cut
  /// into `minibatches` runs.
  public func minibatches(phase: Int) -> [[Int]] {
    let c = configuration
    var generator = SplitMix64(seed: seed(2, phase: phase))
    var result: [[Int]] = []
    for _ in 0..<c.batchesPerPhase {
      var order = Array(0..<c.batch)
      order.shuffle(using: &generator)
      for m in 0..<c.minibatches {
        result.append(Array(order[(m * c.minibatchSize)..<((m + 1) * c.minibatchSize)]))
      }
    }
    return result
  }

  /// The learning phase (rlhf.md, step 3): one optimizer step per minibatch; returns the mean
  /// terms over the minibatches.
  ///
  /// Data-parallel, each rank runs its share of every minibatch; the terms are added up and the
  /// gradients summed over the ranks before clipping and AdamW.
  public func learn(_ rollout: RolloutEvaluation, phase: Int) throws(SessionError) -> PPOTerms {
    var sums = [Double](repeating: 0, count: 8)
    let batches = minibatches(phase: phase)
    for minibatch in batches {
      // This rank's runs of the minibatch, their gradients summed, then summed over the ranks.
      var parts: [[Double]] = []
      for rows in runs(of: minibatch) {
        parts.append(try objective(rollout, rows: rows, minibatch: minibatch).figures)
        if accumulate > 1 { trainer.accumulate() }
      }
      let figures = try sumOverRuns(parts)
      try sumGradientsOverRanks()
      if let bad = figures.first(where: { !$0.isFinite }) {
        throw SessionError(
          "the PPO objective is \(bad) in phase \(phase + 1); lower --lr or --head-lr")
      }
      for index in sums.indices { sums[index] += figures[index] }
      update(phase: phase)
    }
    return PPOTerms(figures: sums.map { $0 / Double(batches.count) })
  }

  // MARK: - The loop

  /// One phase without checkpoints or metrics, each part timed.
  ///
  /// The rollout (adapter on), its rewards, its evaluation under the policy and the reference,
  /// and the learning phase's PPO steps; the schedule's factor for `phase` applies.
  public func runPhase(_ phase: Int, reward: RewardFunction) throws(SessionError) -> PhaseOutcome {
    func seconds(since start: UInt64) -> Double {
      Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
    let rolloutStart = DispatchTime.now().uptimeNanoseconds
    // The three executables take turns; each one's workspace is given back after its turn, so
    // the peak is the largest of them, not their sum.
    // Data-parallel, each rank samples and scores its own rows, then gathers the others'.
    let rows = try gatherRows(try rollout(phase: phase, rows: ownRows))
    decoder.releaseWorkspace()
    let completions = completions(rows)
    let rolloutSeconds = seconds(since: rolloutStart)
    let rewardStart = DispatchTime.now().uptimeNanoseconds
    let rewards = try gather(
      doubles: try reward.rewards(
        prompt: configuration.prefix, completions: Array(completions[ownRows])))
    let rewardSeconds = seconds(since: rewardStart)
    let evaluationStart = DispatchTime.now().uptimeNanoseconds
    let evaluated = try evaluate(rows: rows, rewards: rewards)
    evaluator.releaseWorkspace()
    let evaluationSeconds = seconds(since: evaluationStart)
    let learningStart = DispatchTime.now().uptimeNanoseconds
    let terms = try learn(evaluated, phase: phase)
    trainer.executable.releaseWorkspace()
    return PhaseOutcome(
      completions: completions, rewards: rewards, rollout: evaluated, terms: terms,
      seconds: PhaseSeconds(
        rollout: rolloutSeconds, reward: rewardSeconds, evaluation: evaluationSeconds,
        learning: seconds(since: learningStart)))
  }

  /// Runs phases `resume.phase + 1 ... phases` (rollout, reward, evaluation, learning).
  ///
  /// Appends
  /// one JSON line per phase to `folder/metrics.jsonl` and writes a checkpoint (PEFT adapter,
  /// value head, state, metrics, reward curve) every `saveEvery` phases, at the end, and when
  /// `cancellation` is requested or after phase `stopAfter` (after the phase under way; the
  /// schedule still spans `phases`). A failing reward leaves the last checkpoint as it was.
  public func train(
    reward: RewardFunction, folder: URL, saveEvery: Int, stopAfter: Int? = nil,
    resume: RLHFState?, record: CheckpointRecord, cancellation: Cancellation? = nil,
    shownSamples: Int = 3,
    progress: (PhaseReport) -> Void = { _ in }
  ) throws(SessionError) -> RLHFOutcome {
    try SettingChecks.atLeast(1, [("--save-every", saveEvery)])
    try checkRanksAgree(record: record, reward: reward, resumedPhase: resume?.phase, folder: folder)
    let c = configuration
    var firstPhase = 0
    var elapsedBefore = 0.0
    var metrics = RLHFMetrics()
    if let state = resume {
      try restore(state, folder: folder)
      firstPhase = state.phase
      elapsedBefore = state.elapsed
      metrics = RLHFMetrics(
        reading: folder.appendingPathComponent("metrics.jsonl"), upTo: state.phase)
    }
    let start = DispatchTime.now().uptimeNanoseconds
    for phase in firstPhase..<c.phases {
      let phaseStart = DispatchTime.now().uptimeNanoseconds
      let step = try runPhase(phase, reward: reward)
      let (rollout, terms, completions, rewards) = (
        step.rollout, step.terms, step.completions, step.rewards
      )
      let now = DispatchTime.now().uptimeNanoseconds
      let session = Double(now - start) / 1e9
      let (mean, deviation) = meanAndDeviation(rewards)
      let report = PhaseReport(
        phase: phase + 1, total: c.phases, isFirst: phase == firstPhase, rewardMean: mean,
        rewardStandardDeviation: deviation, kl: rollout.kl, entropy: rollout.entropy,
        clipFraction: terms.clipFraction, policyLoss: -terms.surrogate,
        valueLoss: terms.valueLoss,
        samplesPerSecond: Double(c.batch) / (Double(now - phaseStart) / 1e9),
        learningRate: c.learningRate * c.learningRateFactor(phase: phase),
        remainingSeconds: session / Double(phase + 1 - firstPhase) * Double(c.phases - phase - 1),
        seconds: step.seconds,
        samples: completions.prefix(shownSamples).map { c.prefix + $0 })
      metrics.append(report, elapsed: elapsedBefore + session)
      progress(report)
      // Ranks stop after the same phase if any was asked to.
      let cancelled = try anyRank(cancellation?.isCancelled ?? false)
      let stopping = cancelled || phase + 1 == stopAfter
      if (phase + 1) % saveEvery == 0 || phase + 1 == c.phases || stopping {
        try checkSameParameters(phase: phase + 1)
        // Rank 0 alone writes.
        if rank == 0 {
          try checkpoint(
            folder: folder,
            state: RLHFState(
              phase: phase + 1, optimizerStep: trainer.optimizer.step,
              elapsed: elapsedBefore + session, threads: Threads.count, settings: record.settings,
              modelFingerprint: record.modelFingerprint, reward: reward.description,
              parameters: [:], firstMoments: [:], secondMoments: [:]),
            metrics: metrics)
        }
      }
      if stopping && phase + 1 < c.phases {
        return cancelled ? .cancelled(phase: phase + 1) : .stopped(phase: phase + 1)
      }
    }
    return .finished
  }

  /// Puts a saved state's parameters and moments back.
  func restore(_ state: RLHFState, folder: URL) throws(SessionError) {
    try trainer.restore(
      parameters: state.parameters, first: state.firstMoments, second: state.secondMoments,
      file: folder.appendingPathComponent(RLHFState.fileName).path)
    trainer.optimizer.step = state.optimizerStep
  }

  // MARK: - Checkpoints

  /// The files a checkpoint writes, in order: the state last, so it never claims a phase the
  /// other files lack.
  public static let checkpointFiles = [
    "metrics.jsonl", "reward.svg", "adapter_model.safetensors", "adapter_config.json",
    "value_head.safetensors", RLHFState.fileName,
  ]

  private var clearedStaleFiles = false

  /// Writes metrics.jsonl, reward.svg, the PEFT adapter, value_head.safetensors and, last, the
  /// state, each crash-safely (temporary file, flush, rename).
  public func checkpoint(folder: URL, state: RLHFState, metrics: RLHFMetrics) throws(SessionError) {
    do {
      try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    } catch {
      throw SessionError("\(folder.path): cannot create the folder: \(error.localizedDescription)")
    }
    if !clearedStaleFiles {
      removeStaleTemporaryFiles(in: folder, for: RLHFSession.checkpointFiles)
      clearedStaleFiles = true
    }
    var state = state
    for name in parameters {
      state.parameters[name] = try wrapping { try trainer.executable.value(named: name) }
      guard let moments = trainer.optimizer.moments(of: name) else { continue }
      state.firstMoments[name] = moments.first
      state.secondMoments[name] = moments.second
    }
    try wrapping {
      try writeAtomically(
        Data(metrics.lines.map { $0 + "\n" }.joined().utf8),
        to: folder.appendingPathComponent("metrics.jsonl"))
      try writeAtomically(
        Data(metrics.svg().utf8), to: folder.appendingPathComponent("reward.svg"))
      try currentAdapter().save(
        to: folder, config: model.config,
        baseModel: configuration.baseModel ?? model.baseModelName)
      try saveValueHead(to: folder.appendingPathComponent("value_head.safetensors"))
      try state.write(to: folder)
    }
  }

  /// Writes the value head in PyTorch's layout and names (`value_head.0.weight` `[4d, d]`, ...),
  /// loadable into the tutorial's `nn.Sequential` after stripping `value_head.`.
  public func saveValueHead(to url: URL) throws(SessionError) {
    var tensors: [(name: String, tensor: HostTensor)] = []
    for name in parameters where name.hasPrefix("value_head.") {
      let tensor = try wrapping { try trainer.executable.value(named: name) }
      let shape = tensor.type.shape
      if shape.count == 2 {
        let (rows, columns) = (shape[0], shape[1])
        let values = tensor.floats()
        var transposed = [Float](repeating: 0, count: values.count)
        for r in 0..<rows {
          for k in 0..<columns { transposed[k * rows + r] = values[r * columns + k] }
        }
        tensors.append((name, HostTensor(shape: [columns, rows], floats: transposed)))
      } else {
        tensors.append((name, tensor))
      }
    }
    try wrapping { try SafetensorsFile.write(tensors, metadata: ["format": "pt"], to: url) }
  }
}

/// `mean` and the standard deviation with Bessel's correction (0 for fewer than 2 values).
func meanAndDeviation(_ values: [Double]) -> (mean: Double, deviation: Double) {
  let mean = values.reduce(0, +) / Double(max(1, values.count))
  guard values.count > 1 else { return (mean, 0) }
  let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)
  return (mean, variance.squareRoot())
}
