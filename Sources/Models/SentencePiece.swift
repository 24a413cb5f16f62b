import Foundation

// The parts of SentencePiece-style tokenizers: BPE over characters with byte fallback (a
// tokenizer.json's `BPE` model with `byte_fallback`, as Llama 2, Mistral and Gemma ship it), BPE
// by piece score (a GGUF's `llama` tokenizer, llama.cpp's llm_tokenizer_spm), the normalizers,
// the Metaspace pre-tokenizer and the decoders these families use.

// MARK: - Normalizers

/// One normalizer of a tokenizer.json, applied to the text between added tokens.
enum TextNormalizer: Equatable, Sendable {
  /// `NFC`: canonical composition.
  case nfc
  /// `Prepend`: the string before any non-empty text.
  case prepend(String)
  /// `Replace` with a `{"String": ...}` pattern: every occurrence, left to right, compared by
  /// Unicode scalars (a space before a combining mark is still a space).
  case replace([Unicode.Scalar], with: [Unicode.Scalar])

  func apply(_ text: String) -> String {
    switch self {
    case .nfc: return text.precomposedStringWithCanonicalMapping
    case .prepend(let prefix): return text.isEmpty ? text : prefix + text
    case .replace(let pattern, let content):
      var result = ""
      result.unicodeScalars.append(
        contentsOf: replacing(Array(text.unicodeScalars), pattern, with: content))
      return result
    }
  }
}

/// Every occurrence of `pattern` in `scalars` (left to right, not overlapping) replaced.
func replacing(
  _ scalars: [Unicode.Scalar], _ pattern: [Unicode.Scalar], with content: [Unicode.Scalar]
)
  -> [Unicode.Scalar]
{
  guard !pattern.isEmpty, scalars.count >= pattern.count else { return scalars }
  var result: [Unicode.Scalar] = []
  result.reserveCapacity(scalars.count)
  var index = 0
  while index < scalars.count {
    if scalars[index] == pattern[0], index + pattern.count <= scalars.count,
      scalars[index..<(index + pattern.count)].elementsEqual(pattern)
    {
      result += content
      index += pattern.count
    } else {
      result.append(scalars[index])
      index += 1
    }
  }
  return result
}

extension Tokenizer {
  /// What text goes through before pre-tokenization: normalizers applied in order.
  struct Normalization: Equatable, Sendable {
    var steps: [TextNormalizer]

    static let none = Normalization(steps: [])
    static let nfc = Normalization(steps: [.nfc])

    func apply(_ text: String) -> String { steps.reduce(text) { $1.apply($0) } }
  }
}

// MARK: - Metaspace

/// The `Metaspace` pre-tokenizer: spaces become the replacement (`▁`), which is prepended to the
/// text (always, only at the start of the input, or never) unless the text starts with it; with
/// `split`, the text splits before each replacement (`MergedWithNext`).
struct Metaspace: Sendable {
  enum Prepend: String, Sendable {
    case always, first, never
  }

  var replacement: Unicode.Scalar
  var prepend: Prepend
  var split: Bool

  /// The pieces of `piece`; `atStart` says whether it begins the input (offset 0).
  func pieces(_ piece: [Unicode.Scalar], atStart: Bool) -> [[Unicode.Scalar]] {
    var text = piece.map { $0 == " " ? replacement : $0 }
    let prepends = prepend == .always || (prepend == .first && atStart)
    if prepends && text.first != replacement { text.insert(replacement, at: 0) }
    guard split else { return [text] }
    let matches = text.indices.filter { text[$0] == replacement }.map { $0..<($0 + 1) }
    return SplitBehavior.mergedWithNext.pieces(text, matches: matches)
  }
}

/// How a `Split` pre-tokenizer treats the matches of its pattern (tokenizers'
/// SplitDelimiterBehavior).
enum SplitBehavior: String, Sendable {
  case isolated = "Isolated"
  case removed = "Removed"
  case mergedWithPrevious = "MergedWithPrevious"
  case mergedWithNext = "MergedWithNext"
  case contiguous = "Contiguous"

