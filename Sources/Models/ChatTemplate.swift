/// One message of a chat.
public struct ChatMessage: Hashable, Sendable, Codable {
  public var role: String
  public var content: String

  public init(role: String, content: String) {
    self.role = role
    self.content = content
  }
}

/// A chat template lorac cannot use: not one it recognises, or a conversation it refuses.
public struct ChatTemplateError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// A chat format recognised from a model's Jinja chat template, rendered as transformers'
/// `apply_chat_template` renders that template.
///
/// The template comes from tokenizer_config.json's `chat_template`, chat_template.jinja or a
/// GGUF's `tokenizer.chat_template`:
///
/// | family | turn | recognised by |
/// | --- | --- | --- |
/// | ChatML (SmolLM2, Qwen2) | `<|im_start|>role\ncontent<|im_end|>\n`, the template's default system message first | `<|im_start|>`, `<|im_end|>` |
/// | Llama 3 | `<|start_header_id|>role<|end_header_id|>\n\n` + trimmed content + `<|eot_id|>`, BOS first | `<|start_header_id|>`, `<|eot_id|>` |
/// | Gemma | `<start_of_turn>role\n` + trimmed content + `<end_of_turn>\n` (assistant is `model`), BOS first; no system role, user first, turns alternate | `<start_of_turn>`, `<end_of_turn>` |
/// | Mistral [INST] (v0.1, Mixtral) | `[INST] content [/INST]`, then `content` + EOS, BOS first; user and assistant only, alternating | `'[INST] ' + message['content'] + ' [/INST]'` |
///
/// Variants these renderings would get wrong are refused by name: Llama 3.1's dated system
/// header, Gemma 3's system prefix, Llama 2's `<<SYS>>`, other `[INST]` spellings.
public struct ChatTemplate: Sendable {
  /// The families lorac renders.
  public enum Family: String, Sendable, CaseIterable {
    case chatML = "ChatML"
    case llama3 = "Llama 3"
    case gemma = "Gemma"
    case mistral = "Mistral [INST]"
  }

  /// The family's short name in JSON output: `chatml`, `llama3`, `gemma`, `mistral`.
  public var identifier: String {
    switch family {
    case .chatML: "chatml"
    case .llama3: "llama3"
    case .gemma: "gemma"
    case .mistral: "mistral"
    }
  }

  /// A piece of a rendered chat, and whether training learns it (an assistant's content and the
  /// marker that ends its turn).
  public struct Segment: Hashable, Sendable {
    public var text: String
    public var learned: Bool
  }

  public var family: Family
  /// The system message inserted when a chat does not start with one (ChatML; nil: none).
  public var defaultSystem: String?
  /// The texts of the BOS and EOS tokens the template writes (`bos_token`, `eos_token`; "" when
  /// the tokenizer has none).
  public var beginOfSequence: String
  public var endOfSequence: String

  /// A ChatML format with its default system message.
  public init(defaultSystem: String?) {
    family = .chatML
    self.defaultSystem = defaultSystem
    beginOfSequence = ""
    endOfSequence = ""
  }

  /// Recognises `template` (with no BOS and EOS texts); nil when lorac does not.
  public init?(template: String) {
    guard let recognised = try? ChatTemplate(recognizing: template) else { return nil }
    self = recognised
  }

