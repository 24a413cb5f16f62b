import Foundation
import IR

/// A malformed, truncated or unsupported GGUF file: names the file, the byte offset and what was
/// expected.
public struct GGUFError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}

/// A GGUF metadata value.
public enum GGUFValue: Hashable, Sendable {
  case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
  case float32(Float), bool(Bool), string(String), array([GGUFValue])
  case uint64(UInt64), int64(Int64), float64(Double)

  /// The value as an integer, for any integer type that fits.
  public var integer: Int? {
    switch self {
    case .uint8(let v): Int(v)
    case .int8(let v): Int(v)
    case .uint16(let v): Int(v)
    case .int16(let v): Int(v)
    case .uint32(let v): Int(v)
    case .int32(let v): Int(v)
    case .uint64(let v): Int(exactly: v)
    case .int64(let v): Int(v)
    default: nil
    }
  }

  /// The value as a number (integers and floats).
  public var number: Double? {
    switch self {
    case .float32(let v): Double(v)
    case .float64(let v): v
    default: integer.map(Double.init)
    }
  }

  public var string: String? {
    if case .string(let v) = self { return v }
    return nil
  }

  public var bool: Bool? {
    if case .bool(let v) = self { return v }
    return nil
  }

  public var array: [GGUFValue]? {
    if case .array(let v) = self { return v }
    return nil
  }
}

/// One entry of a GGUF tensor table.
public struct GGUFTensorInfo: Hashable, Sendable {
  public var name: String
  /// Outermost dimension first (numpy order): GGUF's `ne` reversed.
  public var shape: [Int]
  /// The ggml type id.
  public var typeID: UInt32
  /// Offset from the start of the data section.
  public var offset: Int
  public var byteCount: Int

  /// lorac's dtype for the ggml type, when lorac reads it directly.
  public var dtype: DType? { GGUFFile.dtypes[typeID] }
  /// The ggml type's name (`Q4_1`).
  public var typeName: String { GGUFFile.ggmlTypes[typeID]?.name ?? "type \(typeID)" }
}

/// A GGUF file (versions 2 and 3): metadata, tensor table and memory-mapped tensor data.
///
/// Every count, length and offset is checked against the file before it is used, so a truncated or
/// hostile file gives a `GGUFError`, never a crash or a read out of bounds.
public struct GGUFFile: Sendable {
  public let path: String
  public let version: UInt32
  /// Metadata in file order.
  public let metadata: [(key: String, value: GGUFValue)]
  public let tensors: [GGUFTensorInfo]
  public let alignment: Int
  /// Byte offset of the data section.
  public let dataOffset: Int
  private let mapping: FileMapping
  private let index: [String: Int]
  private let keys: [String: Int]

  /// ggml type ids with their block size, block bytes and name.
  static let ggmlTypes: [UInt32: (block: Int, bytes: Int, name: String)] = [
    0: (1, 4, "F32"), 1: (1, 2, "F16"), 2: (32, 18, "Q4_0"), 3: (32, 20, "Q4_1"),
    6: (32, 22, "Q5_0"), 7: (32, 24, "Q5_1"), 8: (32, 34, "Q8_0"), 9: (32, 40, "Q8_1"),
    10: (256, 84, "Q2_K"), 11: (256, 110, "Q3_K"), 12: (256, 144, "Q4_K"), 13: (256, 176, "Q5_K"),
    14: (256, 210, "Q6_K"), 15: (256, 292, "Q8_K"), 16: (256, 66, "IQ2_XXS"),
    17: (256, 74, "IQ2_XS"), 18: (256, 98, "IQ3_XXS"), 19: (256, 50, "IQ1_S"),
    20: (32, 18, "IQ4_NL"), 21: (256, 110, "IQ3_S"), 22: (256, 82, "IQ2_S"),
    23: (256, 136, "IQ4_XS"), 24: (1, 1, "I8"), 25: (1, 2, "I16"), 26: (1, 4, "I32"),
    27: (1, 8, "I64"), 28: (1, 8, "F64"), 29: (256, 56, "IQ1_M"), 30: (1, 2, "BF16"),
  ]