  /// The pieces of `text` given the ranges its pattern matched (ascending, not overlapping, not
  /// empty): each match alone, dropped, joined to the piece before or after it (unless that piece
  /// is a match too), or runs of matches together.
  func pieces(_ text: [Unicode.Scalar], matches: [Range<Int>]) -> [[Unicode.Scalar]] {
    var parts: [(range: Range<Int>, isMatch: Bool)] = []
    var last = 0
    for match in matches {
      if last < match.lowerBound { parts.append((last..<match.lowerBound, false)) }
      parts.append((match, true))
      last = match.upperBound
    }
    if last < text.count { parts.append((last..<text.count, false)) }
    var ranges: [Range<Int>] = []
    switch self {
    case .isolated: ranges = parts.map(\.range)
    case .removed: ranges = parts.filter { !$0.isMatch }.map(\.range)
    case .contiguous:
      var previousMatch = false
      for part in parts {
        if part.isMatch && previousMatch, let previous = ranges.popLast() {
          ranges.append(previous.lowerBound..<part.range.upperBound)
        } else {
          ranges.append(part.range)
        }
        previousMatch = part.isMatch
      }
    case .mergedWithPrevious:
      var previousMatch = false
      for part in parts {
        if part.isMatch && !previousMatch, let previous = ranges.popLast() {
          ranges.append(previous.lowerBound..<part.range.upperBound)
        } else {
          ranges.append(part.range)
        }
        previousMatch = part.isMatch
      }
    case .mergedWithNext:
      var previousMatch = false
      for part in parts.reversed() {
        if part.isMatch && !previousMatch, let next = ranges.popLast() {
          ranges.append(part.range.lowerBound..<next.upperBound)
        } else {
          ranges.append(part.range)
        }
        previousMatch = part.isMatch
      }
      ranges.reverse()
    }
    return ranges.map { Array(text[$0]) }
  }
}

// MARK: - BPE over characters (tokenizer.json)

/// A tokenizer.json `BPE` model over characters, as the tokenizers library applies it: each
/// Unicode scalar of a piece is its token, or with `byte_fallback` the `<0xNN>` tokens of its
/// UTF-8 bytes, or the unknown token (runs of them fused with `fuse_unk`); then the adjacent pair
/// of lowest merge rank (leftmost on ties) merges until none has a rank.
struct CharacterBPE: Sendable {
  struct Merge: Sendable {
    var rank: Int32
    var id: Int32
  }

  /// Token ids by exact text (Swift's String equality would make `e` + U+0301 the token `é`).
  var vocabulary: [[Unicode.Scalar]: Int32]
  /// Merges by the ids of their pair (`left << 32 | right`).
  var merges: [UInt64: Merge]
  /// The `<0xNN>` token of each byte, when byte fallback is on and the vocabulary has it.
  var byteTokens: [Int32?]
  var byteFallback: Bool
  var unknown: Int32?
  var fusesUnknown: Bool
  var ignoresMerges: Bool

  static func key(_ left: Int32, _ right: Int32) -> UInt64 {
    UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
  }

  func encode(_ piece: [Unicode.Scalar]) -> [Int32] {
    if ignoresMerges, let id = vocabulary[piece] { return [id] }
    var symbols: [Int32] = []
    symbols.reserveCapacity(piece.count)
    var pendingUnknown = false
    for scalar in piece {
      if let id = vocabulary[[scalar]] {
        if pendingUnknown, let unknown { symbols.append(unknown) }
        pendingUnknown = false
        symbols.append(id)
        continue
      }
      if byteFallback {
        let bytes = Array(String(scalar).utf8)
        let fallback = bytes.compactMap { byteTokens[Int($0)] }
        if fallback.count == bytes.count {
          // As the library does: a pending unknown token is not written before the bytes.
          symbols += fallback
          continue
        }
      }
      guard let unknown else { continue }
      if pendingUnknown && !fusesUnknown { symbols.append(unknown) }
      pendingUnknown = true
    }
    if pendingUnknown, let unknown { symbols.append(unknown) }
    return merged(symbols)
  }

