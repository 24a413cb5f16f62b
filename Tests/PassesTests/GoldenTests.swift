import Foundation
import IR
import Passes
import Testing

// Golden pass tests in the style of MLIR's lit tests: each file under Tests/PassesTests/Golden
// holds a pipeline, an input graph and the exact text the pipeline must print (or the exact error
// it must give). The format is in Tests/PassesTests/Golden/README.md.

/// The folder of golden files: one subfolder per pass, plus `pipeline` for pipeline-text errors.
private let goldenFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  .appendingPathComponent("Golden")

/// Set to 1 to rewrite every file's `# EXPECT:` or `# ERROR:` part with what the passes give now.
private let recordVariable = "RECORD_GOLDEN"

/// One golden file: `# RUN: <pipeline>`, the input IR, then `# EXPECT:` and the printed result, or
/// `# ERROR: <message>`.
struct GoldenCase: CustomTestStringConvertible, Sendable {
  /// The path below the golden folder, `lora/design-example.ir`.
  var path: String
  /// The pipeline text of the `# RUN:` line.
  var pipeline: String
  /// Everything before the `# EXPECT:` or `# ERROR:` line: the comment, the RUN line, the input IR.
  var head: String
  /// What the pipeline must give.
  var expected: Outcome

  enum Outcome: Equatable, Sendable {
    /// The printed graph, to the character.
    case text(String)
    /// A `PassError` message, to the character.
    case error(String)
  }

  var testDescription: String { path }

  /// Reads one golden file; a malformed file is a recorded issue.
  init(path: String, contents: String) throws {
    self.path = path
    var head: [Substring] = []
    var expected: Outcome?
    var pipeline: String?
    let lines = contents.split(separator: "\n", omittingEmptySubsequences: false)
    for (index, line) in lines.enumerated() {
      if line.hasPrefix("# RUN:") {
        try #require(pipeline == nil, "\(path): more than one RUN line")
        pipeline = line.dropFirst("# RUN:".count).trimmingCharacters(in: .whitespaces)
      }
      if line == "# EXPECT:" {
        expected = .text(lines[(index + 1)...].joined(separator: "\n"))
        break
      }
      if line.hasPrefix("# ERROR:") {
        let rest = lines[(index + 1)...].joined(separator: "\n")
        let onlyWhitespace = rest.allSatisfy { $0.isWhitespace }
        try #require(onlyWhitespace, "\(path): nothing may follow the ERROR line")
        expected = .error(String(line.dropFirst("# ERROR:".count).drop { $0 == " " }))
        break
      }
      head.append(line)
    }
    self.pipeline = try #require(pipeline, "\(path): no '# RUN: <pipeline>' line")
    self.expected = try #require(expected, "\(path): no '# EXPECT:' or '# ERROR:' line")
    self.head = head.joined(separator: "\n") + "\n"
  }

  /// Every golden file, sorted by path.
  static func all() -> [GoldenCase] {
    let files =
      FileManager.default.enumerator(atPath: goldenFolder.path)?
      .compactMap { $0 as? String }.filter { $0.hasSuffix(".ir") }.sorted() ?? []
    return files.compactMap { path in
      guard
        let contents = try? String(
          contentsOf: goldenFolder.appendingPathComponent(path), encoding: .utf8)
      else { return nil }
      return try? GoldenCase(path: path, contents: contents)
    }
  }

  /// Parses and verifies the input, runs the pipeline (the verifier after every pass), and
  /// returns the printed graph or the pass error.
  func run() throws -> Outcome {
    let input = try Parser.parse(head)
    try Verifier.verify(input)
    do {
      let pipeline = try Pipeline(parsing: pipeline)
      return .text(Printer().print(try pipeline.run(input, verify: true)))
    } catch {
      return .error(error.message)
    }
  }

  /// The file as it would be with `outcome` recorded.
  func recorded(_ outcome: Outcome) -> String {
    switch outcome {
    case .text(let text): head + "# EXPECT:\n" + text
    case .error(let message): head + "# ERROR: " + message + "\n"
    }
  }
}

