import Foundation
import IR

/// A byte-level BPE tokenizer, built from a GGUF file's tokenizer metadata (`gpt2` model, with
/// llama.cpp's pre-tokenizers) or from a Hugging Face `tokenizer.json` (`TokenizerJSON.swift`).
///
/// Encoding: split out added tokens (special ones only when asked), normalize, pre-tokenize with
/// the steps the file names (every numeric code point alone; GPT-2's pattern; a regex split),
/// map each piece's bytes to GPT-2's printable characters, merge by rank, map to ids. Decoding
/// reverses the byte mapping. One engine serves both file formats.
public struct Tokenizer: Sendable {
  /// Token texts by id.
  public let tokens: [String]
  /// Ids of control tokens (`<|im_start|>` ...; a tokenizer.json's special added tokens), matched
  /// in text only when asked.
  public let controlTokens: [Int32]
  public let beginOfSequence: Int32?
  public let endOfSequence: Int32?
  /// Whether the model expects BOS before a prompt (`tokenizer.ggml.add_bos_token`, or a
  /// tokenizer.json post-processor that adds it).
  public let addsBeginOfSequence: Bool
  /// The pre-tokenizer's name (`tokenizer.ggml.pre`, or a summary of tokenizer.json's).
  public let preTokenizer: String
  /// The chat template text, if the file has one.
  public let chatTemplate: String?

  private let ids: [String: Int32]
  private let ranks: [Pair: Int]
  private let added: [AddedToken]
  private let addedIDs: Set<Int32>
  private let steps: [PreTokenizerStep]
  private let normalization: Normalization
  /// A piece that is a token as a whole is that token, whatever the merges (tokenizer.json's
  /// `ignore_merges`, Llama 3's).
  private let ignoresMerges: Bool

  struct Pair: Hashable {
    var left: String
    var right: String
  }

  /// A token matched in text before pre-tokenization.
  struct AddedToken: Sendable {
    var text: [Unicode.Scalar]
    var id: Int32
    /// Matched only when special tokens are parsed.
    var special: Bool
    /// Whitespace on its left or right is part of the match.
    var stripsLeft = false
    var stripsRight = false
  }

  /// One step of pre-tokenization; each splits every piece the steps before it made.
  enum PreTokenizerStep: Sendable {
    /// Every numeric code point alone (`Digits` with `individual_digits`), or runs of them.
    case digits(individual: Bool)
    /// GPT-2's pattern (`ByteLevel` with `use_regex`), as llama.cpp writes it by hand.
    case gpt2
    /// A regular expression's matches and the text between them, each a piece (`Split`,
    /// behavior `Isolated`).
    case split(SplitPattern)
  }

  /// What text goes through before pre-tokenization.
  enum Normalization: Sendable {
    case none, nfc
  }

  /// The pre-tokenizers implemented, by `tokenizer.ggml.pre` name.
  public static let supportedPreTokenizers: Set<String> = [
    "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "gpt-2",
    "default",
  ]

