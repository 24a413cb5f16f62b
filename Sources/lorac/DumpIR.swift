import ArgumentParser
import IR
import Models

/// `lorac dump-ir`: prints a model's IR text.
struct DumpIR: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dump-ir",
    abstract: "Print the IR of a model as text.")

  /// The built-in example models.
  enum Example: String, ExpressibleByArgument, CaseIterable {
    case mlp
  }

  @Option(
    help: "A built-in example model: \(Example.allCases.map(\.rawValue).joined(separator: ", ")).")
  var example: Example

  @Option(help: "Batch size of the traced graph.")
  var batch: Int = 4

  func validate() throws {
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
  }

  func run() throws {
    let graph: Graph
    do {
      switch example {
      case .mlp: graph = try MLP.trace(batch: batch)
      }
    } catch {
      fail(error.description)
    }
    print(Printer().print(graph), terminator: "")
  }
}
