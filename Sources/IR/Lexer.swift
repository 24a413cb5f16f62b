/// A token of the IR text format.
struct Token: Sendable {
  enum Kind: Equatable, Sendable {
    case newline, end
    /// `%name` or `%12`; the text excludes the sigil.
    case local
    /// `@name`; the text excludes the sigil.
    case global
    /// An identifier or keyword: `func`, `matmul`, `f32`, `transpose_b`, `inf`.
    case word
    case integer, number
    /// A string literal; the text is the decoded contents.
    case string
    case leftParen, rightParen, leftBrace, rightBrace, leftBracket, rightBracket
    case comma, colon, equals, arrow
  }

  var kind: Kind
  var text: String
  var line: Int
  var column: Int
}

/// Splits IR text into tokens; `#` comments are skipped, newlines are tokens.
struct Lexer {
  private let bytes: [UInt8]
  private var position = 0
  private var line = 1
  private var lineStart = 0

  init(_ text: String) { bytes = Array(text.utf8) }

  /// The next token, or a parse error for a character no token starts with.
  mutating func next() throws(ParseError) -> Token {
    // Skip blanks and comments.
    while position < bytes.count {
      let byte = bytes[position]
      if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r") {
        position += 1
      } else if byte == UInt8(ascii: "#") {
        while position < bytes.count && bytes[position] != UInt8(ascii: "\n") { position += 1 }
      } else {
        break
      }
    }
    let start = position
    let column = start - lineStart + 1
    func token(_ kind: Token.Kind, _ text: String = "") -> Token {
      Token(kind: kind, text: text, line: line, column: column)
    }
    guard position < bytes.count else { return token(.end) }
    let byte = bytes[position]
    position += 1
    switch byte {
    case UInt8(ascii: "\n"):
      let result = token(.newline)
      line += 1
      lineStart = position
      return result
    case UInt8(ascii: "("): return token(.leftParen)
    case UInt8(ascii: ")"): return token(.rightParen)
    case UInt8(ascii: "{"): return token(.leftBrace)
    case UInt8(ascii: "}"): return token(.rightBrace)
    case UInt8(ascii: "["): return token(.leftBracket)
    case UInt8(ascii: "]"): return token(.rightBracket)
    case UInt8(ascii: ","): return token(.comma)
    case UInt8(ascii: ":"): return token(.colon)
    case UInt8(ascii: "="): return token(.equals)
    case UInt8(ascii: "%"), UInt8(ascii: "@"):
      let nameStart = position
      while position < bytes.count
        && (Names.isNameByte(bytes[position]) || bytes[position] == UInt8(ascii: "."))
      {
        position += 1
      }
      if position == nameStart {
        throw ParseError(
          line: line, column: column,
          message: "expected a name after '\(Character(Unicode.Scalar(byte)))'")
      }
      return token(byte == UInt8(ascii: "%") ? .local : .global, text(nameStart, position))
    case UInt8(ascii: "\""):
      return token(.string, try string(column: column))
    case UInt8(ascii: "-") where position < bytes.count && bytes[position] == UInt8(ascii: ">"):
      position += 1
      return token(.arrow)
    case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"):
      position = start
      return try number(column: column)
    default:
      if Names.isNameByte(byte) {
        while position < bytes.count
          && (Names.isNameByte(bytes[position]) || bytes[position] == UInt8(ascii: "."))
        {
          position += 1
        }
        return token(.word, text(start, position))
      }
      let shown =
        byte < 0x80 ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
      throw ParseError(line: line, column: column, message: "unexpected character \(shown)")
    }
  }

  private func text(_ start: Int, _ end: Int) -> String {
    String(decoding: bytes[start..<end], as: UTF8.self)
  }

  /// Reads `[-+]digits[.digits][e[-+]digits]`, or a signed `inf`/`nan`.
  private mutating func number(column: Int) throws(ParseError) -> Token {
    let start = position
    var isFloat = false
    if bytes[position] == UInt8(ascii: "-") || bytes[position] == UInt8(ascii: "+") {
      position += 1
    }
    func digits() -> Int {
      let from = position
      while position < bytes.count
        && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position])
      {
        position += 1
      }
      return position - from
    }
    if position < bytes.count && Names.isNameByte(bytes[position])
      && !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position])
    {
      // A signed word: only inf and nan are numbers.
      let wordStart = position
      while position < bytes.count && Names.isNameByte(bytes[position]) { position += 1 }
      let word = text(wordStart, position)
      guard word == "inf" || word == "nan" else {
        throw ParseError(
          line: line, column: column, message: "expected a number, found '\(text(start, position))'"
        )
      }
      return Token(kind: .number, text: text(start, position), line: line, column: column)
    }
    if digits() == 0 {
      throw ParseError(line: line, column: column, message: "expected a number after the sign")
    }
    if position < bytes.count && bytes[position] == UInt8(ascii: ".") {
      isFloat = true
      position += 1
      _ = digits()
    }
    if position < bytes.count
      && (bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E"))
    {
      isFloat = true
      position += 1
      if position < bytes.count
        && (bytes[position] == UInt8(ascii: "-") || bytes[position] == UInt8(ascii: "+"))
      {
        position += 1
      }
      if digits() == 0 {
        throw ParseError(
          line: line, column: column,
          message: "expected digits in the exponent of '\(text(start, position))'")
      }
    }
    return Token(
      kind: isFloat ? .number : .integer, text: text(start, position), line: line, column: column)
  }

  /// Reads a string literal after its opening quote, decoding `\" \\ \n \t \u{hex}`.
  private mutating func string(column: Int) throws(ParseError) -> String {
    var contents: [UInt8] = []
    while position < bytes.count {
      let byte = bytes[position]
      position += 1
      switch byte {
      case UInt8(ascii: "\""):
        return String(decoding: contents, as: UTF8.self)
      case UInt8(ascii: "\n"):
        throw ParseError(line: line, column: column, message: "unterminated string literal")
      case UInt8(ascii: "\\"):
        guard position < bytes.count else { break }
        let escaped = bytes[position]
        position += 1
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): contents.append(escaped)
        case UInt8(ascii: "n"): contents.append(UInt8(ascii: "\n"))
        case UInt8(ascii: "t"): contents.append(UInt8(ascii: "\t"))
        case UInt8(ascii: "u"):
          guard position < bytes.count, bytes[position] == UInt8(ascii: "{") else {
            throw ParseError(
              line: line, column: column, message: "expected '{' after \\u in string literal")
          }
          position += 1
          let hexStart = position
          while position < bytes.count && bytes[position] != UInt8(ascii: "}")
            && position - hexStart < 8
          {
            position += 1
          }
          guard position < bytes.count, bytes[position] == UInt8(ascii: "}"),
            let code = UInt32(text(hexStart, position), radix: 16),
            let scalar = Unicode.Scalar(code)
          else {
            throw ParseError(
              line: line, column: column, message: "invalid \\u{...} escape in string literal")
          }
          position += 1
          contents.append(contentsOf: Array(String(Character(scalar)).utf8))
        default:
          throw ParseError(
            line: line, column: column,
            message: "unknown escape '\\\(Character(Unicode.Scalar(escaped)))' in string literal")
        }
      default:
        contents.append(byte)
      }
    }
    throw ParseError(line: line, column: column, message: "unterminated string literal")
  }
}
