import Foundation
import IR
import Models
import Runtime

/// What a person asks of a LoRA training run: every setting that is nil takes the saved run's
/// value when resuming, else the default.
public struct TrainingRequest: Sendable {
  /// Where the examples come from.
  public enum DataSource: Sendable, Hashable {
    /// A jsonl file with {"prompt","completion"}, {"text"} or {"messages":[...]} lines.
    case jsonl(String)
    /// The tutorials' a + b task.
    case mysteryFunction
  }

  public var model: String
  public var data: DataSource
  /// The output folder (made if missing).
  public var out: String
  /// Examples to generate for `.mysteryFunction` (default 4000).
  public var examples: Int?
  public var rank: Int?
  public var alpha: Double?
  public var targets: String?
  public var learningRate: Double?
  public var warmup: Int?
  /// Optimizer steps in all (may grow on resume).
  public var steps: Int?
  public var batch: Int?
  public var accumulate: Int?
  /// Tokens per sequence (default: the longest example, at most 512).
  public var sequence: Int?
  public var weightDecay: Double?
  public var maxGradientNorm: Double?
  public var seed: UInt64?
  public var precision: WeightPrecision?
  public var saveEvery: Int
  public var stopAfter: Int?
  /// Scale the branch by alpha / sqrt(rank) (rsLoRA).
  public var rsLoRA: Bool?
  /// One LoRA instance per attention head on q, k, v and o (the TransformerLens tutorial's).
  public var perHead: Bool?
  /// What adapter_config.json names as the base model (nil: `GGUFFile.baseModelName`).
  public var baseModel: String?
  /// Continue from the training state in `out`.
  public var resume: Bool
  /// What the kernels are planned for.
  public var target: Target

  public init(
    model: String, data: DataSource, out: String, examples: Int? = nil, rank: Int? = nil,
    alpha: Double? = nil, targets: String? = nil, learningRate: Double? = nil, warmup: Int? = nil,
    steps: Int? = nil, batch: Int? = nil, accumulate: Int? = nil, sequence: Int? = nil,
    weightDecay: Double? = nil, maxGradientNorm: Double? = nil, seed: UInt64? = nil,
    precision: WeightPrecision? = nil, saveEvery: Int = 50, stopAfter: Int? = nil,
    resume: Bool = false, rsLoRA: Bool? = nil, perHead: Bool? = nil, baseModel: String? = nil,
    target: Target = .host
  ) {
    self.model = model
    self.data = data
    self.out = out
    self.examples = examples
    self.rank = rank
    self.alpha = alpha
    self.targets = targets
    self.learningRate = learningRate
    self.warmup = warmup
    self.steps = steps
    self.batch = batch
    self.accumulate = accumulate
    self.sequence = sequence
    self.weightDecay = weightDecay
    self.maxGradientNorm = maxGradientNorm
    self.seed = seed
    self.precision = precision
    self.saveEvery = saveEvery
    self.stopAfter = stopAfter
    self.resume = resume
    self.rsLoRA = rsLoRA
    self.perHead = perHead
    self.baseModel = baseModel
    self.target = target
  }
}

extension TrainingRequest {
  /// Checks the settings that need no file: counts of at least 1, positive rates and so on (the
  /// messages name the command's flags).
  public func check() throws(SessionError) {
    try SettingChecks.atLeast(
      1,
      [
        ("--rank", rank), ("--steps", steps), ("--batch", batch), ("--examples", examples),
        ("--accumulate", accumulate), ("--save-every", saveEvery), ("--stop-after", stopAfter),
      ])
    try SettingChecks.atLeast(0, [("--warmup", warmup)])
    try SettingChecks.positive("--lr", learningRate)
    try SettingChecks.positive("--alpha", alpha)
    try SettingChecks.notNegative("--weight-decay", weightDecay)
    try SettingChecks.positive("--max-grad-norm", maxGradientNorm)
    try SettingChecks.atLeast(2, [("--seq", sequence)])
  }
}

/// A training run made ready to `run`.
///
/// Its settings are resolved (and checked against a saved run's), the data tokenized, the train
/// step compiled and the output folder made.
public final class TrainingJob {
  public let session: TrainingSession
  public let examples: [TrainingExample]
  public let schedule: Schedule
  public let folder: URL
  /// The saved state the run continues from (nil: it starts at step 0).
  public let resumedState: TrainingState?
  public let record: CheckpointRecord
  /// The MPI job this rank trains in (nil: one process).
  public let dataParallel: DataParallel?

  private init(
    session: TrainingSession, examples: [TrainingExample], schedule: Schedule, folder: URL,
    resumedState: TrainingState?, dataParallel: DataParallel?, record: CheckpointRecord
  ) {
    self.dataParallel = dataParallel
    self.session = session
    self.examples = examples
    self.schedule = schedule
    self.folder = folder
    self.resumedState = resumedState
    self.record = record
  }

