import Foundation
import IR

/// A malformed safetensors file: names the file and what was wrong.
public struct SafetensorsError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// A safetensors file: a JSON header of tensor entries, then their bytes, read without copying.
///
/// The header is validated strictly: a bounded length, a JSON object without duplicate keys,
/// known dtypes, shapes whose byte sizes match their offsets, and tensors that tile the data
/// exactly (no holes, no overlap).
public struct SafetensorsFile: Sendable {
  public struct Entry: Hashable, Sendable {
    public var name: String
    /// The dtype as written (`F32`, `BF16`, ...).
    public var dtype: String
    public var shape: [Int]
    public var begin: Int
    public var end: Int
  }

  public let path: String
  public let entries: [Entry]
  public let metadata: [String: String]
  private let mapping: FileMapping?
  private let data: Data
  private let dataStart: Int
  private let index: [String: Int]

  /// Bytes per element of every dtype the format defines.
  static let elementSizes: [String: Int] = [
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
  ]
  static let maximumHeader = 100_000_000

  /// Opens and validates a file (memory-mapped).
  public init(path: String) throws(SafetensorsError) {
    let mapping: FileMapping
    do {
      mapping = try FileMapping(path: path)
    } catch {
      throw SafetensorsError(message: error.message)
    }
    try self.init(
      data: mapping.data(offset: 0, count: mapping.bytes.count), path: path, mapping: mapping)
  }