  /// Builds the tokenizer from GGUF metadata.
  ///
  /// - Throws: `GGUFError` for a missing vocabulary, a tokenizer model other than `gpt2`, an
  ///   unsupported pre-tokenizer, or malformed merges.
  public init(gguf file: GGUFFile) throws(GGUFError) {
    func fail(_ message: String) -> GGUFError { GGUFError(message: "\(file.path): \(message)") }
    guard file["tokenizer.ggml.model"]?.string == "gpt2" else {
      throw fail(
        "tokenizer model '\(file["tokenizer.ggml.model"]?.string ?? "none")' is not supported (expected gpt2)"
      )
    }
    let pre = file["tokenizer.ggml.pre"]?.string ?? "default"
    guard Tokenizer.supportedPreTokenizers.contains(pre) else {
      throw fail(
        "pre-tokenizer '\(pre)' is not supported (supported: \(Tokenizer.supportedPreTokenizers.sorted().joined(separator: ", ")))"
      )
    }
    guard let tokenValues = file["tokenizer.ggml.tokens"]?.array, !tokenValues.isEmpty else {
      throw fail("no tokenizer.ggml.tokens")
    }
    var tokens: [String] = []
    tokens.reserveCapacity(tokenValues.count)
    for value in tokenValues {
      guard let text = value.string else { throw fail("tokenizer.ggml.tokens holds a non-string") }
      tokens.append(text)
    }
    var merges: [Pair: Int] = [:]
    for (rank, value) in (file["tokenizer.ggml.merges"]?.array ?? []).enumerated() {
      guard let text = value.string, let space = text.firstIndex(of: " ") else {
        throw fail("merge \(rank) is not 'left right'")
      }
      merges[Pair(left: String(text[..<space]), right: String(text[text.index(after: space)...]))] =
        rank
    }
    guard tokens.count <= Int(Int32.max) else { throw fail("too many tokens") }
    var control: [Int32] = []
    if let types = file["tokenizer.ggml.token_type"]?.array {
      guard types.count == tokens.count else {
        throw fail(
          "tokenizer.ggml.token_type has \(types.count) entries for \(tokens.count) tokens")
      }
      control = types.indices.filter { types[$0].integer == 3 }.map { Int32($0) }
    }
    /// A special token's id, which must name a token.
    func tokenID(_ key: String) throws(GGUFError) -> Int32? {
      guard let value = file[key] else { return nil }
      guard let id = value.integer, tokens.indices.contains(id) else {
        let shown = value.integer.map(String.init) ?? "not an integer"
        throw fail("\(key) (\(shown)) is not a token id (\(tokens.count) tokens)")
      }
      return Int32(id)
    }
    // smollm and its family first isolate every numeric code point.
    let isolatesDigits = pre != "gpt-2" && pre != "default"
    self.init(
      tokens: tokens, merges: merges,
      added: control.map {
        AddedToken(text: Array(tokens[Int($0)].unicodeScalars), id: $0, special: true)
      },
      beginOfSequence: try tokenID("tokenizer.ggml.bos_token_id"),
      endOfSequence: try tokenID("tokenizer.ggml.eos_token_id"),
      addsBeginOfSequence: file["tokenizer.ggml.add_bos_token"]?.bool ?? false,
      preTokenizer: pre, steps: isolatesDigits ? [.digits(individual: true), .gpt2] : [.gpt2],
      normalization: .none, ignoresMerges: false,
      chatTemplate: file["tokenizer.chat_template"]?.string)
  }

  init(
    tokens: [String], merges: [Pair: Int], added: [AddedToken], beginOfSequence: Int32?,
    endOfSequence: Int32?, addsBeginOfSequence: Bool, preTokenizer: String,
    steps: [PreTokenizerStep], normalization: Normalization, ignoresMerges: Bool,
    chatTemplate: String?
  ) {
    self.tokens = tokens
    self.ranks = merges
    self.controlTokens = added.filter(\.special).map(\.id)
    self.beginOfSequence = beginOfSequence
    self.endOfSequence = endOfSequence
    self.addsBeginOfSequence = addsBeginOfSequence
    self.preTokenizer = preTokenizer
    self.chatTemplate = chatTemplate
    self.steps = steps
    self.normalization = normalization
    self.ignoresMerges = ignoresMerges
    var ids: [String: Int32] = [:]
    for (id, text) in tokens.enumerated() where ids[text] == nil { ids[text] = Int32(id) }
    self.ids = ids
    // Longest first, so an added token that contains another wins.
    self.added = added.filter { !$0.text.isEmpty }.sorted { $0.text.count > $1.text.count }
    addedIDs = Set(added.map(\.id))
  }

  // MARK: - Encoding

  /// The ids of `text`; control (special) tokens written in the text become their ids only when
  /// `parseSpecial` is set (as for chat-formatted data); a tokenizer.json's non-special added
  /// tokens always do.
  public func encode(_ text: String, parseSpecial: Bool = false) -> [Int32] {
    var result: [Int32] = []
    for segment in splitAdded(text, parseSpecial: parseSpecial) {
      switch segment {
      case .control(let id): result.append(id)
      case .text(let part):
        let normalized =
          normalization == .nfc ? part.precomposedStringWithCanonicalMapping : part
        for piece in preTokenize(normalized) { result += encodePiece(piece) }
      }
    }
    return result
  }

  private enum Segment {
    case text(String)
    case control(Int32)
  }

