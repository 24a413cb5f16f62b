import Foundation

// MARK: - Split patterns

/// The regular expression of a tokenizer.json `Split` pre-tokenizer and its behavior (`Isolated`:
/// every match is a piece, and so is the text between matches).
///
/// The tokenizers library runs Oniguruma; lorac runs ICU (NSRegularExpression). The patterns the
/// Llama 3 and Qwen2 families use mean the same in both once `\s` and `\S` are spelled as the
/// White_Space property (Oniguruma's `\s` includes U+000B and U+0085, ICU's does not).
struct SplitPattern: @unchecked Sendable {
  /// The pattern as the file writes it.
  let source: String
  /// What becomes of the matches.
  var behavior = SplitBehavior.isolated
  private let regex: NSRegularExpression

  /// A pattern from tokenizer.json's `{"Regex": ...}`, or a literal from `{"String": ...}`.
  init(regex pattern: String) throws(HuggingFaceError) {
    source = pattern
    do {
      regex = try NSRegularExpression(pattern: SplitPattern.icuPattern(pattern))
    } catch {
      throw HuggingFaceError(message: "the regex does not compile: \(pattern)")
    }
  }

  init(literal text: String) throws(HuggingFaceError) {
    guard !text.isEmpty else { throw HuggingFaceError(message: "the split string is empty") }
    try self.init(regex: NSRegularExpression.escapedPattern(for: text))
  }

  /// `\s` and `\S` as the White_Space property, outside and inside brackets alike.
  static func icuPattern(_ pattern: String) -> String {
    var result = ""
    var escaped = false
    for character in pattern {
      if escaped {
        switch character {
        case "s": result += "p{White_Space}"
        case "S": result += "P{White_Space}"
        default: result.append(character)
        }
        escaped = false
      } else {
        if character == "\\" { escaped = true }
        result.append(character)
      }
    }
    return result
  }

  /// The pieces of `piece`: the pattern's (non-empty) matches and the text between them, as the
  /// behavior joins or drops them.
  func split(_ piece: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
    var text = ""
    text.unicodeScalars.append(contentsOf: piece)
    let whole = NSRange(text.startIndex..<text.endIndex, in: text)
    var matches: [Range<Int>] = []
    // Scalar offsets, counted forward from the previous match.
    var index = text.startIndex
    var offset = 0
    for match in regex.matches(in: text, range: whole) {
      guard let range = Range(match.range, in: text), !range.isEmpty else { continue }
      offset += text.unicodeScalars.distance(from: index, to: range.lowerBound)
      let length = text.unicodeScalars.distance(from: range.lowerBound, to: range.upperBound)
      matches.append(offset..<(offset + length))
      offset += length
      index = range.upperBound
    }
    return behavior.pieces(piece, matches: matches)
  }
}

// MARK: - tokenizer.json

extension Tokenizer {
  /// The tokenizer of a Hugging Face folder: its tokenizer.json, with the BOS and EOS tokens and
  /// the chat template of tokenizer_config.json (or chat_template.jinja), and the EOS of
  /// generation_config.json or config.json when tokenizer_config.json names none.
  ///
  /// - Throws: `HuggingFaceError` naming the file and the field that is missing, malformed or a
  ///   component lorac does not implement.
  public init(huggingFace folder: HuggingFaceFolder) throws(HuggingFaceError) {
    let url = URL(fileURLWithPath: folder.path)
    let path = url.appendingPathComponent("tokenizer.json").path
    guard FileManager.default.fileExists(atPath: path) else {
      throw HuggingFaceError(message: "\(folder.path): no tokenizer.json")
    }
    var template: String?
    let jinja = url.appendingPathComponent("chat_template.jinja").path
    if FileManager.default.fileExists(atPath: jinja) {
      template = String(decoding: try HuggingFaceFolder.readBytes(jinja), as: UTF8.self)
    }
    try self.init(
      tokenizerJSON: HuggingFaceFolder.readBytes(path), path: path,
      tokenizerConfig: folder.tokenizerConfig, generationConfig: folder.generationConfig,
      modelConfig: folder.config, chatTemplate: template)
  }

