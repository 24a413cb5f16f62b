import Dispatch
import Foundation
import Models

/// What scores a rollout's samples in RLHF: one number per sample, higher is better.
public enum RewardFunction: Sendable, Hashable, CustomStringConvertible {
  /// The occurrences of a string in the whole decoded row, prefix included (the tutorial's
  /// `reward_fn_char_count`; the prefix "This is" has no ".").
  case characterCount(String)
  /// The number of characters of the completion.
  case length
  /// A program run with `/bin/sh -c`: it reads one JSON line `{"prompt": ..., "completion": ...}`
  /// per sample on stdin and writes one number per line on stdout.
  case command(String)

  /// Reads `--reward char-count:C` or `--reward length`.
  public init(parsing spec: String) throws(SessionError) {
    if spec == "length" {
      self = .length
    } else if spec.hasPrefix("char-count:") {
      let text = String(spec.dropFirst("char-count:".count))
      guard !text.isEmpty else {
        throw SessionError("--reward char-count:C needs a character after the colon, got '\(spec)'")
      }
      self = .characterCount(text)
    } else {
      throw SessionError(
        "--reward '\(spec)' is not a reward; expected char-count:C or length (or --reward-cmd CMD)"
      )
    }
  }

  public var description: String {
    switch self {
    case .characterCount(let text): "char-count:\(text)"
    case .length: "length"
    case .command(let command): "cmd:\(command)"
    }
  }

  /// The rewards of `completions` sampled after `prompt`, in order.
  public func rewards(prompt: String, completions: [String]) throws(SessionError) -> [Double] {
    switch self {
    case .characterCount(let text):
      return completions.map { Double(occurrences(of: text, in: prompt + $0)) }
    case .length:
      return completions.map { Double($0.count) }
    case .command(let command):
      return try RewardFunction.run(command, prompt: prompt, completions: completions)
    }
  }

  /// Runs a reward command on the samples and reads its answers, strictly: exactly one finite
  /// number per line for each sample (trailing blank lines aside), and status 0.
  static func run(_ command: String, prompt: String, completions: [String]) throws(SessionError)
    -> [Double]
  {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    let input = Pipe()
    let output = Pipe()
    let errors = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = errors
    // A program that exits without reading every line must not kill us with SIGPIPE: the
    // write then fails quietly and the answers are judged.
    signal(SIGPIPE, SIG_IGN)
    do {
      try process.run()
    } catch {
      throw SessionError("--reward-cmd '\(command)': cannot start: \(error.localizedDescription)")
    }
    let lines = completions.map {
      "{\"prompt\": \(jsonString(prompt)), \"completion\": \(jsonString($0))}\n"
    }
    let payload = Data(lines.joined().utf8)
    // Written from another thread, so a program that answers before reading everything cannot
    // block on a full pipe while we block writing.
    let writer = DispatchGroup()
    writer.enter()
    DispatchQueue.global().async {
      let handle = input.fileHandleForWriting
      try? handle.write(contentsOf: payload)
      try? handle.close()
      writer.leave()
    }
    let errorText = ErrorCollector(errors.fileHandleForReading)
    let answer = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    writer.wait()
    let stderr = errorText.text()
    if process.terminationStatus != 0 {
      let detail = stderr.split(separator: "\n").first.map { ": \($0)" } ?? ""
      throw SessionError(
        "--reward-cmd '\(command)' exited with status \(process.terminationStatus)\(detail)")
    }
    // Split on bytes: Swift strings hold "\r\n" as one character, which no "\n" split sees.
    var answers = answer.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
      .map { String(decoding: $0, as: UTF8.self) }
    while answers.last?.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty == true {
      answers.removeLast()
    }
    var rewards: [Double] = []
    for (index, line) in answers.enumerated() {
      let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
      guard index < completions.count else {
        throw SessionError(
          "--reward-cmd '\(command)': answered \(answers.count) lines for \(completions.count) "
            + "samples (one number per line expected)")
      }
      guard let value = Double(text), value.isFinite else {
        let shown = text.count > 40 ? String(text.prefix(40)) + "..." : text
        throw SessionError(
          "--reward-cmd '\(command)': line \(index + 1) of its output is '\(shown)', expected a "
            + "finite number")
      }
      rewards.append(value)
    }
    guard rewards.count == completions.count else {
      throw SessionError(
        "--reward-cmd '\(command)': answered \(rewards.count) lines for \(completions.count) "
          + "samples (one number per line expected)")
    }
    return rewards
  }
}

/// The non-overlapping occurrences of `needle` in `text`, as Python's `str.count` (compared as
/// UTF-8 bytes, so "\r\n" holds one "\n", which a search by Swift characters would not see).
func occurrences(of needle: String, in text: String) -> Int {
  let (pattern, bytes) = (Array(needle.utf8), Array(text.utf8))
  guard !pattern.isEmpty, pattern.count <= bytes.count else { return 0 }
  var (count, index) = (0, 0)
  while index + pattern.count <= bytes.count {
    if bytes[index..<(index + pattern.count)].elementsEqual(pattern) {
      count += 1
      index += pattern.count
    } else {
      index += 1
    }
  }
  return count
}

/// Reads a pipe to its end on another thread (a program's stderr, so a chatty one never blocks).
private final class ErrorCollector: @unchecked Sendable {
  private var data = Data()
  private let done = DispatchGroup()

  init(_ handle: FileHandle) {
    done.enter()
    DispatchQueue.global().async {
      self.data = handle.readDataToEndOfFile()
      self.done.leave()
    }
  }

  func text() -> String {
    done.wait()
    return String(decoding: data, as: UTF8.self)
  }
}
