import Foundation
import IR
import Testing

/// One malformed input of `Invalid/*.ir` with the exact error it must produce.
struct InvalidCase: CustomTestStringConvertible, Sendable {
  var file: String
  var index: Int
  var text: String
  var expected: String

  var testDescription: String { "\(file) #\(index): \(expected)" }

  /// Every case in `Tests/IRTests/Invalid`, split at `# -----` lines; each starts with
  /// `# error: LINE:COL: message` (lines count from the case's first line).
  static func all() -> [InvalidCase] {
    let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Invalid")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    var cases: [InvalidCase] = []
    for file in files.sorted() where file.hasSuffix(".ir") {
      guard
        let contents = try? String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
      else { continue }
      var chunks: [[Substring]] = [[]]
      for line in contents.split(separator: "\n", omittingEmptySubsequences: false) {
        if line == "# -----" { chunks.append([]) } else { chunks[chunks.count - 1].append(line) }
      }
      for (index, chunk) in chunks.enumerated() {
        let text = chunk.joined(separator: "\n")
        let expected = chunk.first.map { String($0.dropFirst("# error: ".count)) } ?? ""
        cases.append(InvalidCase(file: file, index: index, text: text, expected: expected))
      }
    }
    return cases
  }
}

@Test func invalidCasesAreNumerous() {
  let cases = InvalidCase.all()
  #expect(cases.count >= 15)
  #expect(Set(cases.map(\.expected)).count == cases.count, "every case checks a distinct message")
  #expect(cases.allSatisfy { $0.text.hasPrefix("# error: ") })
}

@Test(arguments: InvalidCase.all())
func parserRejectsWithPreciseMessage(_ invalid: InvalidCase) {
  do {
    let graph = try Parser.parse(invalid.text)
    Issue.record("parsed without error: \(Printer().print(graph))")
  } catch {
    #expect(error.description == invalid.expected)
  }
}

@Test func truncatedInputsNeverCrash() {
  // Every prefix of a valid text is either valid or a clean ParseError.
  let text = Printer().print((try? everyOpGraph()) ?? Graph(name: "empty"))
  let bytes = Array(text.utf8)
  var failures = 0
  for end in stride(from: 0, to: bytes.count, by: 7) {
    let prefix = String(decoding: bytes[..<end], as: UTF8.self)
    do { _ = try Parser.parse(prefix) } catch { failures += 1 }
  }
  #expect(failures > 0)
}