  /// Reads the bytes of a tokenizer.json (byte-level or SentencePiece-style BPE), with the
  /// optional JSON of the folder's other files; `path` names the file in messages.
  ///
  /// What is read: `model` BPE (vocab; merges as `"a b"` strings or `[a, b]` pairs;
  /// `ignore_merges`; `byte_fallback`, `unk_token`, `fuse_unk` without ByteLevel),
  /// `added_tokens` (`special`, `normalized`, `lstrip`, `rstrip`), `normalizer` (NFC, Prepend,
  /// Replace of a string, a Sequence of them), `pre_tokenizer` (ByteLevel last, after any of
  /// Split with a regex or string, Digits, Sequence; or none, Metaspace, Split, Sequence for
  /// SentencePiece-style BPE), `post_processor` (ByteLevel; TemplateProcessing that adds one token
  /// before the text), `decoder` (ByteLevel; or Replace, ByteFallback, Fuse, Strip, Metaspace,
  /// Sequence). Anything else is an error naming it.
  public init(
    tokenizerJSON bytes: [UInt8], path: String, tokenizerConfig: JSONValue? = nil,
    generationConfig: JSONValue? = nil, modelConfig: JSONValue? = nil, chatTemplate: String? = nil
  ) throws(HuggingFaceError) {
    func fail(_ field: String, _ problem: String) -> HuggingFaceError {
      HuggingFaceError(message: "\(path): \(field) \(problem)")
    }
    let json = try HuggingFaceFolder.parseJSON(bytes, path: path)
    guard case .object = json else { throw fail("the file", "is not a JSON object") }

    // The model: BPE, over bytes (with a ByteLevel pre-tokenizer) or characters.
    guard let model = json["model"], case .object = model else {
      throw fail("model", "is missing or not an object")
    }
    let modelType = model["type"].flatMap { if case .string(let t) = $0 { t } else { nil } }
    guard modelType == "BPE" || (model["type"] == nil && model["merges"] != nil) else {
      throw fail("model.type", "'\(modelType ?? "?")' is not supported (lorac reads BPE)")
    }
    func modelFlag(_ name: String) throws(HuggingFaceError) -> Bool {
      switch model[name] {
      case nil, .null?: return false
      case .bool(let value)?: return value
      default: throw fail("model.\(name)", "must be true or false")
      }
    }
    let byteFallback = try modelFlag("byte_fallback")
    let fusesUnknown = try modelFlag("fuse_unk")
    var unknownText: String?
    switch model["unk_token"] {
    case nil, .null?: break
    case .string(let text)?: unknownText = text
    default: throw fail("model.unk_token", "must be a string or null")
    }
    for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
      switch model[field] {
      case nil, .null?, .string("")?: break
      default: throw fail("model.\(field)", "is not supported (lorac reads BPE without it)")
      }
    }
    if let dropout = model["dropout"], dropout != .null {
      throw fail("model.dropout", "is not supported (encoding must be deterministic)")
    }
    let ignoresMerges = try modelFlag("ignore_merges")
    guard case .object(let vocabulary)? = model["vocab"] else {
      throw fail("model.vocab", "is missing or not an object")
    }
    let maximumID = 1 << 22
    var byID: [Int: String] = [:]
    for (text, value) in vocabulary {
      guard case .integer(let id) = value, id >= 0, id < maximumID else {
        throw fail("model.vocab['\(text)']", "must be an id in 0..<\(maximumID)")
      }
      if byID[id] != nil { throw fail("model.vocab['\(text)']", "reuses id \(id)") }
      byID[id] = text
    }
    guard case .array(let mergeValues)? = model["merges"] else {
      throw fail("model.merges", "is missing or not an array")
    }
    var merges: [Pair: Int] = [:]
    // In file order, for the character model, whose texts compare by scalars.
    var mergeList: [Pair] = []
    for (rank, value) in mergeValues.enumerated() {
      var pair: Pair?
      switch value {
      case .string(let text):
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        if parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty {
          pair = Pair(left: String(parts[0]), right: String(parts[1]))
        }
      case .array(let sides):
        if sides.count == 2, case .string(let left) = sides[0], case .string(let right) = sides[1],
          !left.isEmpty, !right.isEmpty
        {
          pair = Pair(left: left, right: right)
        }
      default: break
      }
      guard let pair else {
        throw fail("model.merges[\(rank)]", "is not \"a b\" or [\"a\", \"b\"]")
      }
      if merges[pair] == nil { merges[pair] = rank }
      mergeList.append(pair)
    }

