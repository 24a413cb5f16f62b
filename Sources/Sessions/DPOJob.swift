import Foundation
import IR
import Models
import Runtime

/// What `lorac dpo` asks for; settings left nil take a resumed run's, else the defaults.
public struct DPORequest: Sendable {
  public var model: String
  public var data: String
  public var out: String
  public var beta: Double?
  public var rank: Int?
  public var alpha: Double?
  public var targets: String?
  public var learningRate: Double?
  public var warmup: Int?
  public var steps: Int?
  public var batch: Int?
  public var sequence: Int?
  public var weightDecay: Double?
  public var maxGradientNorm: Double?
  public var seed: UInt64?
  public var rsLoRA: Bool?
  public var saveEvery = 50
  public var stopAfter: Int?
  public var baseModel: String?
  public var resume = false

  public init(model: String, data: String, out: String) {
    self.model = model
    self.data = data
    self.out = out
  }

  /// Checks the counts and rates (the messages name the command's flags).
  public func check() throws(SessionError) {
    try SettingChecks.atLeast(
      1,
      [
        ("--rank", rank), ("--steps", steps), ("--batch", batch), ("--save-every", saveEvery),
        ("--stop-after", stopAfter), ("--seq", sequence),
      ])
    try SettingChecks.atLeast(0, [("--warmup", warmup)])
    try SettingChecks.positive("--beta", beta)
    try SettingChecks.positive("--lr", learningRate)
    try SettingChecks.positive("--alpha", alpha)
    try SettingChecks.notNegative("--weight-decay", weightDecay)
    try SettingChecks.positive("--max-grad-norm", maxGradientNorm)
  }
}

/// A DPO run ready to go: the pairs read, a saved state checked, the session compiled.
public final class DPOJob {
  public let session: DPOSession
  public let pairs: [PreferencePair]
  public let schedule: Schedule
  public let folder: URL
  public let resumedState: TrainingState?
  public let record: CheckpointRecord
  /// The MPI job this rank trains in (nil: one process).
  public let dataParallel: DataParallel?

  private init(
    session: DPOSession, pairs: [PreferencePair], schedule: Schedule, folder: URL,
    resumedState: TrainingState?, dataParallel: DataParallel?, record: CheckpointRecord
  ) {
    self.dataParallel = dataParallel
    self.session = session
    self.pairs = pairs
    self.schedule = schedule
    self.folder = folder
    self.resumedState = resumedState
    self.record = record
  }

  /// Reads the pairs and a saved state, resolves the settings (given, else saved, else default;
  /// a given value that differs from the saved one is refused) and compiles the session.
  ///
  /// With `dataParallel` (a rank of an `mpirun` job) `--batch` counts each rank's pairs; the state
  /// records a step's pairs in all, so a resume may use any number of ranks that divides it.
  public static func prepare(
    _ request: DPORequest, dataParallel: DataParallel? = nil, note: (String) -> Void
  ) throws(SessionError) -> DPOJob {
    try request.check()
    let folder = URL(fileURLWithPath: request.out)
    let saved = try TrainingState.continued(in: request.out, resume: request.resume, note: note)
    var settings = ResolvedSettings(saved: saved?.settings ?? [:], folder: request.out)
    var c = DPOConfiguration()
    c.beta = try settings.resolve("beta", request.beta, default: c.beta)
    c.rank = try settings.resolve("rank", request.rank, default: c.rank)
    c.alpha = try settings.resolve("alpha", request.alpha, default: c.alpha)
    c.targets = try settings.resolve("targets", request.targets, default: c.targets)
    let ranks = dataParallel?.size ?? 1
    let stepPairs = try settings.resolve(
      "batch", request.batch.map { $0 * ranks }, default: c.pairs * ranks)
    guard stepPairs % ranks == 0 else {
      throw SessionError(
        "\(request.out): the training state takes \(stepPairs) pairs per step, which \(ranks) "
          + "ranks cannot share evenly; run with a number of ranks that divides it")
    }
    c.pairs = stepPairs / ranks
    c.seed = try settings.resolve("seed", request.seed, default: c.seed)
    c.rsLoRA = try settings.resolve("rslora", request.rsLoRA, default: c.rsLoRA)
    c.baseModel = request.baseModel
    let learningRate = try settings.resolve("lr", request.learningRate, default: 5e-4)
    let warmup = try settings.resolve("warmup", request.warmup, default: 5)
    let weightDecay = try settings.resolve("weight-decay", request.weightDecay, default: 0.0)
    let maxGradientNorm = try settings.resolve(
      "max-grad-norm", request.maxGradientNorm, default: 1.0)
    let steps =
      request.steps ?? saved.flatMap { $0.settings["steps"] }.flatMap { Int($0) } ?? 60
    settings.values["steps"] = String(steps)
    if let saved, steps < saved.step {
      throw SessionError(
        "\(request.out): the training state is at step \(saved.step), past --steps \(steps)")
    }
    let model = try LlamaModel.open(request.model)
    let tokenizer = try model.tokenizer()
    let pairs = try PreferencePair.load(path: request.data, tokenizer: tokenizer)
    let longest = pairs.flatMap { [$0.chosen.ids.count, $0.rejected.ids.count] }.max() ?? 2
    c.sequence = try settings.resolve(
      "seq", request.sequence, default: min(model.contextLength, max(1, longest - 1)))
    if c.sequence > model.contextLength {
      throw SessionError(
        "--seq \(c.sequence) is more than the model's context of \(model.contextLength) tokens")
    }
    let modelFingerprint: String
    do {
      modelFingerprint = try Fingerprint.file(request.model)
    } catch {
      throw SessionError(error.message)
    }
    let dataFingerprint = Fingerprint.examples(pairs.flatMap { [$0.chosen, $0.rejected] })
    if let saved {
      if saved.modelFingerprint != modelFingerprint {
        throw SessionError(
          "\(request.out): the training state was made with another model; resume with the same "
            + "model or train into a new --out")
      }
      if saved.dataFingerprint != dataFingerprint {
        throw SessionError(
          "\(request.out): the training state was made with other pairs; resume with the same "
            + "--data or train into a new --out")
      }
      if saved.threads != Threads.count {
        note(
          "note: the saved run used \(saved.threads) threads, this one \(Threads.count); the "
            + "continuation will not equal an uninterrupted run bit for bit")
      }
    }
    let schedule = Schedule(
      steps: steps, learningRate: learningRate, warmup: warmup, weightDecay: weightDecay,
      maxGradientNorm: maxGradientNorm, saveEvery: request.saveEvery,
      stopAfter: request.stopAfter)
    try schedule.check()
    let session = try DPOSession(model: model, configuration: c)
    return DPOJob(
      session: session, pairs: pairs, schedule: schedule, folder: folder, resumedState: saved,
      dataParallel: dataParallel,
      record: CheckpointRecord(
        seed: c.seed, settings: settings.values, dataFingerprint: dataFingerprint,
        modelFingerprint: modelFingerprint))
  }

  /// Runs the remaining steps (see `DPOSession.train`).
  public func run(
    cancellation: Cancellation?, progress: (StepReport, DPOFigures) -> Void
  ) throws(SessionError) -> TrainingOutcome {
    try session.train(
      pairs: pairs, schedule: schedule, folder: folder, resume: resumedState, record: record,
      cancellation: cancellation, dataParallel: dataParallel, progress: progress)
  }
}
