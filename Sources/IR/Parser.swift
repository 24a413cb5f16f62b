/// A syntax or type error in IR text, at a 1-based line and column.
public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
  public var line: Int
  public var column: Int
  public var message: String

  public init(line: Int, column: Int, message: String) {
    self.line = line
    self.column = column
    self.message = message
  }

  /// `LINE:COL: message`.
  public var description: String { "\(line):\(column): \(message)" }
}

/// Parses the text the `Printer` writes (and hand-written text in the same syntax) into a graph.
///
/// The parser resolves names, applies every op's type rule and checks each result type against its
/// annotation, so a graph it returns is well-typed. Values are numbered canonically (inputs,
/// declarations, results), so `parse(print(g)) == g.compacted()`.
public struct Parser {
  private var lexer: Lexer
  private var token: Token
  private var graph = Graph(name: "")
  private var scope: [String: Value] = [:]

  /// Parses a whole function.
  ///
  /// - Throws: `ParseError` with the line, column and what was expected.
  public static func parse(_ text: String) throws(ParseError) -> Graph {
    var parser = try Parser(text)
    return try parser.parseGraph()
  }

  private init(_ text: String) throws(ParseError) {
    lexer = Lexer(text)
    token = Token(kind: .end, text: "", line: 1, column: 1)
    try advance()
  }

  // MARK: - Tokens

  private mutating func advance() throws(ParseError) {
    token = try lexer.next()
  }

  private func error(_ message: String, at token: Token? = nil) -> ParseError {
    let at = token ?? self.token
    return ParseError(line: at.line, column: at.column, message: message)
  }

  private func describe(_ token: Token) -> String {
    switch token.kind {
    case .newline: "end of line"
    case .end: "end of input"
    case .local: "'%\(token.text)'"
    case .global: "'@\(token.text)'"
    case .string: "a string literal"
    case .word, .integer, .number: "'\(token.text)'"
    case .leftParen: "'('"
    case .rightParen: "')'"
    case .leftBrace: "'{'"
    case .rightBrace: "'}'"
    case .leftBracket: "'['"
    case .rightBracket: "']'"
    case .comma: "','"
    case .colon: "':'"
    case .equals: "'='"
    case .arrow: "'->'"
    }
  }

  private func expected(_ what: String) -> ParseError {
    error("expected \(what), found \(describe(token))")
  }

  private mutating func expect(_ kind: Token.Kind, _ what: String) throws(ParseError) -> Token {
    guard token.kind == kind else { throw expected(what) }
    let current = token
    try advance()
    return current
  }

  private mutating func accept(_ kind: Token.Kind) throws(ParseError) -> Bool {
    guard token.kind == kind else { return false }
    try advance()
    return true
  }

  private mutating func skipNewlines() throws(ParseError) {
    while token.kind == .newline { try advance() }
  }

  private mutating func endOfLine() throws(ParseError) {
    if token.kind != .newline && token.kind != .end { throw expected("end of line") }
    try skipNewlines()
  }

  // MARK: - Grammar

  private mutating func parseGraph() throws(ParseError) -> Graph {
    try skipNewlines()
    let keyword = try expect(.word, "'func'")
    guard keyword.text == "func" else {
      throw error("expected 'func', found '\(keyword.text)'", at: keyword)
    }
    let nameToken = try expect(.global, "a function name like @train")
    guard Names.isValid(nameToken.text) else {
      throw error("invalid function name '@\(nameToken.text)'", at: nameToken)
    }
    graph.name = nameToken.text
    _ = try expect(.leftParen, "'('")
    if token.kind != .rightParen {
      repeat {
        let argument = try expect(.local, "an input like %x: f32[4,16]")
        guard Names.isValidInput(argument.text) else {
          throw error(
            "invalid input name '%\(argument.text)': inputs need a name starting with a letter",
            at: argument)
        }
        _ = try expect(.colon, "':' after the input name")
        let type = try parseType()
        let value = try define("%" + argument.text, type, at: argument)
        graph.inputs.append(GraphInput(name: argument.text, value: value))
      } while try accept(.comma)
    }
    _ = try expect(.rightParen, "',' or ')' after an input")
    _ = try expect(.arrow, "'->' and the result types")
    _ = try expect(.leftParen, "'(' before the result types")
    var resultTypes: [(TensorType, Token)] = []
    if token.kind != .rightParen {
      repeat {
        let at = token
        resultTypes.append((try parseType(), at))
      } while try accept(.comma)
    }
    _ = try expect(.rightParen, "',' or ')' after a result type")
    _ = try expect(.leftBrace, "'{' to open the function body")
    try endOfLine()

    while true {
      guard token.kind == .word || token.kind == .local else {
        throw expected("a declaration, an instruction or 'return'")
      }
      if token.kind == .word {
        switch token.text {
        case "return":
          try parseReturn(resultTypes)
          return graph
        case "param", "const", "state":
          try parseDeclaration()
          continue
        default:
          throw error(
            "expected a declaration (param, const, state), an instruction or 'return', found '\(token.text)'"
          )
        }
      }
      try parseInstruction()
    }
  }