  /// ggml types lorac's kernels read directly.
  static let dtypes: [UInt32: DType] = [
    0: .f32, 1: .f16, 3: .q4_1, 8: .q8_0, 12: .q4_k, 14: .q6_k, 30: .bf16, 26: .i32,
  ]

  /// Opens and validates a GGUF file (memory-mapped; tensor data is not read until used).
  public init(path: String) throws(GGUFError) {
    let mapping: FileMapping
    do {
      mapping = try FileMapping(path: path)
    } catch {
      throw GGUFError(message: error.message)
    }
    try self.init(mapping: mapping)
  }

  /// Parses an already mapped file.
  public init(mapping: FileMapping) throws(GGUFError) {
    self.mapping = mapping
    path = mapping.path
    var reader = ByteReader(bytes: mapping.bytes, path: mapping.path)
    let magic = try reader.u32("the magic number")
    guard magic == 0x4655_4747 else {
      if magic == 0x4747_5546 {
        throw reader.error(at: 0, "big-endian GGUF files are not supported")
      }
      throw reader.error(at: 0, "not a GGUF file (the magic number is not 'GGUF')")
    }
    version = try reader.u32("the version")
    guard version == 2 || version == 3 else {
      throw reader.error(at: 4, "GGUF version \(version) is not supported (expected 2 or 3)")
    }
    let tensorCount = try reader.count("tensor count", minimumBytesEach: 24)
    let keyCount = try reader.count("metadata count", minimumBytesEach: 13)
    var metadata: [(key: String, value: GGUFValue)] = []
    var keys: [String: Int] = [:]
    for _ in 0..<keyCount {
      let at = reader.offset
      let key = try reader.string("a metadata key")
      if keys[key] != nil { throw reader.error(at: at, "duplicate metadata key '\(key)'") }
      let type = try reader.u32("the type of '\(key)'")
      let value = try reader.value(type: type, key: key, depth: 0)
      keys[key] = metadata.count
      metadata.append((key, value))
    }
    self.metadata = metadata
    self.keys = keys
    var alignment = 32
    if let index = keys["general.alignment"] {
      guard let value = metadata[index].value.integer, value > 0, value & (value - 1) == 0,
        value <= 1 << 20
      else {
        throw GGUFError(
          message: "\(path): general.alignment must be a power of two, got \(metadata[index].value)"
        )
      }
      alignment = value
    }
    self.alignment = alignment
    var tensors: [GGUFTensorInfo] = []
    var index: [String: Int] = [:]
    for _ in 0..<tensorCount {
      let at = reader.offset
      let name = try reader.string("a tensor name")
      if index[name] != nil { throw reader.error(at: at, "duplicate tensor name '\(name)'") }
      let dimensions = try reader.u32("the dimension count of '\(name)'")
      guard (1...4).contains(dimensions) else {
        throw reader.error(
          at: at, "tensor '\(name)' has \(dimensions) dimensions (expected 1 to 4)")
      }
      var ne: [Int] = []
      var elements = 1
      for _ in 0..<dimensions {
        let dimension = try reader.u64("a dimension of '\(name)'")
        guard dimension > 0, dimension <= UInt64(TensorType.maxElementCount) else {
          throw reader.error(at: at, "tensor '\(name)' has dimension \(dimension)")
        }
        let (product, overflow) = elements.multipliedReportingOverflow(by: Int(dimension))
        guard !overflow, product <= TensorType.maxElementCount else {
          throw reader.error(at: at, "tensor '\(name)' has too many elements")
        }
        elements = product
        ne.append(Int(dimension))
      }
      let typeID = try reader.u32("the type of '\(name)'")
      guard let type = GGUFFile.ggmlTypes[typeID] else {
        throw reader.error(at: at, "tensor '\(name)' has unknown ggml type \(typeID)")
      }
      guard ne[0] % type.block == 0 else {
        throw reader.error(
          at: at,
          "tensor '\(name)': rows of \(ne[0]) are not whole \(type.name) blocks of \(type.block)")
      }
      let offset = try reader.u64("the offset of '\(name)'")
      guard offset % UInt64(alignment) == 0 else {
        throw reader.error(
          at: at,
          "tensor '\(name)' offset \(offset) is not a multiple of the alignment \(alignment)")
      }
      guard offset <= UInt64(mapping.bytes.count) else {
        throw reader.error(at: at, "tensor '\(name)' offset \(offset) is past the end of the file")
      }
      index[name] = tensors.count
      tensors.append(
        GGUFTensorInfo(
          name: name, shape: ne.reversed(), typeID: typeID, offset: Int(offset),
          byteCount: elements / type.block * type.bytes))
    }
    let tableEnd = reader.offset
    let (padded, _) = tableEnd.addingReportingOverflow(alignment - 1)
    dataOffset = padded / alignment * alignment
    // Every tensor lies inside the file, and no two overlap.
    for tensor in tensors.sorted(by: { $0.offset < $1.offset }).enumerated() {
      let start = dataOffset + tensor.element.offset
      guard start <= mapping.bytes.count, tensor.element.byteCount <= mapping.bytes.count - start
      else {
        throw GGUFError(
          message:
            "\(path): tensor '\(tensor.element.name)' (\(tensor.element.byteCount) bytes at offset \(start)) extends past the end of the file (\(mapping.bytes.count) bytes)"
        )
      }
    }
    let ordered = tensors.sorted { $0.offset < $1.offset }
    for (previous, next) in zip(ordered, ordered.dropFirst())
    where previous.offset + previous.byteCount > next.offset {
      throw GGUFError(message: "\(path): tensors '\(previous.name)' and '\(next.name)' overlap")
    }
    self.tensors = tensors
    self.index = index
  }

