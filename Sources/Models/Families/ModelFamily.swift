/// The model families lorac reads from Hugging Face folders, by config.json's `model_type`.
///
/// One case and one file (`Families/<Name>Family.swift`) each. Every family is traced by
/// `Llama.trace` from the `LlamaConfig` its file reads (its `architecture` picks the block, which
/// for GPT-2 and GPT-NeoX lives in the family's file), with the same value names.
public enum ModelFamily: String, CaseIterable, Sendable {
  case gpt2
  case gptNeoX = "gpt_neox"
  case llama
  case mistral
  case qwen2

  /// The family `model_type` names.
  /// - Throws: `HuggingFaceError` naming config.json and `model_type` when it is missing or not a
  ///   family lorac reads.
  public init(_ fields: HuggingFaceConfig) throws(HuggingFaceError) {
    let type = try fields.modelType()
    guard let family = ModelFamily(rawValue: type) else {
      let names = ModelFamily.allCases.map(\.rawValue).joined(separator: ", ")
      throw fields.fail("model_type", "'\(type)' is not supported (supported: \(names))")
    }
    self = family
  }

  /// The hyper-parameters of a config.json of this family.
  public func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    switch self {
    case .llama: try LlamaFamily.config(fields)
    case .mistral: try MistralFamily.config(fields)
    case .qwen2: try Qwen2Family.config(fields)
    case .gpt2: try Gpt2Family.config(fields)
    case .gptNeoX: try GPTNeoXFamily.config(fields)
    }
  }

  /// The longest sequence the model is made for (nil when config.json does not say): its
  /// `max_position_embeddings`, or for Mistral the sliding window when that is shorter.
  public func contextLength(_ fields: HuggingFaceConfig) -> Int? {
    switch self {
    case .llama, .qwen2, .gptNeoX: ModelFamily.maximumPositions(fields)
    case .mistral: MistralFamily.contextLength(fields)
    case .gpt2: Gpt2Family.contextLength(fields)
    }
  }

  /// The Hugging Face tensor names a weight the trace declares by its GGUF name may have in a
  /// folder of a model of `architecture`, the usual first; empty when the trace never declares it.
  public static func huggingFaceNames(
    ofGGUF name: String, architecture: LlamaConfig.Architecture
  ) -> [String] {
    switch architecture {
    case .llama: LlamaFamily.huggingFaceName(ofGGUF: name).map { [$0] } ?? []
    case .gpt2: Gpt2Family.huggingFaceNames(ofGGUF: name)
    case .gptNeoX: GPTNeoXFamily.huggingFaceName(ofGGUF: name).map { [$0] } ?? []
    }
  }

  /// `max_position_embeddings` when it is a positive integer.
  static func maximumPositions(_ fields: HuggingFaceConfig) -> Int? {
    guard case .integer(let length)? = fields.json["max_position_embeddings"], length > 0 else {
      return nil
    }
    return length
  }

  /// Reads a config.json's family and hyper-parameters.
  public static func config(_ fields: HuggingFaceConfig) throws(HuggingFaceError) -> LlamaConfig {
    try ModelFamily(fields).config(fields)
  }
}