  /// The text split at the added tokens it contains (leftmost, then longest, match first); a
  /// token that strips takes the whitespace (White_Space) beside it.
  private func splitAdded(_ text: String, parseSpecial: Bool) -> [Segment] {
    let candidates = added.filter { parseSpecial || !$0.special }
    if candidates.isEmpty { return [.text(text)] }
    let scalars = Array(text.unicodeScalars)
    var segments: [Segment] = []
    var start = 0
    var position = 0
    func piece(_ range: Range<Int>) -> String {
      var piece = ""
      piece.unicodeScalars.append(contentsOf: scalars[range])
      return piece
    }
    while position < scalars.count {
      guard
        let match = candidates.first(where: { candidate in
          position + candidate.text.count <= scalars.count
            && scalars[position..<(position + candidate.text.count)].elementsEqual(
              candidate.text)
        })
      else {
        position += 1
        continue
      }
      var textEnd = position
      if match.stripsLeft {
        while textEnd > start && scalars[textEnd - 1].properties.isWhitespace { textEnd -= 1 }
      }
      if start < textEnd { segments.append(.text(piece(start..<textEnd))) }
      segments.append(.control(match.id))
      position += match.text.count
      if match.stripsRight {
        while position < scalars.count && scalars[position].properties.isWhitespace {
          position += 1
        }
      }
      start = position
    }
    if start < scalars.count { segments.append(.text(piece(start..<scalars.count))) }
    return segments
  }

  /// Splits text into pieces by the pre-tokenizer's steps, each applied to every piece the steps
  /// before it made.
  public func preTokenize(_ text: String) -> [[Unicode.Scalar]] {
    var pieces: [[Unicode.Scalar]] = text.isEmpty ? [] : [Array(text.unicodeScalars)]
    for step in steps {
      var next: [[Unicode.Scalar]] = []
      for piece in pieces {
        switch step {
        case .digits(let individual): next += splitDigits(piece, individual: individual)
        case .gpt2: next += gpt2Split(piece)
        case .split(let pattern): next += pattern.split(piece)
        }
      }
      pieces = next
    }
    return pieces
  }

  /// Numeric code points apart from the rest: each alone, or in runs.
  private func splitDigits(_ scalars: [Unicode.Scalar], individual: Bool) -> [[Unicode.Scalar]] {
    var pieces: [[Unicode.Scalar]] = []
    var start = 0
    var index = 0
    while index < scalars.count {
      guard Character.Category(scalars[index]) == .number else {
        index += 1
        continue
      }
      if start < index { pieces.append(Array(scalars[start..<index])) }
      var end = index + 1
      if !individual {
        while end < scalars.count && Character.Category(scalars[end]) == .number { end += 1 }
      }
      pieces.append(Array(scalars[index..<end]))
      index = end
      start = end
    }
    if start < scalars.count { pieces.append(Array(scalars[start...])) }
    return pieces
  }

  /// The GPT-2 pattern as llama.cpp implements it by hand (each chunk's end acts as end of text).
  private func gpt2Split(_ text: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    var pieces: [[Unicode.Scalar]] = []
    var position = 0
    let count = text.count
    func at(_ index: Int) -> Unicode.Scalar? { index < count ? text[index] : nil }
    func category(_ index: Int) -> Character.Category {
      guard let scalar = at(index) else { return .none }
      return Character.Category(scalar)
    }
    while position < count {
      let start = position
      let scalar = text[position]
      // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive).
      if scalar == "'", let next = at(position + 1) {
        if ["s", "t", "m", "d"].contains(next) {
          pieces.append(Array(text[position..<(position + 2)]))
          position += 2
          continue
        }
        if let third = at(position + 2),
          (next == "r" && third == "e") || (next == "v" && third == "e")
            || (next == "l" && third == "l")
        {
          pieces.append(Array(text[position..<(position + 3)]))
          position += 3
          continue
        }
      }
      let lead = scalar == " " ? category(position + 1) : category(position)
      let skipSpace = scalar == " " ? 1 : 0
      switch lead {
      case .letter:
        position += skipSpace
        while category(position) == .letter { position += 1 }
      case .number:
        position += skipSpace
        while category(position) == .number { position += 1 }
      case .other:
        position += skipSpace
        while category(position) == .other { position += 1 }
      case .whitespace, .none:
        var spaces = 0
        while category(position + spaces) == .whitespace { spaces += 1 }
        if spaces > 1 && at(position + spaces) != nil {
          position += spaces - 1  // \s+(?!\S): leave the last space for the next word.
        } else if spaces > 0 {
          position += spaces
        } else {
          position += 1  // Matches nothing: a piece of its own.
        }
      }
      pieces.append(Array(text[start..<position]))
    }
    return pieces
  }