  /// Resolves `request`, loads the model and data and compiles the train step.
  ///
  /// Returns nil when the saved run already reached its steps (nothing to do). `note` receives
  /// lines for the person (an old state being started over, a thread count that differs from the
  /// saved run's).
  ///
  /// With `dataParallel` (a rank of an `mpirun` job), `--accumulate` counts each rank's
  /// micro-batches: a step takes `accumulate` times the ranks in all, which is what the state
  /// records, so a resume with another number of ranks keeps the step the same (the ranks must
  /// divide it). Only rank 0 makes the folder.
  public static func prepare(
    _ request: TrainingRequest, dataParallel: DataParallel? = nil, note: (String) -> Void
  ) throws(SessionError) -> TrainingJob? {
    try request.check()
    let out = request.out
    let folder = URL(fileURLWithPath: out)
    let saved = try TrainingState.continued(in: out, resume: request.resume, note: note)
    // Settings: given, else (resuming) the saved ones, else the defaults.
    var savedSettings = saved?.settings ?? [:]
    // States from before --rslora trained without it.
    if saved != nil && savedSettings["rslora"] == nil { savedSettings["rslora"] = "false" }
    // And before --per-head, with one instance per weight.
    if saved != nil && savedSettings["per-head"] == nil { savedSettings["per-head"] = "false" }
    var settings = ResolvedSettings(saved: savedSettings, folder: out)
    let count = try settings.resolve("examples", request.examples, default: 4000)
    let rank = try settings.resolve("rank", request.rank, default: 8)
    let alpha = try settings.resolve("alpha", request.alpha, default: 16.0)
    let targets = try settings.resolve(
      "targets", request.targets, default: "layers.*.attn.{q,k,v,o}")
    let learningRate = try settings.resolve("lr", request.learningRate, default: 2e-3)
    let warmup = try settings.resolve("warmup", request.warmup, default: 5)
    let batch = try settings.resolve("batch", request.batch, default: 16)
    let ranks = dataParallel?.size ?? 1
    let microBatches = try settings.resolve(
      "accumulate", request.accumulate.map { $0 * ranks }, default: ranks)
    guard microBatches % ranks == 0 else {
      throw SessionError(
        "\(out): the training state takes \(microBatches) micro-batches per step, which "
          + "\(ranks) ranks cannot share evenly; run with a number of ranks that divides it")
    }
    let accumulate = microBatches / ranks
    let weightDecay = try settings.resolve("weight-decay", request.weightDecay, default: 0.0)
    let maxGradientNorm = try settings.resolve(
      "max-grad-norm", request.maxGradientNorm, default: 1.0)
    let seed = try settings.resolve("seed", request.seed, default: UInt64(0))
    let rsLoRA = try settings.resolve("rslora", request.rsLoRA, default: false)
    let perHead = try settings.resolve("per-head", request.perHead, default: false)
    if let asked = request.precision, let text = precisionNote(asked, target: request.target) {
      note(text)
    }
    // The state records the precision the steps ran at.
    let precision = try settings.resolve(
      "precision", request.precision?.effective(on: request.target), default: WeightPrecision.f32)
    // The total may change on resume (the schedule then decays over the new total).
    let steps =
      request.steps ?? saved.flatMap { $0.settings["steps"] }.flatMap { Int($0) } ?? 60
    settings.values["steps"] = String(steps)
    if let saved, steps < saved.step {
      throw SessionError(
        "\(out): the training state is at step \(saved.step), past --steps \(steps)")
    }
    if let stopAfter = request.stopAfter, stopAfter <= saved?.step ?? 0 {
      throw SessionError(
        "--stop-after \(stopAfter) is not past the training state's step \(saved?.step ?? 0)")
    }
    let model = try LlamaModel.open(request.model)
    let tokenizer = try model.tokenizer()
    let modelFingerprint: String
    do {
      modelFingerprint = try Fingerprint.file(request.model)
    } catch {
      throw SessionError(error.message)
    }
    let examples = try trainingExamples(
      request.data, count: count, seed: seed, tokenizer: tokenizer)
    let dataFingerprint = Fingerprint.examples(examples)
    let sequence = try settings.resolve(
      "seq", request.sequence,
      default: min(512, model.contextLength, examples.map { $0.ids.count }.max() ?? 2))
    if sequence > model.contextLength {
      throw SessionError(
        "--seq \(sequence) is more than the model's context of \(model.contextLength) tokens")
    }
    if let saved {
      if saved.modelFingerprint != modelFingerprint {
        throw SessionError(
          "\(out): the training state was made with another model (fingerprint "
            + "\(saved.modelFingerprint), \(request.model) has \(modelFingerprint)); resume with the "
            + "same model or train into a new --out")
      }
      if saved.dataFingerprint != dataFingerprint {
        throw SessionError(
          "\(out): the training state was made with other data (fingerprint "
            + "\(saved.dataFingerprint), these examples have \(dataFingerprint)); resume with the "
            + "same --data or --task or train into a new --out")
      }
      let threads = request.target.threads ?? Threads.count
      if saved.threads != threads {
        note(
          "note: the state was trained with \(saved.threads) threads, now \(threads): "
            + "the losses will not match an uninterrupted run bit for bit")
      }
      if saved.step == steps {
        note("\(out): already trained \(steps) steps; nothing to do (raise --steps to continue)")
        return nil
      }
    }
    let session = try TrainingSession(
      model: model,
      configuration: TrainingConfiguration(
        rank: rank, alpha: alpha, targets: targets, seed: seed, precision: precision, batch: batch,
        sequence: sequence, rsLoRA: rsLoRA, perHead: perHead, baseModel: request.baseModel,
        target: request.target))
    do {
      if dataParallel?.rank ?? 0 == 0 {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
      }
    } catch {
      throw SessionError("\(out): cannot create the folder: \(error.localizedDescription)")
    }
    return TrainingJob(
      session: session, examples: examples,
      schedule: Schedule(
        steps: steps, learningRate: learningRate, warmup: warmup, weightDecay: weightDecay,
        maxGradientNorm: maxGradientNorm, accumulate: accumulate, saveEvery: request.saveEvery,
        stopAfter: request.stopAfter),
      folder: folder, resumedState: saved, dataParallel: dataParallel,
      record: CheckpointRecord(
        seed: seed, settings: settings.values,
        dataFingerprint: dataFingerprint, modelFingerprint: modelFingerprint))
  }

