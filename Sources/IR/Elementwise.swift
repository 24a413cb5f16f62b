/// The body of a fused `elementwise` op: a tree of unary and binary functions over its operands
/// (`$0`, `$1`, ...) and number literals, computed per element.
///
/// Its text form is the tree written as calls, `add(mul($0, 2.0), neg($1))`; it is what the
/// printer shows in the op's `expr` attribute and what `ElementwiseExpression(parsing:)` reads.
/// Each node rounds to `f32` as the primitive op it replaces does, so a fused chain computes what
/// the chain computed, value for value.
public indirect enum ElementwiseExpression: Hashable, Sendable, CustomStringConvertible {
  /// Operand `index` of the instruction.
  case operand(Int)
  /// A number literal.
  case literal(Double)
  case unary(UnaryOp, ElementwiseExpression)
  case binary(BinaryOp, ElementwiseExpression, ElementwiseExpression)

  /// How many operands the expression reads: one more than the largest `$i`.
  public var operandCount: Int {
    switch self {
    case .operand(let index): index + 1
    case .literal: 0
    case .unary(_, let x): x.operandCount
    case .binary(_, let x, let y): Swift.max(x.operandCount, y.operandCount)
    }
  }

  /// Function nodes in the tree (the primitive ops it stands for).
  public var nodeCount: Int {
    switch self {
    case .operand, .literal: 0
    case .unary(_, let x): 1 + x.nodeCount
    case .binary(_, let x, let y): 1 + x.nodeCount + y.nodeCount
    }
  }

  /// The largest number of intermediate values alive at once when evaluated left to right.
  public var depth: Int {
    switch self {
    case .operand, .literal: 1
    case .unary(_, let x): x.depth
    case .binary(_, let x, let y): Swift.max(x.depth, y.depth + 1)
    }
  }

  public var description: String {
    switch self {
    case .operand(let index): "$\(index)"
    case .literal(let value): formatNumber(value)
    case .unary(let function, let x): "\(function.rawValue)(\(x))"
    case .binary(let function, let x, let y): "\(function.rawValue)(\(x), \(y))"
    }
  }

  /// Evaluates the tree at one element, `round` applied after every function (and to literals).
  public func evaluate(
    _ operands: (Int) -> Double, unary: (UnaryOp, Double) -> Double,
    binary: (BinaryOp, Double, Double) -> Double, round: (Double) -> Double
  ) -> Double {
    switch self {
    case .operand(let index): return operands(index)
    case .literal(let value): return round(value)
    case .unary(let function, let x):
      return round(
        unary(function, x.evaluate(operands, unary: unary, binary: binary, round: round)))
    case .binary(let function, let x, let y):
      let a = x.evaluate(operands, unary: unary, binary: binary, round: round)
      let b = y.evaluate(operands, unary: unary, binary: binary, round: round)
      return round(binary(function, a, b))
    }
  }

  /// Reads the text form.
  ///
  /// - Throws: `AttributeError` naming the column and what was expected, for an unknown
  ///   function, a wrong argument count, a malformed operand or number, or trailing text.
  public init(parsing text: String) throws(AttributeError) {
    var reader = ExpressionReader(bytes: Array(text.utf8))
    let expression = try reader.expression(depth: 0)
    reader.skipSpaces()
    if reader.position < reader.bytes.count {
      throw reader.error("expected the end of the expression")
    }
    self = expression
  }
}

/// A recursive-descent reader of the call syntax.
private struct ExpressionReader {
  let bytes: [UInt8]
  var position = 0
  /// Deeper trees than this are refused rather than risk the stack.
  static let maximumDepth = 256

  func error(_ message: String) -> AttributeError {
    AttributeError(message: "elementwise: expr column \(position + 1): \(message)")
  }

  mutating func skipSpaces() {
    while position < bytes.count, bytes[position] == UInt8(ascii: " ") { position += 1 }
  }

  mutating func expect(_ byte: UInt8, _ what: String) throws(AttributeError) {
    skipSpaces()
    guard position < bytes.count, bytes[position] == byte else { throw error("expected \(what)") }
    position += 1
  }

  mutating func expression(depth: Int) throws(AttributeError) -> ElementwiseExpression {
    if depth > Self.maximumDepth { throw error("nested deeper than \(Self.maximumDepth)") }
    skipSpaces()
    guard position < bytes.count else { throw error("expected an operand, a number or a call") }
    let start = position
    if bytes[position] == UInt8(ascii: "$") {
      position += 1
      while position < bytes.count,
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position])
      {
        position += 1
      }
      let digits = String(decoding: bytes[(start + 1)..<position], as: UTF8.self)
      guard let index = Int(digits), digits.count <= 6 else {
        position = start
        throw error("expected an operand index after '$'")
      }
      return .operand(index)
    }
    let isWordByte = { (byte: UInt8) in
      (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || byte == UInt8(ascii: "_")
    }
    if isWordByte(bytes[position]) {
      while position < bytes.count, isWordByte(bytes[position]) { position += 1 }
      let word = String(decoding: bytes[start..<position], as: UTF8.self)
      if word == "inf" || word == "nan" { return .literal(word == "inf" ? .infinity : .nan) }
      if let function = UnaryOp(rawValue: word) {
        try expect(UInt8(ascii: "("), "'(' after \(word)")
        let x = try expression(depth: depth + 1)
        try expect(UInt8(ascii: ")"), "')' after the one argument of \(word)")
        return .unary(function, x)
      }
      if let function = BinaryOp(rawValue: word) {
        try expect(UInt8(ascii: "("), "'(' after \(word)")
        let x = try expression(depth: depth + 1)
        try expect(UInt8(ascii: ","), "',' between the two arguments of \(word)")
        let y = try expression(depth: depth + 1)
        try expect(UInt8(ascii: ")"), "')' after the two arguments of \(word)")
        return .binary(function, x, y)
      }
      position = start
      throw error("unknown function '\(word)' (unary or binary elementwise ops only)")
    }
    let numberBytes = Set("+-.0123456789eE".utf8)
    while position < bytes.count, numberBytes.contains(bytes[position]) { position += 1 }
    let text = String(decoding: bytes[start..<position], as: UTF8.self)
    if text == "-" || text == "+", position < bytes.count, bytes[position] == UInt8(ascii: "i") {
      // -inf / +inf
      let rest = bytes[position...].prefix(3)
      if Array(rest) == Array("inf".utf8) {
        position += 3
        return .literal(text == "-" ? -.infinity : .infinity)
      }
    }
    guard !text.isEmpty, let value = Double(text) else {
      position = start
      throw error("expected an operand like $0, a number or a call like add(...)")
    }
    return .literal(value)
  }
}