  /// The symbols merged by rank: a heap of candidate merges, stale ones skipped when popped.
  private func merged(_ start: [Int32]) -> [Int32] {
    guard start.count > 1 else { return start }
    var symbols = start
    var previous = Array(-1..<(start.count - 1))
    var next = Array(1...start.count)
    next[start.count - 1] = -1
    var removed = [Bool](repeating: false, count: start.count)
    // Ordered by rank, then position.
    var queue = MinimumHeap<(rank: Int32, position: Int, id: Int32)> {
      ($0.rank, $0.position) < ($1.rank, $1.position)
    }
    func consider(_ position: Int) {
      let right = next[position]
      guard right >= 0, let merge = merges[CharacterBPE.key(symbols[position], symbols[right])]
      else { return }
      queue.push((merge.rank, position, merge.id))
    }
    for position in 0..<(start.count - 1) { consider(position) }
    while let top = queue.pop() {
      let position = top.position
      let right = next[position]
      guard !removed[position], right >= 0,
        merges[CharacterBPE.key(symbols[position], symbols[right])]?.id == top.id
      else { continue }
      symbols[position] = top.id
      removed[right] = true
      next[position] = next[right]
      if next[position] >= 0 { previous[next[position]] = position }
      if previous[position] >= 0 { consider(previous[position]) }
      consider(position)
    }
    var result: [Int32] = []
    var position = 0
    while position >= 0 {
      result.append(symbols[position])
      position = next[position]
    }
    return result
  }
}

// MARK: - BPE by score (GGUF llama)

/// llama.cpp's SentencePiece tokenizer (`tokenizer.ggml.model` = `llama`): the text's spaces
/// become `▁` (after one is prepended when `add_space_prefix`), its characters merge pairwise by
/// the highest score of the token they form (leftmost on ties) while any pair forms a token, and
/// a character that is not a token becomes its `<0xNN>` byte tokens.
struct ScoreBPE: Sendable {
  /// Token ids by exact text.
  var vocabulary: [[Unicode.Scalar]: Int32]
  var scores: [Float]
  var byteTokens: [Int32?]
  var unknown: Int32?
  var addsSpacePrefix: Bool

  func encode(_ text: [Unicode.Scalar], prefixed: Bool) -> [Int32] {
    var scalars: [Unicode.Scalar] = prefixed && addsSpacePrefix ? ["\u{2581}"] : []
    scalars += text.map { $0 == " " ? "\u{2581}" : $0 }
    guard !scalars.isEmpty else { return [] }
    let count = scalars.count
    // Symbols never move: symbol i starts at scalar i and spans `length[i]` scalars (0: merged
    // into the symbol on its left).
    var length = [Int](repeating: 1, count: count)
    var previous = Array(-1..<(count - 1))
    var next = Array(1...count)
    next[count - 1] = -1
    func piece(_ from: Int, _ size: Int) -> [Unicode.Scalar] {
      Array(scalars[from..<(from + size)])
    }
    // Ordered by score (highest first), then the left symbol's position.
    var queue = MinimumHeap<(score: Float, left: Int, right: Int, size: Int)> {
      $0.score > $1.score || ($0.score == $1.score && $0.left < $1.left)
    }
    func consider(_ left: Int, _ right: Int) {
      guard left >= 0, right >= 0 else { return }
      let size = length[left] + length[right]
      guard let id = vocabulary[piece(left, size)], Int(id) < scores.count else { return }
      queue.push((scores[Int(id)], left, right, size))
    }
    for index in 1..<count { consider(index - 1, index) }
    while let bigram = queue.pop() {
      let left = bigram.left
      let right = bigram.right
      guard length[left] > 0, length[right] > 0, length[left] + length[right] == bigram.size
      else { continue }
      length[left] += length[right]
      length[right] = 0
      next[left] = next[right]
      if next[right] >= 0 { previous[next[right]] = left }
      consider(previous[left], left)
      consider(left, next[left])
    }
    var result: [Int32] = []
    var index = 0
    while index >= 0 {
      let symbol = piece(index, length[index])
      if let id = vocabulary[symbol] {
        result.append(id)
      } else {
        // A character that is no token: its bytes (llama.cpp's byte_to_token: `<0xNN>`, else
        // the byte as a one-character token), else the unknown token.
        for byte in String(String.UnicodeScalarView(symbol)).utf8 {
          if let id = byteTokens[Int(byte)]
            ?? (byte < 0x80 ? vocabulary[[Unicode.Scalar(byte)]] : nil)
          {
            result.append(id)
          } else if let unknown {
            result.append(unknown)
          }
        }
      }
      index = next[index]
    }
    return result
  }
}

