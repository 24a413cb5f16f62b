import Foundation
import Runtime

/// RLHF on the ranks of an `mpirun` job (docs/distributed.md): each rank samples, scores and
/// evaluates its share of the phase's rows, gathers the others', and runs its share of every
/// minibatch; the gradients are summed over the ranks before clipping and AdamW. One process is
/// the case of one rank: every function here is then the identity or does nothing, so both run
/// the same code.
extension RLHFSession {
  /// The number of ranks sharing the phase (1 for one process).
  public var ranks: Int { dataParallel?.size ?? 1 }
  /// This process's rank (0 for one process).
  public var rank: Int { dataParallel?.rank ?? 0 }

  /// The rows of the phase this rank samples, scores and evaluates: the `r`-th of `ranks` equal
  /// runs of `0 ..< batch`.
  public var ownRows: Range<Int> {
    let share = configuration.batch / ranks
    return (rank * share)..<((rank + 1) * share)
  }

  /// This rank's runs of a minibatch (row indices in the minibatch's order): of its
  /// `accumulate` equal runs, the `r`-th `accumulate / ranks`.
  public func runs(of minibatch: [Int]) -> [[Int]] {
    let mine = accumulate / ranks
    return (rank * mine..<(rank + 1) * mine).map {
      Array(minibatch[($0 * rowsPerRun)..<(($0 + 1) * rowsPerRun)])
    }
  }

  /// Refuses a number of ranks, or of runs per minibatch (`accumulate`), that does not share
  /// the minibatch equally.
  public static func checkRanks(_ c: RLHFConfiguration, ranks: Int, accumulate: Int)
    throws(SessionError)
  {
    if ranks > 1 && c.minibatchSize % ranks != 0 {
      throw SessionError(
        "--batch \(c.batch) with --minibatches \(c.minibatches) makes minibatches of "
          + "\(c.minibatchSize) rows, which \(ranks) ranks cannot share equally; run a number "
          + "of ranks that divides \(c.minibatchSize)")
    }
    if accumulate < 1 || c.minibatchSize % accumulate != 0 {
      throw SessionError(
        "--accumulate \(accumulate) does not divide the minibatches of \(c.minibatchSize) rows "
          + "(--batch \(c.batch) / --minibatches \(c.minibatches))")
    }
    if accumulate % ranks != 0 {
      throw SessionError(
        "--accumulate \(accumulate) is not a multiple of the \(ranks) ranks, which share a "
          + "minibatch's runs equally")
    }
  }

  /// Every rank's rows (of `sequence` tokens each), in rank order: the phase's rows.
  func gatherRows(_ rows: [[Int32]]) throws(SessionError) -> [[Int32]] {
    guard let dataParallel else { return rows }
    let gathered = try dataParallel.allGather(rows.joined().map(Double.init)).joined()
    let tokens = gathered.map { Int32($0) }
    return stride(from: 0, to: tokens.count, by: sequence).map {
      Array(tokens[$0..<($0 + sequence)])
    }
  }

  /// Every rank's `doubles`, concatenated in rank order.
  func gather(doubles: [Double]) throws(SessionError) -> [Double] {
    guard let dataParallel else { return doubles }
    return Array(try dataParallel.allGather(doubles).joined())
  }

  /// Every rank's evaluated rows, in rank order (so the runs' order).
  func gather(_ part: EvaluatedRows) throws(SessionError) -> EvaluatedRows {
    guard let dataParallel else { return part }
    return EvaluatedRows(
      logprobs: try dataParallel.allGather(floats: part.logprobs),
      values: try dataParallel.allGather(floats: part.values),
      reference: try dataParallel.allGather(floats: part.reference),
      kl: Array(try dataParallel.allGather(part.kl).joined()),
      entropy: Array(try dataParallel.allGather(part.entropy).joined()))
  }

  /// The figures of every run of a minibatch (this rank's `parts`, gathered from all ranks in
  /// the runs' order) added up in that order, the same on every rank and for any number of
  /// ranks.
  func sumOverRuns(_ parts: [[Double]]) throws(SessionError) -> [Double] {
    var all = parts
    if let dataParallel {
      all = try dataParallel.allGather(Array(parts.joined())).flatMap { gathered in
        stride(from: 0, to: gathered.count, by: parts[0].count).map {
          Array(gathered[$0..<($0 + parts[0].count)])
        }
      }
    }
    return all[0].indices.map { index in all.map { $0[index] }.reduce(0, +) }
  }

  /// Makes the next update step with the whole minibatch's gradient.
  ///
  /// That is the sum (not the mean) of this rank's runs, summed over the ranks: each run's
  /// objective is already its part of the minibatch's (its sums are divided by the minibatch's
  /// count).
  func sumGradientsOverRanks() throws(SessionError) {
    guard let dataParallel else {
      if accumulate > 1 { trainer.optimizer.reduceSums(count: 1) { _, _ in } }
      return
    }
    try trainer.optimizer.reduceSums(count: 1) { (sums, count) throws(SessionError) in
      try dataParallel.allreduceSum(sums, count: count)
    }
  }

  /// Whether any rank says `flag` (a stop request), agreed by all.
  func anyRank(_ flag: Bool) throws(SessionError) -> Bool {
    guard let dataParallel else { return flag }
    return try dataParallel.allGather([flag ? 1 : 0]).contains { $0[0] != 0 }
  }

  /// Fails on every rank unless all ranks run the same model, settings, reward, resumed phase,
  /// threads and output folder.
  func checkRanksAgree(
    record: CheckpointRecord, reward: RewardFunction, resumedPhase: Int?, folder: URL
  ) throws(SessionError) {
    guard let dataParallel else { return }
    let settings = record.settings.keys.sorted().map { "\($0)=\(record.settings[$0] ?? "")" }
    try dataParallel.checkAgreement([
      ("model", record.modelFingerprint), ("settings", settings.joined(separator: " ")),
      ("reward", reward.description), ("seed", String(record.seed)),
      ("resumed phase", resumedPhase.map(String.init) ?? "none"),
      // Kernels sum in an order that depends on the thread count.
      ("threads", String(Threads.count)), ("accumulate", String(accumulate)),
      ("output folder", folder.standardizedFileURL.path),
    ])
  }

  /// Fails on every rank unless all ranks hold the same adapter and value head after `phase`.
  func checkSameParameters(phase: Int) throws(SessionError) {
    try dataParallel?.checkSameAdapter(
      trainer.executable, parameters, step: phase, unit: "phase",
      what: "adapters and value heads")
  }
}