  /// Recognises the family of `template`, whose `bos_token` and `eos_token` are the given texts.
  ///
  /// - Throws: `ChatTemplateError` naming the template (its first characters) when it is not one
  ///   of the families, or a variant of one that lorac does not render.
  public init(
    recognizing template: String, beginOfSequence: String? = nil, endOfSequence: String? = nil
  ) throws(ChatTemplateError) {
    self.beginOfSequence = beginOfSequence ?? ""
    self.endOfSequence = endOfSequence ?? ""
    defaultSystem = nil
    func variant(_ name: String) -> ChatTemplateError {
      ChatTemplateError(
        message: "the chat template is \(name), which lorac does not render yet "
          + "(template: \(ChatTemplate.excerpt(template)))")
    }
    if template.contains("<|im_start|>") && template.contains("<|im_end|>") {
      family = .chatML
      let marker = "<|im_start|>system\n"
      if let start = template.range(of: marker),
        let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex)
      {
        defaultSystem = String(template[start.upperBound..<end.lowerBound])
      }
    } else if template.contains("<|start_header_id|>") && template.contains("<|eot_id|>") {
      if template.contains("Cutting Knowledge Date") {
        throw variant("Llama 3.1's (a dated system header)")
      }
      family = .llama3
    } else if template.contains("<start_of_turn>") && template.contains("<end_of_turn>") {
      if template.contains("first_user_prefix") { throw variant("Gemma 3's (a system prefix)") }
      family = .gemma
    } else if template.contains("[INST]") && template.contains("[/INST]") {
      if template.contains("<<SYS>>") { throw variant("Llama 2's (<<SYS>>)") }
      guard template.contains("'[INST] ' + message['content'] + ' [/INST]'"),
        template.contains("message['content'] + eos_token")
      else { throw variant("an [INST] variant other than Mistral v0.1's") }
      family = .mistral
    } else {
      throw ChatTemplateError(
        message: "the chat template is not one lorac recognises (ChatML, Llama 3, Gemma, "
          + "Mistral [INST]): \(ChatTemplate.excerpt(template))")
    }
  }

  /// The start of a template, on one line, for messages.
  static func excerpt(_ template: String) -> String {
    let line = template.replacingOccurrences(of: "\n", with: "\\n")
    return line.count > 60 ? "'\(line.prefix(60))...'" : "'\(line)'"
  }

  /// The chat as text; with `addGenerationPrompt` it ends with the assistant's turn opened.
  ///
  /// - Throws: `ChatTemplateError` where the template raises (Gemma and Mistral: a system
  ///   message, roles that do not alternate).
  public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool)
    throws(ChatTemplateError) -> String
  {
    try segments(messages, addGenerationPrompt: addGenerationPrompt).map(\.text).joined()
  }

  /// The rendered chat in pieces, the learned ones marked.
  public func segments(_ messages: [ChatMessage], addGenerationPrompt: Bool)
    throws(ChatTemplateError) -> [Segment]
  {
    var result: [Segment] = []
    func add(_ text: String, learned: Bool = false) {
      if !text.isEmpty { result.append(Segment(text: text, learned: learned)) }
    }
    func alternate(_ index: Int, _ message: ChatMessage) throws(ChatTemplateError) {
      if (message.role == "user") != (index % 2 == 0) {
        throw ChatTemplateError(
          message: "Conversation roles must alternate user/assistant/user/assistant/...")
      }
    }
    switch family {
    case .chatML:
      if let defaultSystem, let first = messages.first, first.role != "system" {
        add("<|im_start|>system\n\(defaultSystem)<|im_end|>\n")
      }
      for message in messages {
        let learned = message.role == "assistant"
        add("<|im_start|>\(message.role)\n")
        add(message.content + "<|im_end|>", learned: learned)
        add("\n")
      }
      if addGenerationPrompt { add("<|im_start|>assistant\n") }
    case .llama3:
      for (index, message) in messages.enumerated() {
        let header = "<|start_header_id|>\(message.role)<|end_header_id|>\n\n"
        add((index == 0 ? beginOfSequence : "") + header)
        add(
          ChatTemplate.trimmed(message.content) + "<|eot_id|>", learned: message.role == "assistant"
        )
      }
      if addGenerationPrompt { add("<|start_header_id|>assistant<|end_header_id|>\n\n") }
    case .gemma:
      add(beginOfSequence)
      if messages.first?.role == "system" {
        throw ChatTemplateError(message: "System role not supported")
      }
      for (index, message) in messages.enumerated() {
        try alternate(index, message)
        let role = message.role == "assistant" ? "model" : message.role
        add("<start_of_turn>\(role)\n")
        add(ChatTemplate.trimmed(message.content) + "<end_of_turn>", learned: role == "model")
        add("\n")
      }
      if addGenerationPrompt { add("<start_of_turn>model\n") }
    case .mistral:
      add(beginOfSequence)
      for (index, message) in messages.enumerated() {
        try alternate(index, message)
        switch message.role {
        case "user": add("[INST] \(message.content) [/INST]")
        case "assistant": add(message.content + endOfSequence, learned: true)
        default:
          throw ChatTemplateError(message: "Only user and assistant roles are supported!")
        }
      }
    }
    return result
  }

  /// Jinja's `trim`: Python's `str.strip()`, whose whitespace is Unicode's White_Space and the
  /// separators U+001C...U+001F.
  static func trimmed(_ text: String) -> String {
    func isSpace(_ scalar: Unicode.Scalar) -> Bool {
      scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }
    var scalars = Array(text.unicodeScalars)
    while let last = scalars.last, isSpace(last) { scalars.removeLast() }
    let start = scalars.firstIndex { !isSpace($0) } ?? scalars.count
    return String(String.UnicodeScalarView(scalars[start...]))
  }
}

extension Tokenizer {
  /// The model's chat template recognised, with its BOS and EOS texts; nil when it has none.
  ///
  /// - Throws: `ChatTemplateError` naming a template lorac does not recognise.
  public func chatFormat() throws(ChatTemplateError) -> ChatTemplate? {
    guard let chatTemplate else { return nil }
    func text(_ id: Int32?) -> String? {
      guard let id, id >= 0, Int(id) < tokens.count else { return nil }
      return tokens[Int(id)]
    }
    return try ChatTemplate(
      recognizing: chatTemplate, beginOfSequence: text(beginOfSequence),
      endOfSequence: text(endOfSequence))
  }
}