/// The `<0xNN>` token of each byte in a vocabulary.
func byteTokenIDs(_ vocabulary: [[Unicode.Scalar]: Int32]) -> [Int32?] {
  (0..<256).map { vocabulary[Array(String(format: "<0x%02X>", $0).unicodeScalars)] }
}

/// Token ids by their exact text (the first id of a text that appears twice).
func exactVocabulary(_ tokens: [String]) -> [[Unicode.Scalar]: Int32] {
  var vocabulary: [[Unicode.Scalar]: Int32] = [:]
  vocabulary.reserveCapacity(tokens.count)
  for (id, text) in tokens.enumerated() {
    let key = Array(text.unicodeScalars)
    if vocabulary[key] == nil { vocabulary[key] = Int32(id) }
  }
  return vocabulary
}

// MARK: - Decoders

/// One decoder of a tokenizer.json; each maps the list of token texts to another, and the result
/// is joined.
enum TokenDecoder: Equatable, Sendable {
  /// `Replace` with a `{"String": ...}` pattern, in each token.
  case replace([Unicode.Scalar], with: [Unicode.Scalar])
  /// `ByteFallback`: runs of `<0xNN>` tokens become the text of their bytes.
  case byteFallback
  /// `Fuse`: all tokens become one.
  case fuse
  /// `Strip`: up to `start` leading and `stop` trailing copies of `content` leave each token.
  case strip(Unicode.Scalar, start: Int, stop: Int)
  /// `Metaspace`: the replacement becomes a space, and leaves the first token when the
  /// pre-tokenizer prepends it.
  case metaspace(Unicode.Scalar, prepends: Bool)

  func apply(_ tokens: [String]) -> [String] {
    switch self {
    case .replace(let pattern, let content):
      return tokens.map { token in
        var result = ""
        result.unicodeScalars.append(
          contentsOf: replacing(Array(token.unicodeScalars), pattern, with: content))
        return result
      }
    case .byteFallback:
      var result: [String] = []
      var bytes: [UInt8] = []
      for token in tokens {
        if let byte = TokenDecoder.byte(token) {
          bytes.append(byte)
          continue
        }
        if !bytes.isEmpty {
          // Invalid UTF-8 becomes U+FFFD as everywhere in lorac (the library writes one per byte).
          result.append(String(decoding: bytes, as: UTF8.self))
          bytes.removeAll()
        }
        result.append(token)
      }
      if !bytes.isEmpty { result.append(String(decoding: bytes, as: UTF8.self)) }
      return result
    case .fuse:
      return [tokens.joined()]
    case .strip(let content, let start, let stop):
      return tokens.map { token in
        var characters = Array(token.unicodeScalars)
        var cut = 0
        while cut < start && cut < characters.count && characters[cut] == content { cut += 1 }
        characters.removeFirst(cut)
        var end = 0
        while end < stop && end < characters.count
          && characters[characters.count - 1 - end] == content
        {
          end += 1
        }
        characters.removeLast(end)
        return String(String.UnicodeScalarView(characters))
      }
    case .metaspace(let replacement, let prepends):
      return tokens.enumerated().map { index, token in
        var result = ""
        for scalar in token.unicodeScalars {
          if scalar == replacement {
            if index == 0 && prepends { continue }
            result.unicodeScalars.append(" ")
          } else {
            result.unicodeScalars.append(scalar)
          }
        }
        return result
      }
    }
  }

  /// The byte of a `<0xNN>` token.
  static func byte(_ token: String) -> UInt8? {
    let scalars = Array(token.unicodeScalars)
    guard scalars.count == 6, scalars[0] == "<", scalars[1] == "0", scalars[2] == "x",
      scalars[5] == ">"
    else { return nil }
    return UInt8(String(String.UnicodeScalarView(scalars[3...4])), radix: 16)
  }
}

// MARK: - A binary heap

/// A binary heap whose `pop` returns the element that orders first.
struct MinimumHeap<Element> {
  private var elements: [Element] = []
  private let ordersBefore: (Element, Element) -> Bool

  init(_ ordersBefore: @escaping (Element, Element) -> Bool) { self.ordersBefore = ordersBefore }