  /// BPE over one piece: its bytes as GPT-2 characters, merged by rank (ties: leftmost).
  private func encodePiece(_ piece: [Unicode.Scalar]) -> [Int32] {
    var bytes: [UInt8] = []
    for scalar in piece { bytes += Array(String(scalar).utf8) }
    var symbols = bytes.map { String(ByteMapping.character(for: $0)) }
    if ignoresMerges, let id = ids[symbols.joined()] { return [id] }
    while symbols.count > 1 {
      var best: (rank: Int, index: Int)?
      for index in 0..<(symbols.count - 1) {
        if let rank = ranks[Pair(left: symbols[index], right: symbols[index + 1])],
          rank < (best?.rank ?? Int.max)
        {
          best = (rank, index)
        }
      }
      guard let best else { break }
      symbols[best.index] += symbols[best.index + 1]
      symbols.remove(at: best.index + 1)
    }
    var result: [Int32] = []
    for symbol in symbols {
      if let id = ids[symbol] {
        result.append(id)
      } else {
        // llama.cpp's fallback: one token per byte; bytes without a token vanish.
        for character in symbol {
          if let id = ids[String(character)] { result.append(id) }
        }
      }
    }
    return result
  }

  // MARK: - Decoding

  /// The text of `ids`; invalid UTF-8 (a partial character) becomes U+FFFD.
  public func decode(_ ids: [Int32]) -> String {
    String(decoding: bytes(ids), as: UTF8.self)
  }

  /// The raw bytes of `ids`, for streaming (callers hold back incomplete characters).
  public func bytes(_ ids: [Int32]) -> [UInt8] {
    var result: [UInt8] = []
    for id in ids where id >= 0 && Int(id) < tokens.count {
      if addedIDs.contains(id) {
        // Added tokens are text, not byte-mapped pieces.
        result += Array(tokens[Int(id)].utf8)
        continue
      }
      for scalar in tokens[Int(id)].unicodeScalars {
        if let byte = ByteMapping.byte(for: scalar) {
          result.append(byte)
        } else {
          result += Array(String(scalar).utf8)
        }
      }
    }
    return result
  }
}

// MARK: - Character classes

extension Character {
  /// The classes llama.cpp's GPT-2 splitter distinguishes.
  fileprivate enum Category: Equatable {
    case letter, number, whitespace, other, none

    init(_ scalar: Unicode.Scalar) {
      let properties = scalar.properties
      if properties.isWhitespace {
        self = .whitespace
        return
      }
      switch properties.generalCategory {
      case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        self = .letter
      case .decimalNumber, .letterNumber, .otherNumber:
        self = .number
      case .unassigned:
        self = .none
      default:
        self = .other
      }
    }
  }
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the other 68 to U+0100 upward.
enum ByteMapping {
  static let table: [Unicode.Scalar] = {
    var printable: [UInt8] = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
    var table = [Unicode.Scalar](repeating: " ", count: 256)
    for byte in printable { table[Int(byte)] = Unicode.Scalar(byte) }
    var next: UInt32 = 0x100
    for byte in 0...255 where !printable.contains(UInt8(byte)) {
      table[byte] = Unicode.Scalar(next) ?? " "
      next += 1
    }
    printable.removeAll()
    return table
  }()

  static let inverse: [Unicode.Scalar: UInt8] = {
    var inverse: [Unicode.Scalar: UInt8] = [:]
    for (byte, scalar) in table.enumerated() { inverse[scalar] = UInt8(byte) }
    return inverse
  }()

  static func character(for byte: UInt8) -> Character { Character(table[Int(byte)]) }
  static func byte(for scalar: Unicode.Scalar) -> UInt8? { inverse[scalar] }
}
