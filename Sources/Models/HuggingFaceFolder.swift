import Foundation
import IR

/// A malformed Hugging Face folder: the message names the file and the field.
public struct HuggingFaceError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// A Hugging Face checkpoint folder: `config.json`, the weights in `model.safetensors` or in the
/// shards `model.safetensors.index.json` names, and optionally `tokenizer.json`,
/// `tokenizer_config.json` and `generation_config.json`.
///
/// Every shard is memory-mapped and validated (`SafetensorsFile`); tensors are read by their
/// Hugging Face names (`model.layers.0.self_attn.q_proj.weight`) without copying. The index is
/// untrusted: a shard it names must be a plain file name inside the folder, hold every tensor the
/// index places in it, and no tensor may be in two shards.
public struct HuggingFaceFolder: Sendable {
  /// The folder.
  public let path: String
  /// `config.json`.
  public let config: JSONValue
  /// `tokenizer_config.json`, when present.
  public let tokenizerConfig: JSONValue?
  /// `generation_config.json`, when present.
  public let generationConfig: JSONValue?
  /// The shards, in the order of their file names.
  public let shards: [SafetensorsFile]
  /// The shard of each tensor, by Hugging Face name.
  private let shardOfTensor: [String: Int]

  /// Whether `path` is a folder (and so, for lorac, a Hugging Face checkpoint).
  public static func isFolder(_ path: String) -> Bool {
    var isDirectory: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
      && isDirectory.boolValue
  }