  mutating func push(_ element: Element) {
    elements.append(element)
    var child = elements.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      guard ordersBefore(elements[child], elements[parent]) else { break }
      elements.swapAt(child, parent)
      child = parent
    }
  }

  mutating func pop() -> Element? {
    guard let last = elements.popLast() else { return nil }
    guard !elements.isEmpty else { return last }
    let top = elements[0]
    elements[0] = last
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var first = parent
      if left < elements.count && ordersBefore(elements[left], elements[first]) { first = left }
      if right < elements.count && ordersBefore(elements[right], elements[first]) { first = right }
      if first == parent { break }
      elements.swapAt(parent, first)
      parent = first
    }
    return top
  }
}

// MARK: - GGUF llama

extension Tokenizer {
  /// The tokenizer of a GGUF whose `tokenizer.ggml.model` is `llama`: tokens with scores and
  /// types (CONTROL and UNKNOWN tokens matched in text when special tokens are parsed,
  /// USER_DEFINED ones always), `add_space_prefix` (default true) before the first text and
  /// after each such token, `add_bos_token` (default true), as llama.cpp reads them.
  init(sentencePieceGGUF file: GGUFFile) throws(GGUFError) {
    func fail(_ message: String) -> GGUFError { GGUFError(message: "\(file.path): \(message)") }
    guard let tokens = file["tokenizer.ggml.tokens"]?.stringArray, !tokens.isEmpty else {
      throw fail("tokenizer.ggml.tokens is missing or not an array of strings")
    }
    guard tokens.count <= Int(Int32.max) else { throw fail("too many tokens") }
    guard let scoreValues = file["tokenizer.ggml.scores"]?.array else {
      throw fail("tokenizer.ggml.scores is missing (the llama tokenizer merges by score)")
    }
    guard scoreValues.count == tokens.count else {
      throw fail(
        "tokenizer.ggml.scores has \(scoreValues.count) entries for \(tokens.count) tokens")
    }
    var scores: [Float] = []
    scores.reserveCapacity(tokens.count)
    for value in scoreValues {
      guard let score = value.number else {
        throw fail("tokenizer.ggml.scores holds a non-number")
      }
      scores.append(Float(score))
    }
    var types = [Int](repeating: 1, count: tokens.count)
    if let value = file["tokenizer.ggml.token_type"] {
      guard let read = value.integerArray, read.count == tokens.count else {
        throw fail(
          "tokenizer.ggml.token_type must hold one integer for each of the \(tokens.count) tokens")
      }
      types = read
    }
    func tokenID(_ key: String) throws(GGUFError) -> Int32? {
      guard let value = file[key] else { return nil }
      guard let id = value.integer, tokens.indices.contains(id) else {
        let shown = value.integer.map(String.init) ?? "not an integer"
        throw fail("\(key) (\(shown)) is not a token id (\(tokens.count) tokens)")
      }
      return Int32(id)
    }
    // llama.cpp's token types: 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED.
    var added: [AddedToken] = []
    for (id, type) in types.enumerated() where [2, 3, 4].contains(type) && !tokens[id].isEmpty {
      added.append(
        AddedToken(text: Array(tokens[id].unicodeScalars), id: Int32(id), special: type != 4))
    }
    let vocabulary = exactVocabulary(tokens)
    let unknown =
      try tokenID("tokenizer.ggml.unknown_token_id") ?? vocabulary[Array("<unk>".unicodeScalars)]
    let addsSpacePrefix = file["tokenizer.ggml.add_space_prefix"]?.bool ?? true
    var decoders: [TokenDecoder] = [.replace(["\u{2581}"], with: [" "]), .byteFallback, .fuse]
    if addsSpacePrefix { decoders.append(.strip(" ", start: 1, stop: 0)) }
    self.init(
      tokens: tokens, merges: [:], added: added,
      beginOfSequence: try tokenID("tokenizer.ggml.bos_token_id"),
      endOfSequence: try tokenID("tokenizer.ggml.eos_token_id"),
      addsBeginOfSequence: file["tokenizer.ggml.add_bos_token"]?.bool ?? true,
      preTokenizer: "llama", steps: [], normalization: .none, ignoresMerges: false,
      chatTemplate: file["tokenizer.chat_template"]?.string,
      model: .scores(
        ScoreBPE(
          vocabulary: vocabulary, scores: scores, byteTokens: byteTokenIDs(vocabulary),
          unknown: unknown,
          addsSpacePrefix: addsSpacePrefix)),
      decoders: decoders)
  }
}
