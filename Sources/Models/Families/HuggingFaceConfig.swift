/// The fields of a Hugging Face `config.json`, read with errors that name the file and the field.
public struct HuggingFaceConfig: Sendable {
  /// The parsed `config.json`.
  public let json: JSONValue
  /// The file, for messages.
  public let path: String

  public init(json: JSONValue, path: String) throws(HuggingFaceError) {
    guard case .object = json else {
      throw HuggingFaceError(message: "\(path): not a JSON object")
    }
    self.json = json
    self.path = path
  }

  /// Fields of a JSON object already checked to be one.
  init(checked json: JSONValue, path: String) {
    self.json = json
    self.path = path
  }

  /// Parses the bytes of a `config.json`.
  public init(bytes: [UInt8], path: String) throws(HuggingFaceError) {
    try self.init(json: HuggingFaceFolder.parseJSON(bytes, path: path), path: path)
  }

  /// An error naming the file and the field.
  public func fail(_ field: String, _ problem: String) -> HuggingFaceError {
    HuggingFaceError(message: "\(path): \(field) \(problem)")
  }

  /// `model_type`.
  public func modelType() throws(HuggingFaceError) -> String {
    guard case .string(let type)? = json["model_type"] else {
      throw fail("model_type", "is missing or not a string")
    }
    return type
  }

  /// A positive integer field; `fallback` when the field is absent or null.
  public func positive(_ field: String, fallback: Int? = nil) throws(HuggingFaceError) -> Int {
    switch json[field] {
    case .integer(let value)? where value > 0 && value <= 1 << 40: return value
    case nil, .null?:
      if let fallback { return fallback }
      throw fail(field, "is missing")
    default: throw fail(field, "must be a positive integer")
    }
  }

  /// A positive finite number field; `fallback` when the field is absent or null.
  public func number(_ field: String, in object: JSONValue? = nil, fallback: Double)
    throws(HuggingFaceError) -> Double
  {
    switch (object ?? json)[field] {
    case .integer(let value)? where value > 0: return Double(value)
    case .number(let value)? where value > 0 && value.isFinite: return value
    case nil, .null?: return fallback
    default: throw fail(field, "must be a positive number")
    }
  }

  /// A boolean field; `fallback` when the field is absent or null.
  public func flag(_ field: String, fallback: Bool) throws(HuggingFaceError) -> Bool {
    switch json[field] {
    case .bool(let value)?: return value
    case nil, .null?: return fallback
    default: throw fail(field, "must be true or false")
    }
  }

  /// A string field, nil when absent or null.
  public func string(_ field: String) throws(HuggingFaceError) -> String? {
    switch json[field] {
    case .string(let value)?: return value
    case nil, .null?: return nil
    default: throw fail(field, "must be a string")
    }
  }

  /// RoPE's base frequency: `rope_theta`, or `rope_parameters.rope_theta` (transformers 5);
  /// a RoPE scaling other than the default (`rope_scaling`, `rope_parameters.rope_type`) is an
  /// error naming it, never ignored.
  public func ropeTheta(fallback: Double) throws(HuggingFaceError) -> Double {
    for field in ["rope_scaling", "rope_parameters"] {
      guard let value = json[field], value != .null else { continue }
      guard case .object = value else { throw fail(field, "must be an object") }
      let type = value["rope_type"] ?? value["type"]
      if let type, type != .string("default") {
        let name: String
        if case .string(let text) = type { name = text } else { name = "\(type)" }
        throw fail("\(field).rope_type", "'\(name)' is not supported (lorac reads default RoPE)")
      }
      if field == "rope_parameters", value["rope_theta"] != nil {
        return try number("rope_theta", in: value, fallback: fallback)
      }
    }
    return try number("rope_theta", fallback: fallback)
  }
}
