import ArgumentParser
import Models
import Sessions

/// `lorac names`: every value hooks can reach, with its shape per token.
struct Names: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List every named value of a model (what captures and patches name), per token.",
    discussion: """
      One line per value in graph order: its name and its type for one token; `seq` marks a \
      dimension as long as the sequence (attention's keys). docs/hooks.md maps the names to \
      TransformerLens hook names.
      """)

  @Argument(help: "The model: a GGUF file or a Hugging Face folder.")
  var model: String

  @Flag(help: "Print one JSON object: {\"names\": [{\"name\", \"dtype\", \"shape\"}]}.")
  var json = false

  func run() throws {
    let points = try LlamaModel.open(model).hookPoints()
    guard json else {
      let width = (points.map(\.name.count).max() ?? 0) + 2
      for point in points {
        print(point.name.padding(toLength: width, withPad: " ", startingAt: 0) + point.typeText)
      }
      return
    }
    let entries = points.map { point in
      let shape = point.shape.map { $0.map(String.init) ?? "\"seq\"" }.joined(separator: ", ")
      return
        "{\"name\": \(jsonString(point.name)), \"dtype\": \"\(point.dtype)\", \"shape\": [\(shape)]}"
    }
    print("{\"names\": [\(entries.joined(separator: ", "))]}")
  }
}
