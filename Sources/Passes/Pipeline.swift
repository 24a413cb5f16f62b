import Dispatch
import IR

/// A list of passes written as text, `lora{rank=8,alpha=16,targets=layers.*.attn.{q,k,v,o}},freeze`,
/// run in order with the verifier after each.
public struct Pipeline: Sendable, CustomStringConvertible {
  public let passes: [any Pass]
  private let entries: [(name: String, options: [(key: String, value: String)])]

  /// Parses pipeline text; unknown passes and options are errors that list what is accepted.
  public init(parsing text: String) throws(PassError) {
    var parsed: [(name: String, options: [(key: String, value: String)])] = []
    var passes: [any Pass] = []
    for item in try Pipeline.split(text, separator: ",", what: "pipeline") {
      let (name, optionText) = try Pipeline.nameAndOptions(item)
      guard let type = passRegistry.first(where: { $0.mnemonic == name }) else {
        let known = passRegistry.map { $0.mnemonic }.joined(separator: ", ")
        throw PassError(message: "unknown pass '\(name)' (known passes: \(known))")
      }
      var options: [(key: String, value: String)] = []
      if let optionText {
        for option in try Pipeline.split(optionText, separator: ",", what: name) {
          guard let equals = option.firstIndex(of: "="), equals != option.startIndex else {
            throw PassError(message: "\(name): expected key=value, got '\(option)'")
          }
          options.append(
            (String(option[..<equals]), String(option[option.index(after: equals)...])))
        }
      }
      let passOptions = PassOptions(pass: name, entries: options)
      try passOptions.check(accepted: type.optionNames)
      passes.append(try type.init(options: passOptions))
      parsed.append((name, options))
    }
    self.passes = passes
    self.entries = parsed
  }

  /// The pipeline as text (it parses back to the same pipeline).
  public var description: String {
    entries.map { entry in
      entry.options.isEmpty
        ? entry.name
        : entry.name + "{" + entry.options.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
          + "}"
    }.joined(separator: ",")
  }

  /// What to print while running.
  public enum PrintAfter: Sendable, Equatable {
    case none, all
    case passes(Set<String>)
  }

  /// Runs every pass in order.
  ///
  /// After each pass: the verifier (when `verify`), a timing line
  /// `# ----- after lora: 0.8 ms, 312 -> 344 instructions`, and the IR when `printAfter` names the
  /// pass; both go to `log`.
  /// - Throws: the first pass error, or a verifier failure naming the pass with the IR it produced.
  public func run(
    _ graph: Graph, verify: Bool = true, printAfter: PrintAfter = .none,
    log: (String) -> Void = { _ in }
  ) throws(PassError) -> Graph {
    var current = graph
    for (pass, entry) in zip(passes, entries) {
      let start = DispatchTime.now().uptimeNanoseconds
      let before = current.body.count
      current = try pass.run(current).compacted()
      let milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      if verify {
        do {
          try Verifier.verify(current)
        } catch {
          throw PassError(
            message:
              "after \(entry.name): the graph does not verify: \(error.message)\n\(Printer().print(current))"
          )
        }
      }
      let shouldPrint: Bool =
        switch printAfter {
        case .none: false
        case .all: true
        case .passes(let names): names.contains(entry.name)
        }
      let timing = (milliseconds * 10).rounded() / 10
      log(
        "# ----- after \(entry.name): \(timing) ms, \(before) -> \(current.body.count) instructions"
      )
      if shouldPrint { log(Printer().print(current)) }
    }
    return current
  }

  /// Splits at `separator` outside braces.
  private static func split(_ text: String, separator: Character, what: String) throws(PassError)
    -> [Substring]
  {
    var parts: [Substring] = []
    var depth = 0
    var start = text.startIndex
    for index in text.indices {
      switch text[index] {
      case "{": depth += 1
      case "}":
        depth -= 1
        if depth < 0 { throw PassError(message: "\(what): unbalanced '}' in '\(text)'") }
      case separator where depth == 0:
        parts.append(text[start..<index])
        start = text.index(after: index)
      default: break
      }
    }
    if depth != 0 { throw PassError(message: "\(what): unbalanced '{' in '\(text)'") }
    parts.append(text[start...])
    for part in parts where part.trimmingWhitespace().isEmpty {
      throw PassError(message: "\(what): empty entry in '\(text)'")
    }
    return parts.map { $0.trimmingWhitespace() }
  }

  /// `name{options}` into the name and the text between the outer braces.
  private static func nameAndOptions(_ item: Substring) throws(PassError) -> (String, String?) {
    guard let open = item.firstIndex(of: "{") else { return (String(item), nil) }
    guard item.last == "}" else {
      throw PassError(message: "expected '}' at the end of '\(item)'")
    }
    let name = String(item[..<open])
    let options = item[item.index(after: open)..<item.index(before: item.endIndex)]
    return (name, String(options))
  }
}

extension Substring {
  fileprivate func trimmingWhitespace() -> Substring {
    var result = self
    while result.first?.isWhitespace == true { result.removeFirst() }
    while result.last?.isWhitespace == true { result.removeLast() }
    return result
  }
}
