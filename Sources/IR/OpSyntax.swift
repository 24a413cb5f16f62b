/// An attribute value in the text form: `{transpose_b}`, `{axis=1}`, `{theta=10000.0}`,
/// `{axes=[0,1]}`, `{init=zeros}`.
public enum AttributeValue: Hashable, Sendable {
  case flag
  case integer(Int)
  case number(Double)
  case integers([Int])
  case word(String)
  /// A quoted string: `{expr="add($0, $1)"}`.
  case text(String)

  /// The printed form of the value (nothing for a flag).
  var text: String {
    switch self {
    case .flag: ""
    case .integer(let value): String(value)
    case .number(let value): formatNumber(value)
    case .integers(let values): "[" + values.map(String.init).joined(separator: ",") + "]"
    case .word(let word): word
    case .text(let text):
      "\""
        + text.flatMap { character -> [Character] in
          switch character {
          case "\\", "\"": ["\\", character]
          case "\n": ["\\", "n"]
          default: [character]
          }
        } + "\""
    }
  }
}

/// Prints a number so that `Double(text)` gives it back exactly and it reads as a float (`2.0`).
public func formatNumber(_ value: Double) -> String {
  if value.isNaN { return "nan" }
  if value.isInfinite { return value < 0 ? "-inf" : "inf" }
  return value.description
}

/// An attribute list failed to describe an op: names the op and the attribute.
public struct AttributeError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}

extension Op {
  /// Every mnemonic the text format accepts, in the op table's order (for error messages and
  /// coverage tests).
  public static let allMnemonics: [String] = OpKind.allCases.flatMap(\.mnemonics)

  /// The op's name in the text format, from its row in the op table.
  public var mnemonic: String {
    let prefix = OpKind.mnemonicPrefixes[kind.rawValue]
    guard let member else { return prefix }
    return prefix.isEmpty ? member : prefix + member
  }

  /// Whether the op is one of the fused ops the `fuse` pass makes.
  public var isFused: Bool { OpKind.fusedKinds[kind.rawValue] }

  /// Whether the op is a fused `elementwise` chain.
  public var isElementwise: Bool {
    if case .elementwise = self { true } else { false }
  }

  /// The attributes the text shows, in order, leaving out defaults and what the result type
  /// already says (the target shape of `reshape`/`broadcast`/`dynamic_slice`, the dtype of
  /// `cast`, the type of `iota`/`fill`).
  public var attributes: [(key: String, value: AttributeValue)] {
    switch self {
    case .unary, .binary, .compare, .select, .reshape, .broadcast, .cast, .dynamicSlice,
      .dynamicUpdateSlice, .swiglu, .swigluGrad, .crossEntropy, .crossEntropyGrad:
      return []
    case .rmsNorm(let epsilon), .rmsNormGrad(let epsilon):
      return [("eps", .number(epsilon))]
    case .loraLinear(let scale, let transposeW):
      return [("scale", .number(scale))] + (transposeW ? [("transpose_w", .flag)] : [])
    case .attention(let scale), .attentionGrad(let scale):
      return [("scale", .number(scale))]
    case .elementwise(let expression):
      return [("expr", .text(expression.description))]
    case .reduce(_, let axes, let keepDims):
      return [("axes", .integers(axes))] + (keepDims ? [("keep_dims", .flag)] : [])
    case .matmul(let transposeA, let transposeB):
      return (transposeA ? [("transpose_a", .flag)] : [])
        + (transposeB ? [("transpose_b", .flag)] : [])
    case .transpose(let permutation):
      return [("perm", .integers(permutation))]
    case .slice(let start, let end):
      return [("start", .integers(start)), ("end", .integers(end))]
    case .concat(let axis), .gather(let axis), .scatterAdd(let axis), .iota(let axis, _),
      .softmax(let axis), .logSoftmax(let axis):
      return [("axis", .integer(axis))]
    case .fill(let value, _):
      return [("value", .number(value))]
    case .rope(let theta, let interleaved):
      return [("theta", .number(theta))] + (interleaved ? [("interleaved", .flag)] : [])
    }
  }

