import IR

/// A graph-to-graph rewrite with options parsed from pipeline text (`lora{rank=8,alpha=16}`).
public protocol Pass: Sendable {
  /// The pass's name in pipeline text.
  static var mnemonic: String { get }
  /// The options it accepts, for error messages and `--help`.
  static var optionNames: [String] { get }
  /// Reads options; unknown or ill-typed ones are errors naming the pass and the option.
  init(options: PassOptions) throws(PassError)
  /// Returns the rewritten graph.
  func run(_ graph: Graph) throws(PassError) -> Graph
}

/// A pass's `key=value` options as written, read by typed accessors that track what was used.
public struct PassOptions: Sendable {
  public let pass: String
  public private(set) var entries: [(key: String, value: String)]

  public init(pass: String, entries: [(key: String, value: String)] = []) {
    self.pass = pass
    self.entries = entries
  }

  /// The raw text of an option, if given.
  public func text(_ key: String) -> String? { entries.last { $0.key == key }?.value }

  private func wrong(_ key: String, _ value: String, _ expected: String) -> PassError {
    PassError(message: "\(pass): option '\(key)' must be \(expected), got '\(value)'")
  }

  /// An integer option, checked against a range.
  public func integer(_ key: String, default value: Int, in range: ClosedRange<Int>)
    throws(PassError) -> Int
  {
    guard let text = text(key) else { return value }
    guard let parsed = Int(text), range.contains(parsed) else {
      throw wrong(key, text, "an integer in \(range.lowerBound)...\(range.upperBound)")
    }
    return parsed
  }

  /// A finite number option.
  public func number(_ key: String, default value: Double) throws(PassError) -> Double {
    guard let text = text(key) else { return value }
    guard let parsed = Double(text), parsed.isFinite else {
      throw wrong(key, text, "a finite number")
    }
    return parsed
  }

  /// A `true`/`false` option.
  public func flag(_ key: String, default value: Bool) throws(PassError) -> Bool {
    guard let text = text(key) else { return value }
    switch text {
    case "true": return true
    case "false": return false
    default: throw wrong(key, text, "true or false")
    }
  }

  /// A name glob option.
  public func selector(_ key: String, default value: String) throws(PassError) -> NameSelector {
    try NameSelector(parsing: text(key) ?? value)
  }

  /// Fails on options the pass does not accept.
  public func check(accepted: [String]) throws(PassError) {
    for entry in entries where !accepted.contains(entry.key) {
      let list = accepted.isEmpty ? "none" : accepted.joined(separator: ", ")
      throw PassError(message: "\(pass): unknown option '\(entry.key)' (accepted: \(list))")
    }
  }
}