  /// Trains to the end of the schedule, to `stopAfter`, or until `cancellation` is requested.
  public func run(cancellation: Cancellation? = nil, progress: (StepReport) -> Void = { _ in })
    throws(SessionError) -> TrainingOutcome
  {
    try session.train(
      examples: examples, schedule: schedule, folder: folder, resume: resumedState, record: record,
      cancellation: cancellation, dataParallel: dataParallel, progress: progress)
  }

  /// The tokenized examples of `data`.
  static func trainingExamples(
    _ data: TrainingRequest.DataSource, count: Int, seed: UInt64, tokenizer: Tokenizer
  ) throws(SessionError) -> [TrainingExample] {
    switch data {
    case .jsonl(let path):
      do {
        return try Dataset.load(
          path: path, tokenizer: tokenizer, template: try? tokenizer.chatFormat())
      } catch {
        throw SessionError(error.message)
      }
    case .mysteryFunction:
      return Dataset.mysteryFunction(count: count, seed: seed &+ 1).map {
        Dataset.completion(prompt: $0.prompt, completion: $0.answer, tokenizer: tokenizer)
      }
    }
  }
}

/// A note for the person when bf16 was asked for and the target has no bf16 dot products.
public func precisionNote(_ precision: WeightPrecision, target: Target = .host) -> String? {
  precision == .bf16 && !target.packsBF16Weights
    ? "note: --precision bf16 needs avx512_bf16 (target \(target.isa.rawValue)); without it every "
      + "product would decode the weights to f32, slower than f32 itself: training in f32"
    : nil
}

extension WeightPrecision {
  /// The precision a train step runs at on `target`: bf16 only where the kernels multiply bf16
  /// weights directly (avx512_bf16); elsewhere f32, which is faster than decoding bf16 weights to
  /// f32 for every product.
  public func effective(on target: Target) -> WeightPrecision {
    self == .bf16 && !target.packsBF16Weights ? .f32 : self
  }
}

/// The hyper-parameters of a run as text, checked against a saved run's when resuming.
struct ResolvedSettings {
  let saved: [String: String]
  let folder: String
  var values: [String: String] = [:]

  init(saved: [String: String], folder: String) {
    self.saved = saved
    self.folder = folder
  }

  /// The value given, else the saved one, else `fallback`; a given value that differs from the
  /// saved one is an error (a resumed run must train the same thing).
  mutating func resolve<T: LosslessStringConvertible>(
    _ name: String, _ given: T?, default fallback: T
  ) throws(SessionError) -> T {
    let stored = saved[name].flatMap { T($0) }
    if let given, let stored, given.description != stored.description {
      throw SessionError(
        "\(folder): the training state was made with --\(name) \(stored), not \(given); "
          + "resume with the same value or train into a new --out")
    }
    let value = given ?? stored ?? fallback
    values[name] = value.description
    return value
  }
}
