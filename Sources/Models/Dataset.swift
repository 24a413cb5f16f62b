import Foundation
import IR

/// A training example as token ids with per-token loss weights (0 for prompt or padding).
public struct TrainingExample: Hashable, Sendable {
  public var ids: [Int32]
  /// `weights[t]` weighs the loss of predicting `ids[t + 1]`.
  public var weights: [Float]

  public init(ids: [Int32], weights: [Float]) {
    self.ids = ids
    self.weights = weights
  }
}

/// A bad data line: names the file and the line.
public struct DatasetError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// Training data: jsonl files of `{"prompt", "completion"}` (loss on the completion),
/// `{"text"}` (loss on everything) or `{"messages": [{"role", "content"}]}` (the chat template;
/// loss on the assistant turns, the marker that ends each included), and the tutorials' synthetic
/// `mystery_function` task.
public enum Dataset {
  /// The JSON object on every non-blank line of a jsonl file, with its line number (from 1).
  ///
  /// - Throws: `DatasetError` for a file that cannot be read (naming it) and for a line that is
  ///   not a JSON object (naming the file and the line).
  public static func jsonLines(path: String) throws(DatasetError) -> [(
    line: Int, object: JSONValue
  )] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw DatasetError(message: "\(path): cannot open: No such file or directory")
    }
    if isDirectory.boolValue { throw DatasetError(message: "\(path): is a directory") }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw DatasetError(message: "\(path): cannot read the file")
    }
    return try jsonLines(data, path: path)
  }

  /// The JSON objects of jsonl bytes already in memory, as `jsonLines(path:)` reads a file;
  /// `path` names them in messages.
  public static func jsonLines(_ data: Data, path: String) throws(DatasetError) -> [(
    line: Int, object: JSONValue
  )] {
    var objects: [(line: Int, object: JSONValue)] = []
    var lineNumber = 0
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
      lineNumber += 1
      if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
      let json: JSONValue
      do {
        json = try JSONValue.parse(Array(line))
      } catch {
        throw DatasetError(message: "\(path):\(lineNumber): not valid JSON (\(error.message))")
      }
      guard case .object = json else {
        throw DatasetError(
          message: "\(path):\(lineNumber): expected a JSON object, got \(json.kindName)")
      }
      objects.append((lineNumber, json))
    }
    if objects.isEmpty { throw DatasetError(message: "\(path): no examples") }
    return objects
  }

  /// Reads a jsonl file; every bad line is reported with its number.
  public static func load(
    path: String, tokenizer: Tokenizer, template: ChatTemplate?
  ) throws(DatasetError) -> [TrainingExample] {
    try examples(jsonLines(path: path), path: path, tokenizer: tokenizer, template: template)
  }

  /// Reads jsonl bytes already in memory, as `load` reads a file; `path` names them in messages.
  public static func parse(
    _ data: Data, path: String, tokenizer: Tokenizer, template: ChatTemplate?
  ) throws(DatasetError) -> [TrainingExample] {
    try examples(
      jsonLines(data, path: path), path: path, tokenizer: tokenizer, template: template)
  }

  /// The training examples of numbered JSON objects.
  private static func examples(
    _ lines: [(line: Int, object: JSONValue)], path: String, tokenizer: Tokenizer,
    template: ChatTemplate?
  ) throws(DatasetError) -> [TrainingExample] {
    var examples: [TrainingExample] = []
    for (lineNumber, json) in lines {
      func fail(_ message: String) -> DatasetError {
        DatasetError(message: "\(path):\(lineNumber): \(message)")
      }
      // A known field of the wrong type is named, rather than the line read as another format.
      for key in ["prompt", "completion", "text"] {
        guard let value = json[key] else { continue }
        if case .string = value { continue }
        throw fail("\"\(key)\" must be a string, got \(value.kindName)")
      }
      if let value = json["messages"], !value.isArray {
        throw fail("\"messages\" must be an array, got \(value.kindName)")
      }
      if case .string(let prompt)? = json["prompt"] {
        guard case .string(let completion)? = json["completion"] else {
          throw fail("\"prompt\" needs a string \"completion\"")
        }
        examples.append(
          Dataset.completion(prompt: prompt, completion: completion, tokenizer: tokenizer))
      } else if case .string(let text)? = json["text"] {
        var ids = tokenizer.encode(text)
        ids.append(tokenizer.endOfSequence ?? 0)
        examples.append(
          TrainingExample(ids: ids, weights: [Float](repeating: 1, count: ids.count - 1)))
      } else if case .array(let items)? = json["messages"] {
        guard let template else {
          throw fail(
            "\"messages\" needs a model with a chat template lorac recognises (ChatML, Llama 3, "
              + "Gemma, Mistral [INST])")
        }
        var messages: [ChatMessage] = []
        for (index, item) in items.enumerated() {
          guard case .string(let role)? = item["role"], case .string(let content)? = item["content"]
          else {
            throw fail("message \(index + 1) needs string \"role\" and \"content\"")
          }
          messages.append(ChatMessage(role: role, content: content))
        }
        guard messages.contains(where: { $0.role == "assistant" }) else {
          throw fail("\"messages\" has no assistant turn to learn")
        }
        do {
          examples.append(try chat(messages, template: template, tokenizer: tokenizer))
        } catch {
          throw fail("the chat template refuses the messages: \(error.message)")
        }
      } else {
        throw fail("expected \"prompt\"+\"completion\", \"text\" or \"messages\"")
      }
      if examples[examples.count - 1].ids.count < 2 {
        throw fail("the example has fewer than 2 tokens")
      }
    }
    return examples
  }

  /// Prompt tokens unweighted, completion tokens and the end-of-sequence token weighted.
  public static func completion(prompt: String, completion: String, tokenizer: Tokenizer)
    -> TrainingExample
  {
    let promptIDs = tokenizer.encode(prompt)
    let completionIDs = tokenizer.encode(completion) + [tokenizer.endOfSequence ?? 0]
    let ids = promptIDs + completionIDs
    let weights = (0..<(ids.count - 1)).map { Float($0 + 1 >= promptIDs.count ? 1 : 0) }
    return TrainingExample(ids: ids, weights: weights)
  }

  /// A chat rendered by its template and tokenized whole; the tokens of the assistant turns
  /// (content and the marker that ends the turn) are weighted.
  ///
  /// A segment's tokens are found by encoding the text up to its start and its end: the tokens
  /// both encodings share with the whole. A token that spans a segment's start belongs to it.
  static func chat(_ messages: [ChatMessage], template: ChatTemplate, tokenizer: Tokenizer)
    throws(ChatTemplateError) -> TrainingExample
  {
    let segments = try template.segments(messages, addGenerationPrompt: false)
    let ids = tokenizer.encode(segments.map(\.text).joined(), parseSpecial: true)
    func shared(_ text: String) -> Int {
      zip(tokenizer.encode(text, parseSpecial: true), ids).prefix { $0 == $1 }.count
    }
    var weighted = [Bool](repeating: false, count: ids.count)
    var text = ""
    var start = 0
    for segment in segments {
      text += segment.text
      let end = max(start, shared(text))
      if segment.learned { for index in start..<end { weighted[index] = true } }
      start = end
    }
    let weights = (0..<max(0, ids.count - 1)).map { Float(weighted[$0 + 1] ? 1 : 0) }
    return TrainingExample(ids: ids, weights: weights)
  }

  /// The tutorials' task: `>>> mystery_function(a, b)\n` completed by `a + b`, with a, b < 1000.
  public static func mysteryFunction(count: Int, seed: UInt64) -> [(prompt: String, answer: String)]
  {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in
      let a = Int(generator.next() % 1000)
      let b = Int(generator.next() % 1000)
      return (">>> mystery_function(\(a), \(b))\n", String(a + b))
    }
  }
}

extension JSONValue {
  /// What kind of value this is, for messages: `a string`, `a number`, `an object`, ...
  public var kindName: String {
    switch self {
    case .object: "an object"
    case .array: "an array"
    case .string: "a string"
    case .integer, .number: "a number"
    case .bool: "a boolean"
    case .null: "null"
    }
  }

  /// Whether this is a JSON array.
  public var isArray: Bool {
    if case .array = self { return true }
    return false
  }
}