  private mutating func parseReturn(_ resultTypes: [(TensorType, Token)]) throws(ParseError) {
    let keyword = token
    try advance()
    var outputs: [(Value, Token)] = []
    if token.kind != .newline && token.kind != .end {
      repeat {
        let at = token
        guard token.kind == .local || token.kind == .global else {
          throw expected("a value to return")
        }
        outputs.append((try lookup(), at))
      } while try accept(.comma)
    }
    guard outputs.count == resultTypes.count else {
      throw error(
        "return has \(outputs.count) value\(outputs.count == 1 ? "" : "s") but the signature declares \(resultTypes.count)",
        at: keyword)
    }
    for ((value, at), (type, _)) in zip(outputs, resultTypes) where graph.type(of: value) != type {
      throw error(
        "returned value has type \(graph.type(of: value)) but the signature declares \(type)",
        at: at)
    }
    graph.outputs = outputs.map(\.0)
    try endOfLine()
    _ = try expect(.rightBrace, "'}' after return")
    try skipNewlines()
    guard token.kind == .end else { throw expected("end of input after '}'") }
  }

  private mutating func parseDeclaration() throws(ParseError) {
    let keyword = token
    try advance()
    let kind: Declaration.Kind =
      switch keyword.text {
      case "param": .parameter
      case "const": .constant
      default: .state
      }
    let nameToken = try expect(.global, "a declaration name like @fc.weight")
    guard Names.isValid(nameToken.text) else {
      throw error("invalid declaration name '@\(nameToken.text)'", at: nameToken)
    }
    _ = try expect(.colon, "':' after the declaration name")
    let typeToken = token
    let type = try parseType()
    if kind != .constant && !type.dtype.isCompute {
      throw error(
        "\(keyword.text) @\(nameToken.text) cannot have storage type \(type.dtype.rawValue); only constants can",
        at: typeToken)
    }
    var initializer: Initializer?
    var seed: UInt64?
    if token.kind == .leftBrace {
      let at = token
      let attributes = try parseAttributes()
      if kind == .constant && !attributes.isEmpty {
        throw error("a constant takes no attributes; its data is bound by name", at: at)
      }
      do {
        (initializer, seed) = try Declaration.initializer(from: attributes)
      } catch {
        throw self.error(error.message, at: at)
      }
    }
    let value = try define("@" + nameToken.text, type, at: nameToken)
    graph.declarations.append(
      Declaration(
        kind: kind, name: nameToken.text, value: value, initializer: initializer, seed: seed))
    try endOfLine()
  }

  private mutating func parseInstruction() throws(ParseError) {
    var resultTokens: [Token] = []
    repeat {
      resultTokens.append(try expect(.local, "a result like %3"))
    } while try accept(.comma)
    _ = try expect(.equals, "'=' after the results")
    let opToken = try expect(.word, "an op name")
    var operands: [Operand] = []
    var operandTypes: [OperandType] = []
    if token.kind != .leftBrace && token.kind != .colon {
      repeat {
        switch token.kind {
        case .local, .global:
          let value = try lookup()
          operands.append(.value(value))
          operandTypes.append(.tensor(graph.type(of: value)))
        case .integer, .number:
          operands.append(.scalar(try number(token)))
          operandTypes.append(.scalar)
          try advance()
        case .word where token.text == "inf" || token.text == "nan":
          operands.append(.scalar(try number(token)))
          operandTypes.append(.scalar)
          try advance()
        default:
          throw expected("an operand (%value, @name or a number)")
        }
      } while try accept(.comma)
    }
    var attributes: [(key: String, value: AttributeValue)] = []
    if token.kind == .leftBrace { attributes = try parseAttributes() }
    let colon = token
    guard try accept(.colon) else {
      throw expected(
        operands.isEmpty
          ? "operands, attributes or ':'" : "',', attributes or ':' and the result type")
    }
    var annotated: [(TensorType, Token)] = []
    repeat {
      let at = token
      annotated.append((try parseType(), at))
    } while try accept(.comma)
    _ = colon

    let op: Op
    do {
      op = try Op.make(
        mnemonic: opToken.text, attributes: attributes, resultTypes: annotated.map(\.0))
    } catch {
      var message = error.message
      if message.hasPrefix("unknown op"), let guess = closest(opToken.text, in: Op.allMnemonics) {
        message += " (did you mean '\(guess)'?)"
      }
      throw self.error(message, at: opToken)
    }
    let types: [TensorType]
    do {
      types = try op.resultTypes(operandTypes)
    } catch {
      throw self.error(error.description, at: opToken)
    }
    guard types.count == resultTokens.count else {
      throw error(
        "\(op.mnemonic) has \(types.count) result\(types.count == 1 ? "" : "s"), but \(resultTokens.count) are named",
        at: resultTokens[0])
    }
    guard annotated.count == types.count else {
      throw error(
        "\(op.mnemonic): expected \(types.count) result type\(types.count == 1 ? "" : "s"), got \(annotated.count)",
        at: annotated[0].1)
    }
    for ((given, at), computed) in zip(annotated, types) where given != computed {
      throw error(
        "\(op.mnemonic): result type is \(computed), but the annotation says \(given)", at: at)
    }
    var name: String?
    if token.kind == .string {
      guard Names.isValid(token.text) else {
        throw error(
          "invalid value name \"\(token.text)\": expected a dotted name like \"layers.0.attn.q\"")
      }
      name = token.text
      try advance()
    }
    var results: [Value] = []
    for (resultToken, type) in zip(resultTokens, types) {
      results.append(try define("%" + resultToken.text, type, at: resultToken))
    }
    graph.body.append(Instruction(results: results, op: op, operands: operands, name: name))
    try endOfLine()
  }