  /// Opens the folder at `path`: reads its JSON files and maps its weights.
  ///
  /// - Throws: `HuggingFaceError` naming the file (and field) that is missing or malformed.
  public init(path: String) throws(HuggingFaceError) {
    self.path = path
    let folder = URL(fileURLWithPath: path)
    func file(_ name: String) -> String { folder.appendingPathComponent(name).path }
    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file(name)) }
    guard exists("config.json") else {
      throw HuggingFaceError(
        message: "\(path): no config.json (a model is a GGUF file or a Hugging Face folder)")
    }
    config = try HuggingFaceConfig(
      json: HuggingFaceFolder.readJSON(file("config.json")), path: file("config.json")
    ).json
    tokenizerConfig =
      exists("tokenizer_config.json")
      ? try HuggingFaceFolder.readJSON(file("tokenizer_config.json")) : nil
    generationConfig =
      exists("generation_config.json")
      ? try HuggingFaceFolder.readJSON(file("generation_config.json")) : nil
    var shardNames: [String]
    var placement: [String: String] = [:]
    if exists("model.safetensors.index.json") {
      let indexPath = file("model.safetensors.index.json")
      placement = try HuggingFaceFolder.shardIndex(
        HuggingFaceFolder.readBytes(indexPath), path: indexPath)
      shardNames = Array(Set(placement.values)).sorted()
    } else if exists("model.safetensors") {
      shardNames = ["model.safetensors"]
    } else {
      throw HuggingFaceError(
        message: "\(path): no model.safetensors or model.safetensors.index.json")
    }
    var shards: [SafetensorsFile] = []
    var shardOfTensor: [String: Int] = [:]
    for name in shardNames {
      guard exists(name) else {
        throw HuggingFaceError(
          message:
            "\(file("model.safetensors.index.json")): weight_map names '\(name)', which is not in the folder"
        )
      }
      let shard: SafetensorsFile
      do {
        shard = try SafetensorsFile(path: file(name))
      } catch {
        throw HuggingFaceError(message: error.message)
      }
      for entry in shard.entries {
        if let other = shardOfTensor[entry.name] {
          throw HuggingFaceError(
            message: "\(path): tensor '\(entry.name)' is in both \(shardNames[other]) and \(name)")
        }
        shardOfTensor[entry.name] = shards.count
      }
      shards.append(shard)
    }
    for (tensor, shard) in placement.sorted(by: { $0.key < $1.key }) {
      guard let index = shardOfTensor[tensor], shardNames[index] == shard else {
        throw HuggingFaceError(
          message:
            "\(file("model.safetensors.index.json")): weight_map places '\(tensor)' in \(shard), which does not hold it"
        )
      }
    }
    self.shards = shards
    self.shardOfTensor = shardOfTensor
  }

  /// Reads `model.safetensors.index.json`: its `weight_map` from tensor name to shard file name.
  ///
  /// - Throws: `HuggingFaceError` naming `path` when the JSON is malformed, `weight_map` is missing
  ///   or not an object of strings, or a shard is not a plain `.safetensors` file name (no folder,
  ///   no `..`).
  public static func shardIndex(_ bytes: [UInt8], path: String) throws(HuggingFaceError)
    -> [String: String]
  {
    let json = try parseJSON(bytes, path: path)
    guard case .object(let fields)? = json["weight_map"] else {
      throw HuggingFaceError(message: "\(path): weight_map is missing or not an object")
    }
    var placement: [String: String] = [:]
    for (tensor, value) in fields {
      guard case .string(let shard) = value else {
        throw HuggingFaceError(message: "\(path): weight_map['\(tensor)'] is not a file name")
      }
      guard shard.hasSuffix(".safetensors"), !shard.contains("/"), !shard.contains("\\"),
        !shard.hasPrefix("."), !shard.contains("\0")
      else {
        throw HuggingFaceError(
          message:
            "\(path): weight_map['\(tensor)'] '\(shard)' is not a .safetensors file name in the folder"
        )
      }
      placement[tensor] = shard
    }
    if placement.isEmpty { throw HuggingFaceError(message: "\(path): weight_map is empty") }
    return placement
  }

  /// The safetensors dtypes lorac reads weights in.
  public static let dtypes: [String: DType] = ["F32": .f32, "F16": .f16, "BF16": .bf16]

  /// `config.json`'s fields, for a family to read.
  public var configFields: HuggingFaceConfig {
    // `init` checked that config.json holds an object.
    HuggingFaceConfig(
      checked: config, path: URL(fileURLWithPath: path).appendingPathComponent("config.json").path)
  }

  /// Whether the folder holds a tensor of this Hugging Face name.
  public func contains(_ name: String) -> Bool { shardOfTensor[name] != nil }

  /// The entry (dtype, shape, offsets) of a tensor.
  public func entry(_ name: String) -> SafetensorsFile.Entry? {
    shardOfTensor[name].flatMap { shards[$0].entry(name) }
  }

  /// Every tensor's entry, by shard and then as each shard lists them.
  public var entries: [SafetensorsFile.Entry] { shards.flatMap(\.entries) }

  /// A tensor sharing its shard's mapped memory.
  public func tensor(named name: String) throws(HuggingFaceError) -> HostTensor {
    guard let shard = shardOfTensor[name] else {
      throw HuggingFaceError(message: "\(path): no tensor '\(name)' in the model's safetensors")
    }
    do {
      return try shards[shard].tensor(named: name)
    } catch {
      throw HuggingFaceError(message: error.message)
    }
  }

  /// The total bytes of the shards' tensors.
  public var tensorBytes: Int { entries.map { $0.end - $0.begin }.reduce(0, +) }

  // MARK: - JSON files

  /// The bytes of a file (the JSON files of a folder are small: at most 64 MB is read).
  static func readBytes(_ path: String) throws(HuggingFaceError) -> [UInt8] {
    let mapping: FileMapping
    do {
      mapping = try FileMapping(path: path)
    } catch {
      throw HuggingFaceError(message: error.message)
    }
    guard mapping.bytes.count <= 64 << 20 else {
      throw HuggingFaceError(
        message: "\(path): \(mapping.bytes.count) bytes is too large for a JSON file")
    }
    return Array(mapping.bytes)
  }

  static func readJSON(_ path: String) throws(HuggingFaceError) -> JSONValue {
    try parseJSON(readBytes(path), path: path)
  }

  static func parseJSON(_ bytes: [UInt8], path: String) throws(HuggingFaceError) -> JSONValue {
    do {
      return try JSONValue.parse(bytes)
    } catch {
      throw HuggingFaceError(message: "\(path): \(error.message)")
    }
  }
}