  /// Parses bytes already in memory; when they are exactly `mapping`'s, tensors share it.
  public init(data: Data, path: String, mapping: FileMapping? = nil) throws(SafetensorsError) {
    func fail(_ message: String) -> SafetensorsError {
      SafetensorsError(message: "\(path): \(message)")
    }
    self.path = path
    let sharesMapping = data.withUnsafeBytes { raw in
      mapping.map { raw.baseAddress == $0.bytes.baseAddress && raw.count == $0.bytes.count }
    }
    self.mapping = sharesMapping == true ? mapping : nil
    self.data = data
    guard data.count >= 8 else {
      throw fail("file of \(data.count) bytes is too short for a header length")
    }
    let headerLength = data.withUnsafeBytes {
      UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))
    }
    guard headerLength <= UInt64(SafetensorsFile.maximumHeader) else {
      throw fail(
        "header length \(headerLength) exceeds the limit of \(SafetensorsFile.maximumHeader) bytes")
    }
    guard headerLength <= UInt64(data.count - 8) else {
      throw fail(
        "header length \(headerLength) extends past the end of the file (\(data.count) bytes)")
    }
    dataStart = 8 + Int(headerLength)
    // The reference reader requires the object's brace first: no leading whitespace or BOM.
    guard headerLength > 0, data[data.startIndex + 8] == UInt8(ascii: "{") else {
      throw fail("header is not a JSON object (it must start with '{')")
    }
    let header = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + dataStart))
    let json: JSONValue
    do {
      json = try JSONValue.parse(Array(header))
    } catch {
      throw fail("header: \(error.message)")
    }
    guard case .object(let fields) = json else { throw fail("header is not a JSON object") }
    var entries: [Entry] = []
    var metadata: [String: String] = [:]
    for (key, value) in fields {
      if key == "__metadata__" {
        guard case .object(let pairs) = value else { throw fail("__metadata__ is not an object") }
        for (name, text) in pairs {
          guard case .string(let string) = text else {
            throw fail("__metadata__ value of '\(name)' is not a string")
          }
          metadata[name] = string
        }
        continue
      }
      guard case .object(let properties) = value else {
        throw fail("entry '\(key)' is not an object")
      }
      let lookup = Dictionary(properties, uniquingKeysWith: { first, _ in first })
      guard case .string(let dtype)? = lookup["dtype"] else { throw fail("'\(key)' has no dtype") }
      guard let size = SafetensorsFile.elementSizes[dtype] else {
        throw fail("'\(key)' has unknown dtype '\(dtype)'")
      }
      guard case .array(let shapeValues)? = lookup["shape"] else {
        throw fail("'\(key)' has no shape")
      }
      var shape: [Int] = []
      var count = 1
      for dimension in shapeValues {
        guard case .integer(let value) = dimension, value >= 0 else {
          throw fail("'\(key)' has an invalid shape")
        }
        let (product, overflow) = count.multipliedReportingOverflow(by: value)
        guard !overflow, product <= TensorType.maxElementCount else {
          throw fail("'\(key)' is too large")
        }
        count = product
        shape.append(value)
      }
      guard case .array(let offsets)? = lookup["data_offsets"], offsets.count == 2,
        case .integer(let begin) = offsets[0], case .integer(let end) = offsets[1], begin >= 0,
        begin <= end
      else { throw fail("'\(key)' has no valid data_offsets [begin, end]") }
      guard end - begin == count * size else {
        throw fail(
          "'\(key)': \(dtype)\(shape) needs \(count * size) bytes, data_offsets hold \(end - begin)"
        )
      }
      entries.append(Entry(name: key, dtype: dtype, shape: shape, begin: begin, end: end))
    }
    // The tensors tile the byte buffer exactly.
    let buffer = data.count - dataStart
    var position = 0
    for entry in entries.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
      if entry.begin > position {
        throw fail("a hole of \(entry.begin - position) bytes before '\(entry.name)'")
      }
      if entry.begin < position { throw fail("'\(entry.name)' overlaps the tensor before it") }
      position = entry.end
    }
    guard position == buffer else {
      throw fail(
        position > buffer
          ? "tensor data extends past the end of the file"
          : "\(buffer - position) bytes after the last tensor")
    }
    self.entries = entries
    self.metadata = metadata
    index = Dictionary(
      entries.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
  }

  /// The entry of a tensor.
  public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

  /// A tensor as a host tensor (F32, F16, BF16 and I32), sharing the file's memory.
  public func tensor(named name: String) throws(SafetensorsError) -> HostTensor {
    guard let entry = entry(name) else {
      throw SafetensorsError(message: "\(path): no tensor named '\(name)'")
    }
    let dtypes: [String: DType] = ["F32": .f32, "F16": .f16, "BF16": .bf16, "I32": .i32]
    guard let dtype = dtypes[entry.dtype] else {
      throw SafetensorsError(
        message: "\(path): tensor '\(name)' is \(entry.dtype); lorac reads F32, F16, BF16 and I32")
    }
    guard !entry.shape.contains(0) else {
      throw SafetensorsError(message: "\(path): tensor '\(name)' has a zero dimension")
    }
    // A mapped file's tensors share its memory; bytes parsed from memory are copied out.
    let bytes: Data
    if let mapping {
      bytes = mapping.data(offset: dataStart + entry.begin, count: entry.end - entry.begin)
    } else {
      let start = data.startIndex + dataStart + entry.begin
      bytes = Data(data[start..<(start + entry.end - entry.begin)])
    }
    do {
      return try HostTensor(type: TensorType(dtype, entry.shape), data: bytes)
    } catch {
      throw SafetensorsError(message: "\(path): tensor '\(name)': \(error.message)")
    }
  }

  /// Writes tensors (in the given order) and metadata crash-safely: temporary file, flush, rename.
  public static func write(
    _ tensors: [(name: String, tensor: HostTensor)], metadata: [String: String] = [:], to url: URL
  ) throws(SafetensorsError) {
    let names: [DType: String] = [.f32: "F32", .f16: "F16", .bf16: "BF16", .i32: "I32"]
    var header = "{"
    var parts: [String] = []
    if !metadata.isEmpty {
      let pairs = metadata.keys.sorted().map {
        "\(jsonString($0)):\(jsonString(metadata[$0] ?? ""))"
      }
      parts.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
    }
    var offset = 0
    var seen = Set<String>()
    for (name, tensor) in tensors {
      guard name != "__metadata__" else {
        throw SafetensorsError(
          message: "\(url.path): '__metadata__' is reserved and cannot name a tensor")
      }
      guard seen.insert(name).inserted else {
        throw SafetensorsError(message: "\(url.path): duplicate tensor name '\(name)'")
      }
      guard let dtype = names[tensor.type.dtype] else {
        throw SafetensorsError(
          message: "\(url.path): cannot store \(tensor.type.dtype.rawValue) tensors")
      }
      let shape = tensor.type.shape.map(String.init).joined(separator: ",")
      parts.append(
        "\(jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.data.count)]}"
      )
      offset += tensor.data.count
    }
    header += parts.joined(separator: ",") + "}"
    // Pad with spaces so the byte buffer starts 8-byte aligned.
    header += String(repeating: " ", count: (8 - (8 + header.utf8.count) % 8) % 8)
    var data = Data()
    withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array(header.utf8))
    for (_, tensor) in tensors { data.append(tensor.data) }
    do {
      try writeAtomically(data, to: url)
    } catch {
      throw SafetensorsError(message: error.message)
    }
  }
}

/// A JSON string literal for `text`.
public func jsonString(_ text: String) -> String {
  var result = "\""
  for scalar in text.unicodeScalars {
    switch scalar {
    case "\"": result += "\\\""
    case "\\": result += "\\\\"
    case "\n": result += "\\n"
    case "\r": result += "\\r"
    case "\t": result += "\\t"
    case _ where scalar.value < 0x20:
      result +=
        "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count)
        + String(scalar.value, radix: 16)
    default: result.unicodeScalars.append(scalar)
    }
  }
  return result + "\""
}
