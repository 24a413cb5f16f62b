import ArgumentParser
import IR

/// `lorac check-ir`: parses and verifies IR text, then prints it canonically.
struct CheckIR: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "check-ir",
    abstract: "Parse and verify IR text, then print its canonical form.",
    discussion:
      "On an error prints 'error: FILE:LINE:COL: message' (for standard input 'error: LINE:COL: message') to stderr and exits 1."
  )

  @Argument(help: "The IR file, or - for standard input.")
  var file: String

  func run() throws {
    let text = readText(file)
    let graph: Graph
    do {
      graph = try Parser.parse(text)
      try Verifier.verify(graph)
    } catch let error as ParseError {
      fail(sourcePrefix(file) + error.description)
    } catch {
      fail("\(error)")
    }
    print(Printer().print(graph), terminator: "")
  }
}

/// `FILE:` before a `LINE:COL:` position in IR read from a file; nothing for standard input.
func sourcePrefix(_ file: String) -> String { file == "-" ? "" : "\(file):" }
