import Foundation
import IR
import Models
import Runtime

/// An RLHF run ready to go: the session compiled, a saved state checked against the settings,
/// the model and the reward when resuming.
public final class RLHFJob {
  public let session: RLHFSession
  public let reward: RewardFunction
  public let folder: URL
  public let saveEvery: Int
  public let stopAfter: Int?
  public let resumedState: RLHFState?
  public let record: CheckpointRecord

  private init(
    session: RLHFSession, reward: RewardFunction, folder: URL, saveEvery: Int, stopAfter: Int?,
    resumedState: RLHFState?, record: CheckpointRecord
  ) {
    self.session = session
    self.reward = reward
    self.folder = folder
    self.saveEvery = saveEvery
    self.stopAfter = stopAfter
    self.resumedState = resumedState
    self.record = record
  }

  /// Opens the model, reads a saved state in `out` and compiles the session.
  ///
  /// Resuming needs the same settings as the saved run (only `--phases` may grow), the same model
  /// file and the same reward; anything else is refused before a phase runs. A state found without
  /// `resume` is noted and started over.
  ///
  /// With `dataParallel` (a rank of an `mpirun` job) the ranks share every phase's `--batch` rows
  /// and every minibatch's `accumulate` runs (default: one run per rank). A saved state depends
  /// on neither, so any number of ranks dividing the minibatch resumes it.
  public static func prepare(
    model path: String, out: String, configuration: RLHFConfiguration, reward: RewardFunction,
    saveEvery: Int, stopAfter: Int? = nil, resume: Bool, dataParallel: DataParallel? = nil,
    accumulate: Int? = nil, note: (String) -> Void
  ) throws(SessionError) -> RLHFJob {
    try configuration.check()
    let ranks = dataParallel?.size ?? 1
    try RLHFSession.checkRanks(configuration, ranks: ranks, accumulate: accumulate ?? ranks)
    try SettingChecks.atLeast(1, [("--save-every", saveEvery), ("--stop-after", stopAfter)])
    let folder = URL(fileURLWithPath: out)
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: out, isDirectory: &isFolder), !isFolder.boolValue {
      throw SessionError("\(out): is a file; --out names a folder (made if missing)")
    }
    var saved: RLHFState?
    do {
      saved = try RLHFState.read(from: folder)
    } catch {
      throw SessionError(error.message)
    }
    if resume && saved == nil {
      throw SessionError(
        "\(out): no RLHF state to resume (\(RLHFState.fileName) is missing); run without "
          + "--resume to start")
    }
    if !resume, let old = saved {
      note(
        "note: \(out) holds an RLHF state at phase \(old.phase); starting over (--resume continues it)"
      )
      saved = nil
    }
    let model = try LlamaModel.open(path)
    let fingerprint: String
    do {
      fingerprint = try Fingerprint.file(path)
    } catch {
      throw SessionError(error.message)
    }
    if let saved {
      if saved.modelFingerprint != fingerprint {
        throw SessionError(
          "\(out): the RLHF state was made with another model (fingerprint "
            + "\(saved.modelFingerprint), \(path) has \(fingerprint)); resume with the same model "
            + "or train into a new --out")
      }
      if saved.reward != reward.description {
        throw SessionError(
          "\(out): the RLHF state was trained with reward '\(saved.reward)', not "
            + "'\(reward.description)'; resume with the same reward or train into a new --out")
      }
      let settings = configuration.settings
      for key in settings.keys.sorted()
      where key != "phases" && settings[key] != saved.settings[key] {
        throw SessionError(
          "\(out): --\(key) is \(settings[key] ?? "unset") but the saved run used "
            + "\(saved.settings[key] ?? "no value"); a resume continues the same run (only "
            + "--phases may change), or train into a new --out")
      }
      if let stopAfter, stopAfter <= saved.phase {
        throw SessionError(
          "--stop-after \(stopAfter) is not past the RLHF state's phase \(saved.phase)")
      }
      if saved.phase > configuration.phases {
        throw SessionError(
          "\(out): the RLHF state is at phase \(saved.phase), past --phases \(configuration.phases)"
        )
      }
      if saved.threads != (configuration.target.threads ?? Threads.count) {
        note(
          "note: the saved run used \(saved.threads) threads, this one \(Threads.count); the "
            + "continuation will not equal an uninterrupted run bit for bit")
      }
    }
    let session = try RLHFSession(
      model: model, tokenizer: try model.tokenizer(), configuration: configuration,
      dataParallel: dataParallel, accumulate: accumulate)
    return RLHFJob(
      session: session, reward: reward, folder: folder, saveEvery: saveEvery,
      stopAfter: stopAfter, resumedState: saved,
      record: CheckpointRecord(
        seed: configuration.seed, settings: configuration.settings, modelFingerprint: fingerprint))
  }

  /// Runs the remaining phases (see `RLHFSession.train`).
  public func run(
    cancellation: Cancellation?, shownSamples: Int = 3, progress: (PhaseReport) -> Void
  ) throws(SessionError) -> RLHFOutcome {
    try session.train(
      reward: reward, folder: folder, saveEvery: saveEvery, stopAfter: stopAfter,
      resume: resumedState, record: record,
      cancellation: cancellation, shownSamples: shownSamples, progress: progress)
  }
}