  // MARK: - Access

  /// The metadata value of `key`.
  public subscript(key: String) -> GGUFValue? { keys[key].map { metadata[$0].value } }

  /// The table entry of a tensor.
  public func info(_ name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

  /// A tensor as lorac's kernels read it, sharing the file's memory (no copy).
  public func tensor(named name: String) throws(GGUFError) -> HostTensor {
    guard let info = info(name) else {
      throw GGUFError(message: "\(path): no tensor named '\(name)'")
    }
    guard let dtype = info.dtype else {
      throw GGUFError(
        message: "\(path): tensor '\(name)' is \(info.typeName), which lorac does not read directly"
      )
    }
    let data = mapping.data(offset: dataOffset + info.offset, count: info.byteCount)
    do {
      return try HostTensor(type: TensorType(dtype, info.shape), data: data)
    } catch {
      throw GGUFError(message: "\(path): tensor '\(name)': \(error.message)")
    }
  }

  /// A tensor decoded to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K).
  public func dequantized(named name: String) throws(GGUFError) -> [Float] {
    guard let info = info(name) else {
      throw GGUFError(message: "\(path): no tensor named '\(name)'")
    }
    if info.typeID == 2 {  // Q4_0: f16 d; u8 qs[16]; x = (nibble - 8) d, low nibbles first.
      let bytes = mapping.data(offset: dataOffset + info.offset, count: info.byteCount)
      var values = [Float](repeating: 0, count: info.shape.reduce(1, *))
      bytes.withUnsafeBytes { raw in
        for block in 0..<(values.count / 32) {
          let base = block * 18
          let scale = floatFromHalf(raw.loadUnaligned(fromByteOffset: base, as: UInt16.self))
          for j in 0..<16 {
            let q = raw[base + 2 + j]
            values[block * 32 + j] = (Float(q & 0xF) - 8) * scale
            values[block * 32 + j + 16] = (Float(q >> 4) - 8) * scale
          }
        }
      }
      return values
    }
    return try tensor(named: name).floats()
  }

  /// Every tensor lorac reads directly, by name, sharing the file's memory.
  public func hostTensors() throws(GGUFError) -> [String: HostTensor] {
    var result: [String: HostTensor] = [:]
    for info in tensors where info.dtype != nil { result[info.name] = try tensor(named: info.name) }
    return result
  }
}

/// Reads little-endian values with every read checked against the end.
struct ByteReader {
  let bytes: UnsafeRawBufferPointer
  let path: String
  var offset = 0

