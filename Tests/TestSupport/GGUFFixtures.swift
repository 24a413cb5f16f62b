import Foundation
import Models

/// The GGUF fixture `name` of `folder`, written from its committed text form `name.json`
/// (Tests/Fixtures/gguf_parts.py: the metadata and the tensors' bytes) by lorac's GGUF writer into
/// a temporary folder of this process, once; no binary model file is tracked by git.
///
/// `fixtureGGUF(huggingFaceFixtures, "tiny-neox-sequential.gguf")` reads
/// `tiny-neox-sequential.gguf.json` and returns the path of the GGUF it describes.
public func fixtureGGUF(_ folder: URL, _ name: String) throws -> String {
  let source = folder.appendingPathComponent(name + ".json")
  return try GGUFFixtureCache.shared.path(for: source, name: name)
}

private final class GGUFFixtureCache: @unchecked Sendable {
  static let shared = GGUFFixtureCache()
  private let lock = NSLock()
  private var written: [String: String] = [:]
  private let folder = URL(fileURLWithPath: NSTemporaryDirectory())
    .appendingPathComponent("lorac-gguf-fixtures-\(ProcessInfo.processInfo.processIdentifier)")

  func path(for source: URL, name: String) throws -> String {
    lock.lock()
    defer { lock.unlock() }
    if let path = written[source.path] { return path }
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let target = folder.appendingPathComponent(
      source.deletingLastPathComponent().lastPathComponent + "-" + name)
    let writer = try GGUFFixtureCache.writer(from: Data(contentsOf: source), source: source.path)
    try writer.write(to: target.path)
    written[source.path] = target.path
    return target.path
  }

  private struct FixtureError: Error, CustomStringConvertible {
    var description: String
  }

  private static func writer(from data: Data, source: String) throws -> GGUFFileWriter {
    guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
      let metadata = object["metadata"] as? [[String: Any]],
      let tensors = object["tensors"] as? [[String: Any]]
    else { throw FixtureError(description: "\(source): not a GGUF fixture (metadata, tensors)") }
    var writer = GGUFFileWriter()
    for entry in metadata {
      guard let key = entry["key"] as? String, let type = entry["type"] as? String else {
        throw FixtureError(description: "\(source): a metadata entry without key or type")
      }
      if type == "array" {
        guard let item = entry["item"] as? String, let values = entry["value"] as? [Any] else {
          throw FixtureError(description: "\(source): \(key): an array without item or value")
        }
        writer.set(key, .array(try values.map { try value($0, type: item, key: key) }))
      } else {
        writer.set(key, try value(entry["value"] as Any, type: type, key: key))
      }
    }
    for tensor in tensors {
      guard let name = tensor["name"] as? String, let shape = tensor["shape"] as? [Int],
        let type = tensor["type"] as? Int, let text = tensor["data"] as? String,
        let bytes = Data(base64Encoded: text)
      else {
        throw FixtureError(description: "\(source): a tensor without name, shape, type or data")
      }
      writer.tensors.append(
        GGUFTensorData(name: name, shape: shape, typeID: UInt32(type), data: bytes))
    }
    return writer
  }

  private static func value(_ raw: Any, type: String, key: String) throws -> GGUFValue {
    switch (type, raw) {
    case ("string", let text as String): return .string(text)
    case ("bool", let flag as Bool): return .bool(flag)
    case ("float32", let number as NSNumber): return .float32(number.floatValue)
    case ("float64", let number as NSNumber): return .float64(number.doubleValue)
    case ("uint8", let number as NSNumber): return .uint8(number.uint8Value)
    case ("int8", let number as NSNumber): return .int8(number.int8Value)
    case ("uint16", let number as NSNumber): return .uint16(number.uint16Value)
    case ("int16", let number as NSNumber): return .int16(number.int16Value)
    case ("uint32", let number as NSNumber): return .uint32(number.uint32Value)
    case ("int32", let number as NSNumber): return .int32(number.int32Value)
    case ("uint64", let number as NSNumber): return .uint64(number.uint64Value)
    case ("int64", let number as NSNumber): return .int64(number.int64Value)
    default: throw FixtureError(description: "\(key): '\(raw)' is not a GGUF \(type)")
    }
  }
}
