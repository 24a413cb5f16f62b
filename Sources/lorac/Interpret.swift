import ArgumentParser
import Foundation
import IR

/// `lorac interpret`: runs IR text with the reference interpreter.
struct Interpret: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run IR text with the reference interpreter and print its outputs as JSON.",
    discussion: """
      Every graph input and constant needs a --input NAME=V1,V2,... with its elements in row-major \
      order; parameters and state with an initializer get their seeded initial values. Prints \
      {"outputs": [{"name", "dtype", "shape", "values"}, ...]}.
      """)

  @Argument(help: "The IR file, or - for standard input.")
  var file: String

  @Option(name: .customLong("input"), help: "A value for an input or constant: NAME=V1,V2,...")
  var inputs: [String] = []

  @Option(help: "f32 rounds every result to float; f64 keeps double precision.")
  var precision: PrecisionOption = .f32

  enum PrecisionOption: String, ExpressibleByArgument, CaseIterable { case f32, f64 }

  func run() throws {
    let graph: Graph
    do {
      graph = try Parser.parse(readText(file))
      try Verifier.verify(graph)
    } catch let error as ParseError {
      fail(sourcePrefix(file) + error.description)
    }
    let bindings = parseBindings(for: graph)
    let interpreter = Interpreter(precision: precision == .f32 ? .f32 : .f64)
    let outputs: [DenseTensor]
    do {
      outputs = try interpreter.run(graph, bindings: bindings)
    } catch {
      fail(error.description)
    }
    let names = graph.outputNames
    print("{\"outputs\": [")
    for (index, (name, output)) in zip(names, outputs).enumerated() {
      let values = output.scalars.map { output.dtype == .i32 ? String(Int($0)) : jsonNumber($0) }
      let line =
        "  {\"name\": \"\(name)\", \"dtype\": \"\(output.dtype.rawValue)\", \"shape\": \(output.shape), \"values\": [\(values.joined(separator: ", "))]}"
      print(line + (index + 1 < outputs.count ? "," : ""))
    }
    print("]}")
  }

  /// Parses `NAME=V1,V2,...` options against the graph's inputs and declarations.
  private func parseBindings(for graph: Graph) -> [String: DenseTensor] {
    var types: [String: TensorType] = [:]
    for input in graph.inputs { types[input.name] = graph.type(of: input.value) }
    for declaration in graph.declarations {
      types[declaration.name] = graph.type(of: declaration.value)
    }
    var bindings: [String: DenseTensor] = [:]
    for option in inputs {
      guard let equals = option.firstIndex(of: "=") else {
        fail("--input '\(option)': expected NAME=V1,V2,...")
      }
      let name = String(option[..<equals])
      guard let type = types[name] else {
        let known = types.keys.sorted().joined(separator: ", ")
        fail(
          "--input \(name): the graph has no input or declaration of that name (it has \(known))")
      }
      let texts = option[option.index(after: equals)...].split(
        separator: ",", omittingEmptySubsequences: false)
      var values: [Double] = []
      for text in texts {
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)) else {
          fail("--input \(name): '\(text)' is not a number")
        }
        values.append(value)
      }
      guard values.count == type.elementCount else {
        fail("--input \(name): \(type) needs \(type.elementCount) values, got \(values.count)")
      }
      let dtype: DType = type.dtype == .i32 ? .i32 : .f32
      if dtype == .i32,
        let bad = values.first(where: { $0 != $0.rounded() || abs($0) > 2_147_483_647 })
      {
        fail("--input \(name): \(formatNumber(bad)) is not an i32")
      }
      bindings[name] = DenseTensor(dtype: dtype, shape: type.shape, scalars: values)
    }
    return bindings
  }
}

/// A JSON number (JSON has no inf or nan; they print as strings).
func jsonNumber(_ value: Double) -> String {
  value.isFinite ? formatNumber(value) : "\"\(formatNumber(value))\""
}
