/// A strict JSON parser for file headers and configs: unlike Foundation's, it rejects duplicate
/// keys and keeps object keys in order.
public indirect enum JSONValue: Hashable, Sendable {
  case object([(String, JSONValue)])
  case array([JSONValue])
  case string(String)
  case integer(Int)
  case number(Double)
  case bool(Bool)
  case null

  public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
    switch (lhs, rhs) {
    case (.object(let a), .object(let b)):
      a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    case (.array(let a), .array(let b)): a == b
    case (.string(let a), .string(let b)): a == b
    case (.integer(let a), .integer(let b)): a == b
    case (.number(let a), .number(let b)): a == b
    case (.bool(let a), .bool(let b)): a == b
    case (.null, .null): true
    default: false
    }
  }

  public func hash(into hasher: inout Hasher) {
    switch self {
    case .object(let pairs):
      for (key, value) in pairs {
        hasher.combine(key)
        hasher.combine(value)
      }
    case .array(let values): hasher.combine(values)
    case .string(let text): hasher.combine(text)
    case .integer(let value): hasher.combine(value)
    case .number(let value): hasher.combine(value)
    case .bool(let value): hasher.combine(value)
    case .null: hasher.combine(0)
    }
  }

  /// The value of `key` in an object.
  public subscript(key: String) -> JSONValue? {
    if case .object(let pairs) = self { return pairs.first { $0.0 == key }?.1 }
    return nil
  }

  /// A parse failure with the byte offset.
  public struct ParseError: Error, Hashable, Sendable {
    public var message: String
  }

  /// Parses one JSON value filling `bytes` (surrounding whitespace allowed).
  public static func parse(_ bytes: [UInt8]) throws(ParseError) -> JSONValue {
    var parser = Parser(bytes: bytes)
    parser.skipWhitespace()
    let value = try parser.value(depth: 0)
    parser.skipWhitespace()
    guard parser.position == bytes.count else {
      throw parser.fail("unexpected data after the value")
    }
    return value
  }

  /// Whether `text` is a number in JSON's grammar.
  static func isNumber(_ text: ArraySlice<UInt8>) -> Bool {
    var index = text.startIndex
    func digits(_ index: inout Int) -> Int {
      let first = index
      while index < text.endIndex, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(text[index]) {
        index += 1
      }
      return index - first
    }
    if index < text.endIndex, text[index] == UInt8(ascii: "-") { index += 1 }
    let leadingZero = index < text.endIndex && text[index] == UInt8(ascii: "0")
    let whole = digits(&index)
    guard whole > 0, !(leadingZero && whole > 1) else { return false }
    if index < text.endIndex, text[index] == UInt8(ascii: ".") {
      index += 1
      guard digits(&index) > 0 else { return false }
    }
    if index < text.endIndex, text[index] | 0x20 == UInt8(ascii: "e") {
      index += 1
      if index < text.endIndex, text[index] == UInt8(ascii: "+") || text[index] == UInt8(ascii: "-")
      {
        index += 1
      }
      guard digits(&index) > 0 else { return false }
    }
    return index == text.endIndex
  }

  private struct Parser {
    let bytes: [UInt8]
    var position = 0

    func fail(_ message: String) -> ParseError {
      ParseError(message: "offset \(position): \(message)")
    }

    mutating func skipWhitespace() {
      while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) {
        position += 1
      }
    }

    mutating func expect(_ byte: UInt8) throws(ParseError) {
      guard position < bytes.count, bytes[position] == byte else {
        throw fail("expected '\(Character(Unicode.Scalar(byte)))'")
      }
      position += 1
    }

    mutating func value(depth: Int) throws(ParseError) -> JSONValue {
      guard depth < 64 else { throw fail("nesting too deep") }
      guard position < bytes.count else { throw fail("unexpected end of input") }
      switch bytes[position] {
      case UInt8(ascii: "{"):
        position += 1
        var pairs: [(String, JSONValue)] = []
        var keys = Set<String>()
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
          position += 1
          return .object(pairs)
        }
        while true {
          skipWhitespace()
          let at = position
          let key = try string()
          guard keys.insert(key).inserted else {
            position = at
            throw fail("duplicate key \"\(key)\"")
          }
          skipWhitespace()
          try expect(UInt8(ascii: ":"))
          skipWhitespace()
          pairs.append((key, try value(depth: depth + 1)))
          skipWhitespace()
          if position < bytes.count, bytes[position] == UInt8(ascii: ",") {
            position += 1
            continue
          }
          try expect(UInt8(ascii: "}"))
          return .object(pairs)
        }
      case UInt8(ascii: "["):
        position += 1
        var values: [JSONValue] = []
        skipWhitespace()
        if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
          position += 1
          return .array(values)
        }
        while true {
          skipWhitespace()
          values.append(try value(depth: depth + 1))
          skipWhitespace()
          if position < bytes.count, bytes[position] == UInt8(ascii: ",") {
            position += 1
            continue
          }
          try expect(UInt8(ascii: "]"))
          return .array(values)
        }
      case UInt8(ascii: "\""):
        return .string(try string())
      case UInt8(ascii: "t"): return try literal("true", .bool(true))
      case UInt8(ascii: "f"): return try literal("false", .bool(false))
      case UInt8(ascii: "n"): return try literal("null", .null)
      default:
        return try number()
      }
    }

    mutating func literal(_ word: String, _ value: JSONValue) throws(ParseError) -> JSONValue {
      let text = Array(word.utf8)
      guard position + text.count <= bytes.count,
        Array(bytes[position..<(position + text.count)]) == text
      else { throw fail("invalid literal") }
      position += text.count
      return value
    }

    mutating func number() throws(ParseError) -> JSONValue {
      let start = position
      while position < bytes.count,
        "+-0123456789.eE".utf8.contains(bytes[position])
      {
        position += 1
      }
      // JSON's grammar, which Int and Double alone would widen (`+1`, `01`, `.5`, `1.`):
      // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
      let end = position
      position = start
      let grammatical = JSONValue.isNumber(bytes[start..<end])
      if grammatical {
        let text = String(decoding: bytes[start..<end], as: UTF8.self)
        if let integer = Int(text) {
          position = end
          return .integer(integer)
        }
        if let number = Double(text), number.isFinite {
          position = end
          return .number(number)
        }
      }
      throw fail(grammatical ? "number out of range" : "invalid value")
    }

    mutating func string() throws(ParseError) -> String {
      try expect(UInt8(ascii: "\""))
      var scalars = String.UnicodeScalarView()
      var raw: [UInt8] = []
      func flush() throws(ParseError) {
        guard !raw.isEmpty else { return }
        guard let text = String(validating: raw, as: UTF8.self) else {
          throw fail("invalid UTF-8 in a string")
        }
        scalars.append(contentsOf: text.unicodeScalars)
        raw.removeAll()
      }
      while position < bytes.count {
        let byte = bytes[position]
        position += 1
        switch byte {
        case UInt8(ascii: "\""):
          try flush()
          return String(scalars)
        case UInt8(ascii: "\\"):
          try flush()
          guard position < bytes.count else { throw fail("unterminated string") }
          let escaped = bytes[position]
          position += 1
          switch escaped {
          case UInt8(ascii: "\""): scalars.append("\"")
          case UInt8(ascii: "\\"): scalars.append("\\")
          case UInt8(ascii: "/"): scalars.append("/")
          case UInt8(ascii: "b"): scalars.append("\u{8}")
          case UInt8(ascii: "f"): scalars.append("\u{C}")
          case UInt8(ascii: "n"): scalars.append("\n")
          case UInt8(ascii: "r"): scalars.append("\r")
          case UInt8(ascii: "t"): scalars.append("\t")
          case UInt8(ascii: "u"):
            var code = try hex4()
            if (0xD800..<0xDC00).contains(code) {
              // A surrogate pair.
              guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                bytes[position + 1] == UInt8(ascii: "u")
              else { throw fail("unpaired surrogate") }
              position += 2
              let low = try hex4()
              guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
              code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
            scalars.append(scalar)
          default:
            throw fail("invalid escape")
          }
        case 0..<0x20:
          throw fail("control character in a string")
        default:
          raw.append(byte)
        }
      }
      throw fail("unterminated string")
    }

    mutating func hex4() throws(ParseError) -> UInt32 {
      guard position + 4 <= bytes.count,
        let code = UInt32(
          String(decoding: bytes[position..<(position + 4)], as: UTF8.self), radix: 16)
      else { throw fail("invalid \\u escape") }
      position += 4
      return code
    }
  }
}