    // Added tokens.
    var added: [AddedToken] = []
    switch json["added_tokens"] {
    case nil, .null?: break
    case .array(let values)?:
      for (index, value) in values.enumerated() {
        let field = "added_tokens[\(index)]"
        guard case .integer(let id)? = value["id"], id >= 0, id < maximumID,
          case .string(let content)? = value["content"], !content.isEmpty
        else { throw fail(field, "needs an id in 0..<\(maximumID) and a non-empty content") }
        func flag(_ name: String) throws(HuggingFaceError) -> Bool {
          switch value[name] {
          case nil, .null?: return false
          case .bool(let flag)?: return flag
          default: throw fail("\(field).\(name)", "must be true or false")
          }
        }
        if try flag("single_word") {
          throw fail("\(field).single_word", "true is not supported")
        }
        if let text = byID[id], text != content {
          throw fail(field, "gives id \(id) to '\(content)', which model.vocab gives to '\(text)'")
        }
        byID[id] = content
        added.append(
          AddedToken(
            text: Array(content.unicodeScalars), id: Int32(id), special: try flag("special"),
            stripsLeft: try flag("lstrip"), stripsRight: try flag("rstrip"),
            normalized: try flag("normalized")))
      }
    default: throw fail("added_tokens", "must be an array")
    }
    guard let largest = byID.keys.max() else { throw fail("model.vocab", "is empty") }
    var tokens = [String](repeating: "", count: largest + 1)
    for (id, text) in byID { tokens[id] = text }

    // Normalizer, pre-tokenizer, post-processor, decoder.
    let normalization = try Tokenizer.normalization(json["normalizer"], field: "normalizer", fail)
    var steps: [PreTokenizerStep] = []
    var names: [String] = []
    try Tokenizer.preTokenizerSteps(
      json["pre_tokenizer"], field: "pre_tokenizer", into: &steps, names: &names, fail)
    let textIDs = Dictionary(tokens.enumerated().map { ($1, Int32($0)) }) { first, _ in first }
    let tokenModel: TokenModel
    var decoders: [TokenDecoder] = []
    if names.contains(where: { $0.hasPrefix("ByteLevel") }) {
      // Byte-level BPE: GPT-2's byte mapping, no unknown token.
      guard names.last?.hasPrefix("ByteLevel") == true,
        names.filter({ $0.hasPrefix("ByteLevel") }).count == 1
      else {
        throw fail("pre_tokenizer", "must end with one ByteLevel step (byte-level BPE)")
      }
      if names.contains("Metaspace") {
        throw fail("pre_tokenizer", "Metaspace with ByteLevel is not supported")
      }
      if byteFallback {
        throw fail("model.byte_fallback", "true is not supported with a ByteLevel pre-tokenizer")
      }
      if unknownText != nil {
        throw fail("model.unk_token", "is not supported with a ByteLevel pre-tokenizer")
      }
      try Tokenizer.checkDecoder(json["decoder"], field: "decoder", fail)
      tokenModel = .byteLevel
    } else {
      // SentencePiece-style BPE over characters.
      var unknown: Int32?
      if let unknownText {
        guard let id = exactVocabulary(tokens)[Array(unknownText.unicodeScalars)] else {
          throw fail("model.unk_token", "'\(unknownText)' is not in model.vocab")
        }
        unknown = id
      }
      let vocabulary = exactVocabulary(tokens)
      var merged: [UInt64: CharacterBPE.Merge] = [:]
      for (rank, pair) in mergeList.enumerated() {
        let left = Array(pair.left.unicodeScalars)
        let right = Array(pair.right.unicodeScalars)
        guard let leftID = vocabulary[left], let rightID = vocabulary[right],
          let result = vocabulary[left + right]
        else {
          throw fail(
            "model.merges[\(rank)]", "'\(pair.left) \(pair.right)' names a token not in model.vocab"
          )
        }
        let key = CharacterBPE.key(leftID, rightID)
        if merged[key] == nil { merged[key] = CharacterBPE.Merge(rank: Int32(rank), id: result) }
      }
      tokenModel = .characters(
        CharacterBPE(
          vocabulary: vocabulary, merges: merged, byteTokens: byteTokenIDs(vocabulary),
          byteFallback: byteFallback,
          unknown: unknown, fusesUnknown: fusesUnknown, ignoresMerges: ignoresMerges))
      try Tokenizer.decoderSteps(json["decoder"], field: "decoder", into: &decoders, fail)
    }
    let prefix = try Tokenizer.postProcessorPrefix(
      json["post_processor"], field: "post_processor", vocabulary: tokens.count, fail)