/// The lines of `expected` and `actual` as a unified-style diff: ` ` common, `-` expected only,
/// `+` actual only (a longest common subsequence; golden files are small).
func unifiedDiff(expected: String, actual: String) -> String {
  let a = expected.split(separator: "\n", omittingEmptySubsequences: false)
  let b = actual.split(separator: "\n", omittingEmptySubsequences: false)
  var common = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
  for i in stride(from: a.count - 1, through: 0, by: -1) {
    for j in stride(from: b.count - 1, through: 0, by: -1) {
      common[i][j] =
        a[i] == b[j] ? common[i + 1][j + 1] + 1 : max(common[i + 1][j], common[i][j + 1])
    }
  }
  var lines: [String] = ["--- expected", "+++ actual"]
  var (i, j) = (0, 0)
  while i < a.count || j < b.count {
    if i < a.count, j < b.count, a[i] == b[j] {
      lines.append(" " + a[i])
      (i, j) = (i + 1, j + 1)
    } else if i < a.count, j == b.count || common[i + 1][j] >= common[i][j + 1] {
      lines.append("-" + a[i])
      i += 1
    } else {
      lines.append("+" + b[j])
      j += 1
    }
  }
  return lines.joined(separator: "\n")
}

@Test(arguments: GoldenCase.all())
func goldenPipelineOutput(_ golden: GoldenCase) throws {
  let actual = try golden.run()
  if ProcessInfo.processInfo.environment[recordVariable] == "1" {
    let url = goldenFolder.appendingPathComponent(golden.path)
    try golden.recorded(actual).write(to: url, atomically: true, encoding: .utf8)
    Issue.record(
      "recorded \(golden.path): review the change with git diff, then run without \(recordVariable)"
    )
    return
  }
  guard actual != golden.expected else { return }
  let regenerate =
    "if the new output is right: \(recordVariable)=1 swift test --filter goldenPipelineOutput,"
    + " then review git diff Tests/PassesTests/Golden"
  switch (golden.expected, actual) {
  case (.text(let expected), .text(let text)):
    Issue.record(
      "\(golden.path): output differs\n\(unifiedDiff(expected: expected, actual: text))\n\(regenerate)"
    )
  case (.text, .error(let message)):
    Issue.record("\(golden.path): expected output, got error: \(message)\n\(regenerate)")
  case (.error(let expected), .text(let text)):
    Issue.record(
      "\(golden.path): expected error '\(expected)', got output:\n\(text)\n\(regenerate)")
  case (.error(let expected), .error(let message)):
    Issue.record("\(golden.path): expected error '\(expected)', got '\(message)'\n\(regenerate)")
  }
}

@Test func goldenFilesAllParse() throws {
  // A malformed file would be dropped from the argument list above: count them here instead.
  let files =
    FileManager.default.enumerator(atPath: goldenFolder.path)?
    .compactMap { $0 as? String }.filter { $0.hasSuffix(".ir") } ?? []
  for path in files {
    let contents = try String(
      contentsOf: goldenFolder.appendingPathComponent(path), encoding: .utf8)
    _ = try GoldenCase(path: path, contents: contents)
  }
  #expect(GoldenCase.all().count == files.count)
}

@Test func everyPassHasAGoldenFolder() throws {
  let folders = try FileManager.default.contentsOfDirectory(atPath: goldenFolder.path)
    .filter { !$0.contains(".") }
  let passes = passRegistry.map { $0.mnemonic }
  for pass in passes {
    #expect(
      !GoldenCase.all().filter { $0.path.hasPrefix(pass + "/") }.isEmpty,
      "no golden file for pass '\(pass)' in Tests/PassesTests/Golden/\(pass)")
  }
  for folder in folders {
    #expect(passes.contains(folder) || folder == "pipeline", "\(folder) is not a pass")
  }
}
