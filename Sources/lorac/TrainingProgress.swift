import ArgumentParser
import Foundation
import Sessions

#if canImport(Glibc)
  import Glibc
#endif

/// Progress of `lorac train` on stderr: on a terminal one live line rewritten in place every step;
/// otherwise (a log file, a pipe) a plain line at the first step, every fifth and the last.
struct TrainingProgress {
  let live = isatty(STDERR_FILENO) != 0
  private var lineOpen = false

  /// Reports an optimizer step.
  mutating func report(_ report: StepReport) {
    let (step, total) = (report.step, report.total)
    let text = String(
      format: "step %d/%d  loss %.4f  lr %.2e  grad-norm %.3f  %.0f tokens/s  eta %@", step, total,
      report.loss, report.learningRate, report.gradientNorm, report.tokensPerSecond,
      TrainingProgress.duration(report.remainingSeconds))
    if live {
      // Carriage return, then erase the old line's leftovers.
      write("\r\u{1B}[K" + text)
      lineOpen = true
      if step == total { finishLine() }
    } else if report.isFirst || step % 5 == 0 || step == total {
      write(text + "\n")
    }
  }

  /// Shows `text` as the live line on a terminal (ended when `final`); elsewhere as a plain line
  /// when `plain` or `final`.
  mutating func show(_ text: String, final: Bool, plain: Bool) {
    if live {
      write("\r\u{1B}[K" + text)
      lineOpen = true
      if final { finishLine() }
    } else if plain || final {
      write(text + "\n")
    }
  }

  /// Ends the live line, so that what follows starts on a line of its own.
  mutating func finishLine() {
    if lineOpen { write("\n") }
    lineOpen = false
  }

  /// Prints one line of its own.
  mutating func message(_ text: String) {
    finishLine()
    write(text + "\n")
  }

  private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }

  /// `42s`, `3m07s`, `2h05m`.
  static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let whole = Int(seconds.rounded())
    if whole < 60 { return "\(whole)s" }
    if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
    return String(format: "%dh%02dm", whole / 3600, whole % 3600 / 60)
  }
}

/// SIGINT and SIGTERM during training: the first asks the session to stop after the step under
/// way (it saves a checkpoint); a second one ends the process at once with status 130.
enum Interruption {
  private static let cancellation = Cancellation()

  /// Installs the handlers and unblocks the two signals (a launcher may have left them blocked:
  /// Foundation's Process, for one, passes its thread's signal mask on to the child); returns the
  /// cancellation the handlers request.
  static func install() -> Cancellation {
    let cancellation = Interruption.cancellation  // made here, outside the handler
    var unblock = sigset_t()
    sigemptyset(&unblock)
    for number in [SIGINT, SIGTERM] {
      sigaddset(&unblock, number)
      _ = signal(number) { _ in
        if Interruption.cancellation.cancel() > 1 { _exit(130) }
      }
    }
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    return cancellation
  }
}

/// Runs a training job's steps (`train`, `dpo`) with a live progress line on rank 0.
///
/// Then says how the run ended: a stop or an interruption names the saved step and the command
/// that resumes (an interruption exits 130). An error on one rank of an MPI job stops every rank.
func runSteps(
  _ parallel: DataParallel?, total: Int, folder: URL,
  _ run: (_ report: @escaping (StepReport) -> Void) throws -> TrainingOutcome
) throws {
  let speaks = parallel?.rank ?? 0 == 0
  let progress = ProgressBox()
  let outcome: TrainingOutcome
  do {
    outcome = try stoppingEveryRank(parallel) {
      try run { if speaks { progress.line.report($0) } }
    }
  } catch {
    progress.line.finishLine()
    throw error
  }
  progress.line.finishLine()
  switch outcome {
  case .finished: break
  case .stopped(let step), .cancelled(let step):
    let cancelled = outcome == .cancelled(step: step)
    if speaks {
      progress.line.message(
        "\(cancelled ? "interrupted" : "stopped"): saved step \(step)/\(total) in "
          + "\(folder.path); resume with: \(Train.resumeCommand())")
    }
    if cancelled { throw ExitCode(130) }
  }
}

/// The progress line, shared with the report closure.
private final class ProgressBox {
  var line = TrainingProgress()
}