    // BOS, EOS and the chat template from the folder's other files.
    func tokenText(_ value: JSONValue?) -> String? {
      switch value {
      case .string(let text)?: return text
      case .object?: if case .string(let text)? = value?["content"] { return text }
      default: break
      }
      return nil
    }
    func configID(_ value: JSONValue?) -> Int32? {
      switch value {
      case .integer(let id)? where id >= 0 && id < tokens.count: return Int32(id)
      case .array(let values)?: return values.first.flatMap { configID($0) }
      default: return nil
      }
    }
    let bos =
      prefix ?? tokenText(tokenizerConfig?["bos_token"]).flatMap { textIDs[$0] }
      ?? configID(generationConfig?["bos_token_id"]) ?? configID(modelConfig?["bos_token_id"])
    let eos =
      tokenText(tokenizerConfig?["eos_token"]).flatMap { textIDs[$0] }
      ?? configID(generationConfig?["eos_token_id"]) ?? configID(modelConfig?["eos_token_id"])
    var template = chatTemplate
    if template == nil, case .string(let text)? = tokenizerConfig?["chat_template"] {
      template = text
    }
    self.init(
      tokens: tokens, merges: merges, added: added, beginOfSequence: bos, endOfSequence: eos,
      addsBeginOfSequence: prefix != nil, preTokenizer: names.joined(separator: "+"),
      steps: steps, normalization: normalization, ignoresMerges: ignoresMerges,
      chatTemplate: template, model: tokenModel, decoders: decoders)
  }

  private static func type(
    _ value: JSONValue, field: String, _ fail: (String, String) -> HuggingFaceError
  )
    throws(HuggingFaceError) -> String
  {
    guard case .string(let type)? = value["type"] else { throw fail("\(field).type", "is missing") }
    return type
  }

  private static func normalization(
    _ value: JSONValue?, field: String, _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) -> Normalization {
    guard let value, value != .null else { return .none }
    switch try type(value, field: field, fail) {
    case "NFC": return .nfc
    case "Prepend":
      guard case .string(let prefix)? = value["prepend"] else {
        throw fail("\(field).prepend", "must be a string")
      }
      return Normalization(steps: [.prepend(prefix)])
    case "Replace":
      let (pattern, content) = try replacement(value, field: field, fail)
      return Normalization(steps: [.replace(pattern, with: content)])
    case "Sequence":
      guard case .array(let parts)? = value["normalizers"] else {
        throw fail("\(field).normalizers", "must be an array")
      }
      var result = Normalization.none
      for (index, part) in parts.enumerated() {
        result.steps += try normalization(part, field: "\(field).normalizers[\(index)]", fail).steps
      }
      return result
    case let other:
      throw fail(
        "\(field).type", "'\(other)' is not supported (supported: NFC, Prepend, Replace, Sequence)")
    }
  }

  /// The pattern and content of a `Replace` normalizer or decoder (a `{"String": ...}` pattern).
  private static func replacement(
    _ value: JSONValue, field: String, _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) -> ([Unicode.Scalar], [Unicode.Scalar]) {
    guard case .string(let content)? = value["content"] else {
      throw fail("\(field).content", "must be a string")
    }
    if value["pattern"]?["Regex"] != nil {
      throw fail("\(field).pattern", "{\"Regex\": ...} is not supported (lorac replaces strings)")
    }
    guard case .string(let pattern)? = value["pattern"]?["String"], !pattern.isEmpty else {
      throw fail("\(field).pattern", "must be {\"String\": ...} with a non-empty string")
    }
    return (Array(pattern.unicodeScalars), Array(content.unicodeScalars))
  }

  private static func preTokenizerSteps(
    _ value: JSONValue?, field: String, into steps: inout [PreTokenizerStep],
    names: inout [String], _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) {
    guard let value, value != .null else { return }
    func flag(_ name: String, _ fallback: Bool) throws(HuggingFaceError) -> Bool {
      switch value[name] {
      case nil, .null?: return fallback
      case .bool(let flag)?: return flag
      default: throw fail("\(field).\(name)", "must be true or false")
      }
    }
    switch try type(value, field: field, fail) {
    case "Sequence":
      guard case .array(let parts)? = value["pretokenizers"] else {
        throw fail("\(field).pretokenizers", "must be an array")
      }
      for (index, part) in parts.enumerated() {
        try preTokenizerSteps(
          part, field: "\(field).pretokenizers[\(index)]", into: &steps, names: &names, fail)
      }
    case "ByteLevel":
      if try flag("add_prefix_space", true) {
        throw fail("\(field).add_prefix_space", "true is not supported")
      }
      if try flag("use_regex", true) {
        steps.append(.gpt2)
        names.append("ByteLevel(regex)")
      } else {
        names.append("ByteLevel")
      }
    case "Digits":
      let individual = try flag("individual_digits", false)
      steps.append(.digits(individual: individual))
      names.append(individual ? "Digits(individual)" : "Digits")
    case "Metaspace":
      guard case .string(let text)? = value["replacement"], text.unicodeScalars.count == 1,
        let replacement = text.unicodeScalars.first
      else { throw fail("\(field).replacement", "must be one character") }
      var prepend = Metaspace.Prepend.always
      switch value["prepend_scheme"] {
      case nil, .null?: break
      case .string(let scheme)?:
        guard let read = Metaspace.Prepend(rawValue: scheme) else {
          throw fail("\(field).prepend_scheme", "'\(scheme)' is not always, first or never")
        }
        prepend = read
      default: throw fail("\(field).prepend_scheme", "must be a string")
      }
      // The older spelling: add_prefix_space false prepends never.
      if try !flag("add_prefix_space", true) { prepend = .never }
      let split = try flag("split", true)
      steps.append(.metaspace(Metaspace(replacement: replacement, prepend: prepend, split: split)))
      names.append("Metaspace")
    case "Split":
      var behavior = SplitBehavior.isolated
      if case .string(let name)? = value["behavior"] {
        guard let read = SplitBehavior(rawValue: name) else {
          throw fail(
            "\(field).behavior",
            "'\(name)' is not supported (supported: Isolated, Removed, MergedWithPrevious, "
              + "MergedWithNext, Contiguous)")
        }
        behavior = read
      }
      if try flag("invert", false) { throw fail("\(field).invert", "true is not supported") }
      var pattern: SplitPattern
      do throws(HuggingFaceError) {
        if case .string(let regex)? = value["pattern"]?["Regex"] {
          pattern = try SplitPattern(regex: regex)
        } else if case .string(let text)? = value["pattern"]?["String"] {
          pattern = try SplitPattern(literal: text)
        } else {
          throw HuggingFaceError(message: "must be {\"Regex\": ...} or {\"String\": ...}")
        }
      } catch {
        throw fail("\(field).pattern", error.message)
      }
      pattern.behavior = behavior
      steps.append(.split(pattern))
      names.append("Split")
    case let other:
      throw fail(
        "\(field).type",
        "'\(other)' is not supported (supported: ByteLevel, Digits, Metaspace, Split, Sequence)")
    }
  }

  /// The id a post-processor adds before the text (nil: none).
  private static func postProcessorPrefix(
    _ value: JSONValue?, field: String, vocabulary: Int,
    _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) -> Int32? {
    guard let value, value != .null else { return nil }
    switch try type(value, field: field, fail) {
    case "ByteLevel": return nil
    case "Sequence":
      guard case .array(let parts)? = value["processors"] else {
        throw fail("\(field).processors", "must be an array")
      }
      var prefix: Int32?
      for (index, part) in parts.enumerated() {
        if let id = try postProcessorPrefix(
          part, field: "\(field).processors[\(index)]", vocabulary: vocabulary, fail)
        {
          if prefix != nil { throw fail(field, "adds tokens twice") }
          prefix = id
        }
      }
      return prefix
    case "TemplateProcessing":
      guard case .array(let items)? = value["single"] else {
        throw fail("\(field).single", "must be an array")
      }
      func isSequence(_ item: JSONValue) -> Bool {
        if case .string("A")? = item["Sequence"]?["id"] { return true }
        return false
      }
      if items.count == 1, isSequence(items[0]) { return nil }
      guard items.count == 2, isSequence(items[1]),
        case .string(let name)? = items[0]["SpecialToken"]?["id"]
      else {
        throw fail(
          "\(field).single", "is not supported (lorac adds at most one token before the text)")
      }
      guard case .array(let ids)? = value["special_tokens"]?[name]?["ids"], ids.count == 1,
        case .integer(let id) = ids[0], id >= 0, id < vocabulary
      else {
        throw fail("\(field).special_tokens['\(name)'].ids", "must be one token id")
      }
      return Int32(id)
    case let other:
      throw fail(
        "\(field).type",
        "'\(other)' is not supported (supported: ByteLevel, TemplateProcessing, Sequence)")
    }
  }

  /// The decoders of a SentencePiece-style tokenizer, in order.
  private static func decoderSteps(
    _ value: JSONValue?, field: String, into decoders: inout [TokenDecoder],
    _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) {
    guard let value, value != .null else {
      throw fail(field, "is missing (lorac decodes by the file's decoders)")
    }
    switch try type(value, field: field, fail) {
    case "Sequence":
      guard case .array(let parts)? = value["decoders"], !parts.isEmpty else {
        throw fail("\(field).decoders", "must be a non-empty array")
      }
      for (index, part) in parts.enumerated() {
        try decoderSteps(part, field: "\(field).decoders[\(index)]", into: &decoders, fail)
      }
    case "Replace":
      let (pattern, content) = try replacement(value, field: field, fail)
      decoders.append(.replace(pattern, with: content))
    case "ByteFallback": decoders.append(.byteFallback)
    case "Fuse": decoders.append(.fuse)
    case "Strip":
      guard case .string(let content)? = value["content"], content.unicodeScalars.count == 1,
        let character = content.unicodeScalars.first
      else { throw fail("\(field).content", "must be one character") }
      var counts: [Int] = []
      for name in ["start", "stop"] {
        guard case .integer(let count)? = value[name], count >= 0 else {
          throw fail("\(field).\(name)", "must be a count of characters")
        }
        counts.append(count)
      }
      decoders.append(.strip(character, start: counts[0], stop: counts[1]))
    case "Metaspace":
      guard case .string(let text)? = value["replacement"], text.unicodeScalars.count == 1,
        let replacement = text.unicodeScalars.first
      else { throw fail("\(field).replacement", "must be one character") }
      var prepends = true
      if case .string(let scheme)? = value["prepend_scheme"] { prepends = scheme != "never" }
      if case .bool(false)? = value["add_prefix_space"] { prepends = false }
      decoders.append(.metaspace(replacement, prepends: prepends))
    case let other:
      throw fail(
        "\(field).type",
        "'\(other)' is not supported without a ByteLevel pre-tokenizer (supported: Replace, "
          + "ByteFallback, Fuse, Strip, Metaspace, Sequence)")
    }
  }

  private static func checkDecoder(
    _ value: JSONValue?, field: String, _ fail: (String, String) -> HuggingFaceError
  ) throws(HuggingFaceError) {
    guard let value, value != .null else {
      throw fail(field, "is missing (lorac decodes byte-level BPE)")
    }
    switch try type(value, field: field, fail) {
    case "ByteLevel": return
    case "Sequence":
      guard case .array(let parts)? = value["decoders"], !parts.isEmpty else {
        throw fail("\(field).decoders", "must be a non-empty array")
      }
      for (index, part) in parts.enumerated() {
        try checkDecoder(part, field: "\(field).decoders[\(index)]", fail)
      }
    case let other:
      throw fail("\(field).type", "'\(other)' is not supported (supported: ByteLevel)")
    }
  }
}