  /// Builds an op from its mnemonic, its attributes and its annotated result types.
  ///
  /// - Throws: `AttributeError` for an unknown mnemonic, an unknown, missing, repeated or
  ///   ill-typed attribute, or result types the op cannot have.
  public static func make(
    mnemonic: String, attributes: [(key: String, value: AttributeValue)],
    resultTypes: [TensorType]
  ) throws(AttributeError) -> Op {
    guard let (kind, member) = OpKind.byMnemonic[mnemonic] else {
      throw AttributeError(message: "unknown op '\(mnemonic)'")
    }
    var reader = AttributeReader(mnemonic: mnemonic, attributes: attributes)
    let values = try reader.read(kind.facts.attributes)
    let op = try make(
      kind, member: member, mnemonic: mnemonic, attributes: values, resultTypes: resultTypes)
    try reader.finish()
    return op
  }
}

/// Reads attributes by key, remembering which were used, so leftovers are reported.
struct AttributeReader {
  let mnemonic: String
  var remaining: [(key: String, value: AttributeValue)]
  var known: [String] = []

  init(mnemonic: String, attributes: [(key: String, value: AttributeValue)]) {
    self.mnemonic = mnemonic
    self.remaining = attributes
  }

  private mutating func take(_ key: String) throws(AttributeError) -> AttributeValue? {
    known.append(key)
    let matches = remaining.indices.filter { remaining[$0].key == key }
    if matches.count > 1 {
      throw AttributeError(message: "\(mnemonic): repeated attribute '\(key)'")
    }
    guard let index = matches.first else { return nil }
    return remaining.remove(at: index).value
  }

  private func wrong(_ key: String, _ expected: String) -> AttributeError {
    AttributeError(message: "\(mnemonic): attribute '\(key)' must be \(expected)")
  }

  private func missing(_ key: String) -> AttributeError {
    AttributeError(message: "\(mnemonic): missing attribute '\(key)'")
  }

  mutating func flag(_ key: String) throws(AttributeError) -> Bool {
    switch try take(key) {
    case nil: return false
    case .flag: return true
    default: throw wrong(key, "a flag without a value")
    }
  }

  mutating func integer(_ key: String) throws(AttributeError) -> Int {
    switch try take(key) {
    case nil: throw missing(key)
    case .integer(let value): return value
    default: throw wrong(key, "an integer")
    }
  }

  mutating func integers(_ key: String) throws(AttributeError) -> [Int] {
    switch try take(key) {
    case nil: throw missing(key)
    case .integers(let values): return values
    default: throw wrong(key, "a list of integers like [0,1]")
    }
  }

  mutating func number(_ key: String) throws(AttributeError) -> Double {
    switch try take(key) {
    case nil: throw missing(key)
    case .number(let value): return value
    case .integer(let value): return Double(value)
    default: throw wrong(key, "a number")
    }
  }

  mutating func optionalNumber(_ key: String) throws(AttributeError) -> Double? {
    switch try take(key) {
    case nil: return nil
    case .number(let value): return value
    case .integer(let value): return Double(value)
    default: throw wrong(key, "a number")
    }
  }

  mutating func word(_ key: String) throws(AttributeError) -> String? {
    switch try take(key) {
    case nil: return nil
    case .word(let word): return word
    default: throw wrong(key, "a word")
    }
  }

  mutating func text(_ key: String) throws(AttributeError) -> String {
    switch try take(key) {
    case nil: throw missing(key)
    case .text(let text): return text
    default: throw wrong(key, "a quoted string")
    }
  }

  mutating func optionalInteger(_ key: String) throws(AttributeError) -> Int? {
    switch try take(key) {
    case nil: return nil
    case .integer(let value): return value
    default: throw wrong(key, "an integer")
    }
  }

  /// Reads the attributes a row of the op table declares, in its order: a flag is kept only when
  /// present, a number given as an integer becomes a number.
  mutating func read(_ specs: [AttributeSpec]) throws(AttributeError) -> OpAttributes {
    var values = OpAttributes(mnemonic: mnemonic, values: [:])
    for spec in specs {
      let key = spec.name
      switch spec.kind {
      case .flag: if try flag(key) { values.values[key] = .flag }
      case .integer: values.values[key] = .integer(try integer(key))
      case .integers: values.values[key] = .integers(try integers(key))
      case .number: values.values[key] = .number(try number(key))
      case .text: values.values[key] = .text(try text(key))
      }
    }
    return values
  }

  /// Fails when an attribute was not consumed, listing the ones the op accepts.
  func finish() throws(AttributeError) {
    guard let extra = remaining.first else { return }
    let accepted = known.isEmpty ? "none" : known.joined(separator: ", ")
    throw AttributeError(
      message: "\(mnemonic): unknown attribute '\(extra.key)' (accepted: \(accepted))")
  }
}
