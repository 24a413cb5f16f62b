import Foundation
import IR

/// A BPE tokenizer, built from a GGUF file's tokenizer metadata (`gpt2` model, with llama.cpp's
/// pre-tokenizers; `llama`, SentencePiece by score) or from a Hugging Face `tokenizer.json`
/// (`TokenizerJSON.swift`: byte-level BPE, or SentencePiece-style BPE with byte fallback).
///
/// Encoding: split out added tokens (special ones only when asked), normalize, pre-tokenize with
/// the steps the file names (every numeric code point alone; GPT-2's pattern; a regex split;
/// Metaspace), then the model: byte-level (each piece's bytes as GPT-2's printable characters,
/// merged by rank), characters merged by rank with byte fallback, or characters merged by score
/// (`SentencePiece.swift`). Decoding reverses the byte mapping or runs the file's decoders. One
/// engine serves both file formats.
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
  /// How pieces become ids.
  private let model: TokenModel
  /// How token texts become text (for models other than byte-level).
  private let decoders: [TokenDecoder]
  /// Added tokens matched in the normalized text (`normalized` true), by their normalized text.
  private let normalizedAdded: [AddedToken]
  /// The text decoders see for those tokens: their normalized text, as in the library.
  private let decodedTexts: [Int32: String]

  /// The tokenizer model: `gpt2` (byte-level BPE), `llama` (a GGUF's SentencePiece by score)
  /// or `bpe` (a tokenizer.json's BPE over characters with byte fallback).
  public var modelName: String {
    switch model {
    case .byteLevel: "gpt2"
    case .scores: "llama"
    case .characters: "bpe"
    }
  }

  /// How a piece of text becomes ids.
  enum TokenModel: Sendable {
    /// Its UTF-8 bytes as GPT-2's printable characters, merged by rank (`ranks`).
    case byteLevel
    /// Its characters merged by rank, with byte fallback (tokenizer.json SentencePiece-style).
    case characters(CharacterBPE)
    /// Its characters merged by score (GGUF `llama`, llama.cpp's SentencePiece).
    case scores(ScoreBPE)
  }

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
    /// Matched in the normalized text, by its normalized form (tokenizer.json's `normalized`).
    var normalized = false
  }

  /// One step of pre-tokenization; each splits every piece the steps before it made.
  enum PreTokenizerStep: Sendable {
    /// Every numeric code point alone (`Digits` with `individual_digits`), or runs of them.
    case digits(individual: Bool)
    /// GPT-2's pattern (`ByteLevel` with `use_regex`), as llama.cpp writes it by hand.
    case gpt2
    /// A regular expression's matches and the text between them, split by the pattern's
    /// behavior (`Split`).
    case split(SplitPattern)
    /// Spaces as `▁`, prepended and split on (`Metaspace`).
    case metaspace(Metaspace)
  }

  /// The pre-tokenizers implemented, by `tokenizer.ggml.pre` name.
  public static let supportedPreTokenizers: Set<String> = [
    "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "gpt-2",
    "default",
  ]

  /// Builds the tokenizer from GGUF metadata.
  ///
  /// - Throws: `GGUFError` for a missing vocabulary, a tokenizer model other than `gpt2` or
  ///   `llama`, an unsupported pre-tokenizer, malformed merges or scores.
  public init(gguf file: GGUFFile) throws(GGUFError) {
    func fail(_ message: String) -> GGUFError { GGUFError(message: "\(file.path): \(message)") }
    if file["tokenizer.ggml.model"]?.string == "llama" {
      self = try Tokenizer(sentencePieceGGUF: file)
      return
    }
    guard file["tokenizer.ggml.model"]?.string == "gpt2" else {
      throw fail(
        "tokenizer model '\(file["tokenizer.ggml.model"]?.string ?? "none")' is not supported (expected gpt2 or llama)"
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
    // llama.cpp's token types: 3 CONTROL (matched in text only when special tokens are parsed),
    // 4 USER_DEFINED (always matched in text, and written as raw text, not byte-mapped: Pythia's
    // runs of spaces).
    var control: [Int32] = []
    var userDefined: [Int32] = []
    if let types = file["tokenizer.ggml.token_type"]?.array {
      guard types.count == tokens.count else {
        throw fail(
          "tokenizer.ggml.token_type has \(types.count) entries for \(tokens.count) tokens")
      }
      control = types.indices.filter { types[$0].integer == 3 }.map { Int32($0) }
      userDefined = types.indices.filter { types[$0].integer == 4 }.map { Int32($0) }
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
      }
        + userDefined.map {
          AddedToken(text: Array(tokens[Int($0)].unicodeScalars), id: $0, special: false)
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
    chatTemplate: String?, model: TokenModel = .byteLevel, decoders: [TokenDecoder] = []
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
    self.model = model
    self.decoders = decoders
    var ids: [String: Int32] = [:]
    for (id, text) in tokens.enumerated() where ids[text] == nil { ids[text] = Int32(id) }
    self.ids = ids
    // Longest first, so an added token that contains another wins.
    self.added = added.filter { !$0.text.isEmpty && !$0.normalized }
      .sorted { $0.text.count > $1.text.count }
    // A normalized token is matched by its text after the normalizers.
    self.normalizedAdded = added.filter(\.normalized).map { token in
      var normalized = token
      var text = ""
      text.unicodeScalars.append(contentsOf: token.text)
      normalized.text = Array(normalization.apply(text).unicodeScalars)
      return normalized
    }.filter { !$0.text.isEmpty }.sorted { $0.text.count > $1.text.count }
    decodedTexts = Dictionary(
      normalizedAdded.map { ($0.id, String(String.UnicodeScalarView($0.text))) }
    ) { first, _ in first }
    addedIDs = Set(added.map(\.id))
  }

  // MARK: - Encoding

  /// The ids of `text`; control (special) tokens written in the text become their ids only when
  /// `parseSpecial` is set (as for chat-formatted data); a tokenizer.json's non-special added
  /// tokens always do.
  public func encode(_ text: String, parseSpecial: Bool = false) -> [Int32] {
    var result: [Int32] = []
    // After an added token (or at the start): llama.cpp's is_prev_special.
    var afterToken = true
    let candidates = added.filter { parseSpecial || !$0.special }
    let normalizedCandidates = normalizedAdded.filter { parseSpecial || !$0.special }
    for segment in splitAdded(Array(text.unicodeScalars), candidates) {
      switch segment {
      case .control(let id):
        result.append(id)
        afterToken = true
      case .text(let part, let start):
        if case .scores(let model) = model {
          result += model.encode(part, prefixed: afterToken)
        } else {
          var string = ""
          string.unicodeScalars.append(contentsOf: part)
          let normalized = Array(normalization.apply(string).unicodeScalars)
          for inner in splitAdded(normalized, normalizedCandidates) {
            switch inner {
            case .control(let id): result.append(id)
            case .text(let piece, let offset):
              for word in preTokenize(piece, atStart: start == 0 && offset == 0) {
                result += encodePiece(word)
              }
            }
          }
        }
        afterToken = false
      }
    }
    return result
  }

  private enum Segment {
    /// Text and the offset of its first scalar.
    case text([Unicode.Scalar], Int)
    case control(Int32)
  }

  /// The text split at the added tokens it contains (leftmost, then longest, match first); a
  /// token that strips takes the whitespace (White_Space) beside it.
  private func splitAdded(_ scalars: [Unicode.Scalar], _ candidates: [AddedToken]) -> [Segment] {
    if scalars.isEmpty { return [] }
    if candidates.isEmpty { return [.text(scalars, 0)] }
    var segments: [Segment] = []
    var start = 0
    var position = 0
    func piece(_ range: Range<Int>) -> Segment { .text(Array(scalars[range]), range.lowerBound) }
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
      if start < textEnd { segments.append(piece(start..<textEnd)) }
      segments.append(.control(match.id))
      position += match.text.count
      if match.stripsRight {
        while position < scalars.count && scalars[position].properties.isWhitespace {
          position += 1
        }
      }
      start = position
    }
    if start < scalars.count { segments.append(piece(start..<scalars.count)) }
    return segments
  }

  /// Splits text into pieces by the pre-tokenizer's steps, each applied to every piece the steps
  /// before it made.
  public func preTokenize(_ text: String) -> [[Unicode.Scalar]] {
    preTokenize(Array(text.unicodeScalars), atStart: true)
  }

  /// The pieces of `text`; `atStart` says whether it begins the input (for Metaspace's
  /// `prepend_scheme` first), and holds for the first piece each step makes of it.
  private func preTokenize(_ text: [Unicode.Scalar], atStart: Bool) -> [[Unicode.Scalar]] {
    var pieces: [(scalars: [Unicode.Scalar], atStart: Bool)] = text.isEmpty ? [] : [(text, atStart)]
    for step in steps {
      var next: [(scalars: [Unicode.Scalar], atStart: Bool)] = []
      for piece in pieces {
        let split: [[Unicode.Scalar]]
        switch step {
        case .digits(let individual): split = splitDigits(piece.scalars, individual: individual)
        case .gpt2: split = gpt2Split(piece.scalars)
        case .split(let pattern): split = pattern.split(piece.scalars)
        case .metaspace(let metaspace):
          split = metaspace.pieces(piece.scalars, atStart: piece.atStart)
        }
        for (index, part) in split.enumerated() where !part.isEmpty {
          next.append((part, piece.atStart && index == 0))
        }
      }
      pieces = next
    }
    return pieces.map(\.scalars)
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

  /// BPE over one piece: its bytes as GPT-2 characters, merged by rank (ties: leftmost); or its
  /// characters, as the model says.
  private func encodePiece(_ piece: [Unicode.Scalar]) -> [Int32] {
    switch model {
    case .byteLevel: break
    case .characters(let model): return model.encode(piece)
    case .scores(let model): return model.encode(piece, prefixed: false)
    }
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
  ///
  /// Byte-level BPE reverses the byte mapping; other models run the file's decoders over the
  /// token texts (so a SentencePiece model's first space, its prefix, is stripped).
  public func decode(_ ids: [Int32]) -> String {
    if case .byteLevel = model { return String(decoding: bytes(ids), as: UTF8.self) }
    let texts = ids.filter { $0 >= 0 && Int($0) < tokens.count }.map {
      decodedTexts[$0] ?? tokens[Int($0)]
    }
    return decoders.reduce(texts) { $1.apply($0) }.joined()
  }

  /// The raw bytes of `ids`, for streaming (callers hold back incomplete characters): for a
  /// SentencePiece model, each token's text with `▁` as a space or its `<0xNN>` byte, nothing
  /// stripped.
  public func bytes(_ ids: [Int32]) -> [UInt8] {
    if case .byteLevel = model {
    } else {
      var result: [UInt8] = []
      for id in ids where id >= 0 && Int(id) < tokens.count {
        let text = tokens[Int(id)]
        if !addedIDs.contains(id), let byte = TokenDecoder.byte(text) {
          result.append(byte)
        } else {
          var piece = ""
          piece.unicodeScalars.append(
            contentsOf: replacing(Array(text.unicodeScalars), ["\u{2581}"], with: [" "]))
          result += Array(piece.utf8)
        }
      }
      return result
    }
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