  /// `{key, key=value, ...}`.
  private mutating func parseAttributes() throws(ParseError) -> [(
    key: String, value: AttributeValue
  )] {
    _ = try expect(.leftBrace, "'{'")
    var attributes: [(key: String, value: AttributeValue)] = []
    if token.kind == .rightBrace {
      try advance()
      return attributes
    }
    repeat {
      let key = try expect(.word, "an attribute name")
      var value = AttributeValue.flag
      if try accept(.equals) {
        switch token.kind {
        case .integer:
          value = .integer(try integer(token))
          try advance()
        case .number:
          value = .number(try number(token))
          try advance()
        case .word:
          value =
            token.text == "inf" || token.text == "nan"
            ? .number(try number(token)) : .word(token.text)
          try advance()
        case .leftBracket:
          try advance()
          var values: [Int] = []
          if token.kind != .rightBracket {
            repeat {
              guard token.kind == .integer else { throw expected("an integer") }
              values.append(try integer(token))
              try advance()
            } while try accept(.comma)
          }
          _ = try expect(.rightBracket, "',' or ']'")
          value = .integers(values)
        case .string:
          value = .text(token.text)
          try advance()
        default:
          throw expected("an attribute value")
        }
      }
      attributes.append((key.text, value))
    } while try accept(.comma)
    _ = try expect(.rightBrace, "',' or '}' after an attribute")
    return attributes
  }

  /// `f32[4,16]`.
  private mutating func parseType() throws(ParseError) -> TensorType {
    let dtypeToken = try expect(.word, "a type like f32[4,16]")
    guard let dtype = DType(rawValue: dtypeToken.text) else {
      let known = DType.allCases.map(\.rawValue).joined(separator: ", ")
      throw error("unknown dtype '\(dtypeToken.text)' (expected one of \(known))", at: dtypeToken)
    }
    _ = try expect(.leftBracket, "'[' after the dtype")
    var shape: [Int] = []
    if token.kind != .rightBracket {
      repeat {
        guard token.kind == .integer else { throw expected("a dimension") }
        shape.append(try integer(token))
        try advance()
      } while try accept(.comma)
    }
    _ = try expect(.rightBracket, "',' or ']' in the shape")
    let type = TensorType(dtype, shape)
    if let problem = type.problem() { throw error(problem, at: dtypeToken) }
    return type
  }

  private func integer(_ token: Token) throws(ParseError) -> Int {
    guard let value = Int(token.text) else {
      throw error("integer '\(token.text)' is out of range", at: token)
    }
    return value
  }

  private func number(_ token: Token) throws(ParseError) -> Double {
    guard let value = Double(token.text) else {
      throw error("invalid number '\(token.text)'", at: token)
    }
    return value
  }

  // MARK: - Names

  private mutating func define(_ key: String, _ type: TensorType, at token: Token)
    throws(ParseError) -> Value
  {
    if scope[key] != nil {
      throw error("redefinition of '\(key)'", at: token)
    }
    let value = graph.newValue(type)
    scope[key] = value
    return value
  }

  /// Resolves the current `%name` or `@name` token and advances.
  private mutating func lookup() throws(ParseError) -> Value {
    let sigil = token.kind == .local ? "%" : "@"
    let key = sigil + token.text
    guard let value = scope[key] else {
      throw error("use of undefined value '\(key)'")
    }
    try advance()
    return value
  }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
func closest(_ word: String, in candidates: [String]) -> String? {
  func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    var previous = Array(0...b.count)
    for (i, x) in a.enumerated() {
      var current = [i + 1]
      for (j, y) in b.enumerated() {
        current.append(
          Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
      }
      previous = current
    }
    return previous[b.count]
  }
  let target = Array(word.utf8)
  let scored = candidates.map { ($0, distance(target, Array($0.utf8))) }
  guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= 2 else { return nil }
  return best.0
}