  init(bytes: UnsafeRawBufferPointer, path: String) {
    self.bytes = bytes
    self.path = path
  }

  var remaining: Int { bytes.count - offset }

  func error(at offset: Int, _ message: String) -> GGUFError {
    GGUFError(message: "\(path): offset \(offset): \(message)")
  }

  private mutating func take(_ count: Int, _ what: String) throws(GGUFError) -> Int {
    guard count <= remaining else {
      throw error(
        at: offset, "file ends while reading \(what) (\(count) bytes needed, \(remaining) left)")
    }
    defer { offset += count }
    return offset
  }

  mutating func u8(_ what: String) throws(GGUFError) -> UInt8 { bytes[try take(1, what)] }

  mutating func u16(_ what: String) throws(GGUFError) -> UInt16 {
    bytes.loadUnaligned(fromByteOffset: try take(2, what), as: UInt16.self).littleEndian
  }

  mutating func u32(_ what: String) throws(GGUFError) -> UInt32 {
    bytes.loadUnaligned(fromByteOffset: try take(4, what), as: UInt32.self).littleEndian
  }

  mutating func u64(_ what: String) throws(GGUFError) -> UInt64 {
    bytes.loadUnaligned(fromByteOffset: try take(8, what), as: UInt64.self).littleEndian
  }

  /// A count of items that each take at least `minimumBytesEach` bytes, so it cannot exceed what
  /// the rest of the file could hold.
  mutating func count(_ what: String, minimumBytesEach: Int) throws(GGUFError) -> Int {
    let at = offset
    let value = try u64(what)
    guard value <= UInt64(remaining / max(minimumBytesEach, 1)) else {
      throw error(at: at, "\(what) \(value) exceeds what the file size allows")
    }
    return Int(value)
  }

  mutating func string(_ what: String) throws(GGUFError) -> String {
    let at = offset
    let length = try u64("the length of \(what)")
    guard length <= UInt64(remaining) else {
      throw error(at: at, "\(what) of \(length) bytes extends past the end of the file")
    }
    let start = try take(Int(length), what)
    let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + Int(length))])
    guard let text = String(validating: slice, as: UTF8.self) else {
      throw error(at: at, "\(what) is not valid UTF-8")
    }
    return text
  }

  mutating func value(type: UInt32, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
    let what = "the value of '\(key)'"
    switch type {
    case 0: return .uint8(try u8(what))
    case 1: return .int8(Int8(bitPattern: try u8(what)))
    case 2: return .uint16(try u16(what))
    case 3: return .int16(Int16(bitPattern: try u16(what)))
    case 4: return .uint32(try u32(what))
    case 5: return .int32(Int32(bitPattern: try u32(what)))
    case 6: return .float32(Float(bitPattern: try u32(what)))
    case 7:
      let at = offset
      let byte = try u8(what)
      guard byte <= 1 else { throw error(at: at, "'\(key)' is a bool with value \(byte)") }
      return .bool(byte == 1)
    case 8: return .string(try string(what))
    case 9:
      guard depth < 4 else { throw error(at: offset, "'\(key)' nests arrays too deeply") }
      let at = offset
      let elementType = try u32("the element type of '\(key)'")
      let minimum = [
        0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8,
      ][Int(elementType)]
      guard let minimum else {
        throw error(at: at, "'\(key)' is an array of unknown type \(elementType)")
      }
      let count = try count("the element count of '\(key)'", minimumBytesEach: minimum)
      var elements: [GGUFValue] = []
      elements.reserveCapacity(count)
      for _ in 0..<count {
        elements.append(try value(type: elementType, key: key, depth: depth + 1))
      }
      return .array(elements)
    case 10: return .uint64(try u64(what))
    case 11: return .int64(Int64(bitPattern: try u64(what)))
    case 12: return .float64(Double(bitPattern: try u64(what)))
    default:
      throw error(at: offset - 4, "'\(key)' has unknown value type \(type)")
    }
  }
}
