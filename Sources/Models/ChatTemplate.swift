/// One message of a chat.
public struct ChatMessage: Hashable, Sendable, Codable {
  public var role: String
  public var content: String

  public init(role: String, content: String) {
    self.role = role
    self.content = content
  }
}

/// The ChatML chat format (`<|im_start|>role\ncontent<|im_end|>\n`) that SmolLM2's GGUF template
/// describes, including its default system message when the first message is not a system one.
public struct ChatTemplate: Sendable {
  /// The system message inserted when a chat does not start with one (nil: none).
  public var defaultSystem: String?

  public init(defaultSystem: String?) { self.defaultSystem = defaultSystem }

  /// Recognises a ChatML template in a GGUF's `tokenizer.chat_template` and reads its default
  /// system message; nil when the template is not ChatML.
  public init?(template: String) {
    guard template.contains("<|im_start|>"), template.contains("<|im_end|>") else { return nil }
    let marker = "<|im_start|>system\n"
    if let start = template.range(of: marker),
      let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex)
    {
      defaultSystem = String(template[start.upperBound..<end.lowerBound])
    } else {
      defaultSystem = nil
    }
  }

  /// The chat as text; with `addGenerationPrompt` it ends with the assistant's turn opened.
  public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
    var text = ""
    if let defaultSystem, messages.first?.role != "system" {
      text += "<|im_start|>system\n\(defaultSystem)<|im_end|>\n"
    }
    for message in messages {
      text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n"
    }
    if addGenerationPrompt { text += "<|im_start|>assistant\n" }
    return text
  }
}
