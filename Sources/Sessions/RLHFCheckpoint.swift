import Foundation
import IR
import Models

/// Everything `lorac rlhf --resume` needs to continue a run exactly where a checkpoint left it.
///
/// It holds the adapter's and the value head's tensors, AdamW's moments and step count, the phase, the
/// settings and the model's fingerprint. Every random draw of a phase is seeded from the run's
/// seed and the phase's number, so no generator state is kept.
///
/// Stored as one safetensors file: `param.NAME`, `adam_m.NAME`, `adam_v.NAME` (F32, lorac's
/// names and layouts), the scalars as string metadata.
public struct RLHFState: Sendable {
  public static let fileName = "rlhf_state.safetensors"
  public static let format = "lorac-rlhf-state-1"

  /// Phases completed.
  public var phase: Int
  public var optimizerStep: Int
  /// Seconds spent before this checkpoint, over every run.
  public var elapsed: Double
  /// The thread count the phases ran with (bit-identical continuation needs the same).
  public var threads: Int
  public var settings: [String: String]
  public var modelFingerprint: String
  /// The reward as given (`char-count:.`, `length`, `cmd:...`).
  public var reward: String
  public var parameters: [String: HostTensor]
  public var firstMoments: [String: [Float]]
  public var secondMoments: [String: [Float]]

  public init(
    phase: Int, optimizerStep: Int, elapsed: Double, threads: Int, settings: [String: String],
    modelFingerprint: String, reward: String, parameters: [String: HostTensor],
    firstMoments: [String: [Float]], secondMoments: [String: [Float]]
  ) {
    self.phase = phase
    self.optimizerStep = optimizerStep
    self.elapsed = elapsed
    self.threads = threads
    self.settings = settings
    self.modelFingerprint = modelFingerprint
    self.reward = reward
    self.parameters = parameters
    self.firstMoments = firstMoments
    self.secondMoments = secondMoments
  }

  /// Writes the state into `folder` crash-safely (temporary file, flush, rename).
  public func write(to folder: URL) throws(SafetensorsError) {
    let tensors = StateFile.optimizerTensors(
      parameters, first: firstMoments, second: secondMoments)
    var metadata = [
      "format": RLHFState.format, "phase": String(phase),
      "optimizer_step": String(optimizerStep), "elapsed_s": String(elapsed),
      "threads": String(threads), "model_fingerprint": modelFingerprint, "reward": reward,
    ]
    for (key, value) in settings { metadata["hp.\(key)"] = value }
    try SafetensorsFile.write(
      tensors, metadata: metadata, to: folder.appendingPathComponent(RLHFState.fileName))
  }

  /// Reads the state in `folder`, or nil when there is none; a damaged file is an error.
  public static func read(from folder: URL) throws(SafetensorsError) -> RLHFState? {
    guard
      let state = try StateFile(
        folder: folder, fileName: fileName, format: format, kind: "RLHF state")
    else { return nil }
    let (metadata, fail, integer) = (state.metadata, state.fail, state.integer)
    guard let elapsedText = metadata["elapsed_s"], let elapsed = Double(elapsedText) else {
      throw fail("'elapsed_s' is missing or malformed")
    }
    let settings = state.settings
    let (parameters, first, second) = try state.optimizerTensors()
    return RLHFState(
      phase: try integer("phase"), optimizerStep: try integer("optimizer_step"), elapsed: elapsed,
      threads: try integer("threads"), settings: settings,
      modelFingerprint: metadata["model_fingerprint"] ?? "", reward: metadata["reward"] ?? "",
      parameters: parameters, firstMoments: first, secondMoments: second)
  }
}

/// The lines of an RLHF run's metrics.jsonl and the per-phase figures its chart draws.
public struct RLHFMetrics: Sendable {
  public var lines: [String] = []
  public var rewards: [(step: Int, loss: Double)] = []
  public var kls: [(step: Int, loss: Double)] = []

  public init() {}

  /// The lines of an earlier run's file up to phase `last` (a crash may have left later ones).
  public init(reading url: URL, upTo last: Int) {
    guard let text = try? String(contentsOf: url, encoding: .utf8) else { return }
    for line in text.split(separator: "\n") {
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let phase = object["phase"] as? Int, let reward = object["reward_mean"] as? Double,
        let kl = object["kl"] as? Double, phase <= last
      else { continue }
      lines.append(String(line))
      rewards.append((phase, reward))
      kls.append((phase, kl))
    }
  }

  /// Adds a phase's line: `{"phase", "reward_mean", "reward_std", "kl", "entropy", "clipfrac",
  /// "policy_loss", "value_loss", "samples_per_s", "lr", "rollout_s", "reward_s", "evaluate_s",
  /// "learn_s", "elapsed_s"}`.
  public mutating func append(_ report: PhaseReport, elapsed: Double) {
    let r = report
    lines.append(
      "{\"phase\": \(r.phase), \"reward_mean\": \(r.rewardMean), \"reward_std\": \(r.rewardStandardDeviation), \"kl\": \(r.kl), \"entropy\": \(r.entropy), \"clipfrac\": \(r.clipFraction), \"policy_loss\": \(r.policyLoss), \"value_loss\": \(r.valueLoss), \"samples_per_s\": \(r.samplesPerSecond), \"lr\": \(r.learningRate), \"rollout_s\": \(r.seconds.rollout), \"reward_s\": \(r.seconds.reward), \"evaluate_s\": \(r.seconds.evaluation), \"learn_s\": \(r.seconds.learning), \"elapsed_s\": \(elapsed)}"
    )
    rewards.append((r.phase, r.rewardMean))
    kls.append((r.phase, r.kl))
  }

  /// Two charts side by side: the mean reward and the KL to the reference, per phase.
  public func svg() -> String {
    let header = "<svg xmlns=\"http://www.w3.org/2000/svg\" "
    let left = LossCurve.svg(rewards, title: "mean reward", x: "phase", y: "reward")
    let right = LossCurve.svg(kls, title: "KL(policy || reference)", x: "phase", y: "KL")
      .replacingOccurrences(of: header, with: header + "x=\"\(Int(LossCurve.width))\" ")
    let width = Int(2 * LossCurve.width)
    let height = Int(LossCurve.height)
    return header
      + "width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\">\n" + left
      + right + "</svg>\n"
  }
}
