import Foundation
import IR

/// One tensor to write into a GGUF file: its name, numpy-order shape, ggml type and bytes.
///
/// The bytes are either given (already encoded: F32, F16 or quantized blocks copied from another
/// file) or produced when the writer reaches the tensor, so a large file is never held in memory
/// whole.
public struct GGUFTensorData: Sendable {
  public var name: String
  /// Outermost dimension first (numpy order); the file stores it reversed as `ne`.
  public var shape: [Int]
  /// The ggml type id (0 F32, 1 F16, 3 Q4_1, ...).
  public var typeID: UInt32
  let source: Source

  enum Source: Sendable {
    case bytes(Data)
    case produce(@Sendable () throws(GGUFError) -> Data)
  }

  /// A tensor whose encoded bytes are already at hand.
  public init(name: String, shape: [Int], typeID: UInt32, data: Data) {
    self.name = name
    self.shape = shape
    self.typeID = typeID
    source = .bytes(data)
  }

  /// A tensor whose bytes `produce` returns when the writer gets to it.
  public init(
    name: String, shape: [Int], typeID: UInt32,
    produce: @escaping @Sendable () throws(GGUFError) -> Data
  ) {
    self.name = name
    self.shape = shape
    self.typeID = typeID
    source = .produce(produce)
  }

  /// An F32 tensor from its values in row-major order.
  public static func f32(name: String, shape: [Int], floats: [Float]) -> GGUFTensorData {
    GGUFTensorData(name: name, shape: shape, typeID: 0, data: encodeF32(floats))
  }

  /// An F16 tensor from values rounded to half precision (nearest even).
  public static func f16(name: String, shape: [Int], floats: [Float]) -> GGUFTensorData {
    GGUFTensorData(name: name, shape: shape, typeID: 1, data: encodeF16(floats))
  }

  /// Little-endian F32 bytes of `values`.
  public static func encodeF32(_ values: [Float]) -> Data {
    var data = Data(count: values.count * 4)
    data.withUnsafeMutableBytes { raw in
      for (index, value) in values.enumerated() {
        raw.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: 4 * index, as: UInt32.self)
      }
    }
    return data
  }

  /// Little-endian F16 bytes of `values`, rounded to nearest even.
  public static func encodeF16(_ values: [Float]) -> Data {
    var data = Data(count: values.count * 2)
    data.withUnsafeMutableBytes { raw in
      for (index, value) in values.enumerated() {
        raw.storeBytes(
          of: halfFromFloat(value).littleEndian, toByteOffset: 2 * index, as: UInt16.self)
      }
    }
    return data
  }
}

/// Writes GGUF v3 files that `GGUFFile` and llama.cpp read: metadata of every value type, the
/// tensor table, `general.alignment` (32 unless the metadata sets it) and tensor data, each
/// tensor starting on the alignment and padded with zeros to it.
///
/// Everything is checked before the first byte is written (duplicate keys or names, unknown
/// types, shapes that are not whole blocks, byte counts that do not match the shape); the file is
/// written to a temporary file beside the target, flushed and renamed, so a failure never leaves
/// a partial file under the target's name.
public struct GGUFFileWriter: Sendable {
  /// Metadata in the order it is written.
  public var metadata: [(key: String, value: GGUFValue)]
  public var tensors: [GGUFTensorData]

  /// ggml's limit on tensor names (GGML_MAX_NAME = 64 bytes including the terminating NUL).
  public static let maximumNameBytes = 63
  /// Array nesting the reader accepts.
  static let maximumArrayDepth = 4

  public init(metadata: [(key: String, value: GGUFValue)] = [], tensors: [GGUFTensorData] = []) {
    self.metadata = metadata
    self.tensors = tensors
  }

  /// Sets `key` to `value`, in place when the key exists, else at the end.
  public mutating func set(_ key: String, _ value: GGUFValue) {
    if let index = metadata.firstIndex(where: { $0.key == key }) {
      metadata[index].value = value
    } else {
      metadata.append((key, value))
    }
  }

  /// The alignment the file will use: `general.alignment`, or 32.
  public func alignment(path: String) throws(GGUFError) -> Int {
    guard let entry = metadata.first(where: { $0.key == "general.alignment" }) else { return 32 }
    guard let value = entry.value.integer, value > 0, value & (value - 1) == 0, value <= 1 << 20
    else {
      throw GGUFError(
        message:
          "\(path): general.alignment must be an integer power of two up to 2^20, got \(entry.value)"
      )
    }
    return value
  }

  /// The header (through the padding before the data) and each tensor's offset and byte count.
  func layout(path: String) throws(GGUFError) -> (
    header: [UInt8], offsets: [Int], byteCounts: [Int], alignment: Int
  ) {
    func fail(_ message: String) -> GGUFError { GGUFError(message: "\(path): \(message)") }
    let alignment = try alignment(path: path)
    var bytes = ByteWriter()
    bytes.raw(Array("GGUF".utf8))
    bytes.u32(3)
    bytes.u64(UInt64(tensors.count))
    bytes.u64(UInt64(metadata.count))
    var keys = Set<String>()
    for (key, value) in metadata {
      guard keys.insert(key).inserted else { throw fail("duplicate metadata key '\(key)'") }
      bytes.string(key)
      bytes.u32(GGUFFileWriter.typeCode(of: value))
      try bytes.value(value, key: key, path: path, depth: 0)
    }
    var names = Set<String>()
    var offsets: [Int] = []
    var byteCounts: [Int] = []
    var offset = 0
    for tensor in tensors {
      let name = tensor.name
      guard names.insert(name).inserted else { throw fail("duplicate tensor name '\(name)'") }
      guard name.utf8.count <= GGUFFileWriter.maximumNameBytes else {
        throw fail(
          "tensor name '\(name)' is \(name.utf8.count) bytes (llama.cpp reads at most \(GGUFFileWriter.maximumNameBytes))"
        )
      }
      guard let type = GGUFFile.ggmlTypes[tensor.typeID] else {
        throw fail("tensor '\(name)' has unknown ggml type \(tensor.typeID)")
      }
      guard (1...4).contains(tensor.shape.count) else {
        throw fail("tensor '\(name)' has \(tensor.shape.count) dimensions (expected 1 to 4)")
      }
      var elements = 1
      for dimension in tensor.shape {
        guard dimension > 0 else {
          throw fail("tensor '\(name)' has shape \(tensor.shape) (dimensions must be positive)")
        }
        let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
        guard !overflow, product <= TensorType.maxElementCount else {
          throw fail("tensor '\(name)' has too many elements")
        }
        elements = product
      }
      let rowLength = tensor.shape[tensor.shape.count - 1]
      guard rowLength % type.block == 0 else {
        throw fail(
          "tensor '\(name)': rows of \(rowLength) are not whole \(type.name) blocks of \(type.block)"
        )
      }
      let byteCount = elements / type.block * type.bytes
      if case .bytes(let data) = tensor.source, data.count != byteCount {
        throw fail(
          "tensor '\(name)' (\(type.name) \(tensor.shape)) needs \(byteCount) bytes, got \(data.count)"
        )
      }
      bytes.string(name)
      bytes.u32(UInt32(tensor.shape.count))
      for dimension in tensor.shape.reversed() { bytes.u64(UInt64(dimension)) }
      bytes.u32(tensor.typeID)
      bytes.u64(UInt64(offset))
      offsets.append(offset)
      byteCounts.append(byteCount)
      offset += (byteCount + alignment - 1) / alignment * alignment
    }
    bytes.pad(to: alignment)
    return (bytes.bytes, offsets, byteCounts, alignment)
  }

  /// Writes the file crash-safely to `path`: a temporary file in the same folder, flushed, then
  /// renamed over `path`.
  public func write(to path: String) throws(GGUFError) {
    let (header, _, byteCounts, alignment) = try layout(path: path)
    try writeAtomically(path: path) { (sink: inout FileSink) throws(GGUFError) in
      try sink.write(Data(header))
      for (tensor, byteCount) in zip(tensors, byteCounts) {
        let data: Data
        switch tensor.source {
        case .bytes(let bytes): data = bytes
        case .produce(let produce): data = try produce()
        }
        guard data.count == byteCount else {
          throw GGUFError(
            message:
              "\(path): tensor '\(tensor.name)' (\(tensor.shape)) needs \(byteCount) bytes, got \(data.count)"
          )
        }
        try sink.write(data)
        let padding = (alignment - data.count % alignment) % alignment
        if padding > 0 { try sink.write(Data(count: padding)) }
      }
    }
  }

  /// The GGUF value type of a metadata value.
  static func typeCode(of value: GGUFValue) -> UInt32 {
    switch value {
    case .uint8: 0
    case .int8: 1
    case .uint16: 2
    case .int16: 3
    case .uint32: 4
    case .int32: 5
    case .float32: 6
    case .bool: 7
    case .string: 8
    case .array: 9
    case .uint64: 10
    case .int64: 11
    case .float64: 12
    }
  }
}

/// Little-endian GGUF encoding into a byte array.
private struct ByteWriter {
  var bytes: [UInt8] = []

  mutating func raw(_ values: [UInt8]) { bytes += values }
  mutating func u8(_ value: UInt8) { bytes.append(value) }
  mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
  mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
  mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }

  mutating func string(_ text: String) {
    u64(UInt64(text.utf8.count))
    bytes += text.utf8
  }

  mutating func pad(to alignment: Int) {
    bytes += [UInt8](repeating: 0, count: (alignment - bytes.count % alignment) % alignment)
  }

  mutating func value(_ value: GGUFValue, key: String, path: String, depth: Int)
    throws(GGUFError)
  {
    switch value {
    case .uint8(let v): u8(v)
    case .int8(let v): u8(UInt8(bitPattern: v))
    case .uint16(let v): u16(v)
    case .int16(let v): u16(UInt16(bitPattern: v))
    case .uint32(let v): u32(v)
    case .int32(let v): u32(UInt32(bitPattern: v))
    case .float32(let v): u32(v.bitPattern)
    case .bool(let v): u8(v ? 1 : 0)
    case .string(let v): string(v)
    case .uint64(let v): u64(v)
    case .int64(let v): u64(UInt64(bitPattern: v))
    case .float64(let v): u64(v.bitPattern)
    case .array(let elements):
      guard depth < GGUFFileWriter.maximumArrayDepth else {
        throw GGUFError(
          message:
            "\(path): metadata '\(key)' nests arrays more than \(GGUFFileWriter.maximumArrayDepth) deep"
        )
      }
      // An empty array has no element to take a type from; UINT8 is as good as any.
      let elementType = elements.first.map(GGUFFileWriter.typeCode(of:)) ?? 0
      u32(elementType)
      u64(UInt64(elements.count))
      for (index, element) in elements.enumerated() {
        let type = GGUFFileWriter.typeCode(of: element)
        guard type == elementType else {
          throw GGUFError(
            message:
              "\(path): metadata '\(key)' is an array of mixed types (element 0 has type \(elementType), element \(index) type \(type))"
          )
        }
        try self.value(element, key: key, path: path, depth: depth + 1)
      }
    }
  }
}

/// A file being written by `writeAtomically(path:body:)`.
public struct FileSink {
  let handle: FileHandle
  let path: String

  /// Appends `data` to the file.
  public mutating func write(_ data: Data) throws(GGUFError) {
    do {
      try handle.write(contentsOf: data)
    } catch {
      throw GGUFError(message: "\(path): write failed: \(error.localizedDescription)")
    }
  }
}

/// Streams a file crash-safely: `body` writes into a temporary file in the target's folder,
/// which is flushed and renamed over `path` when `body` returns, and removed when it throws.
///
/// For files too big to build in memory (merged models); the folder is flushed after the rename,
/// as in `writeAtomically(_:to:)`.
public func writeAtomically(
  path: String, _ body: (inout FileSink) throws(GGUFError) -> Void
) throws(GGUFError) {
  let url = URL(fileURLWithPath: path)
  let folder = url.deletingLastPathComponent()
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory),
    isDirectory.boolValue
  {
    throw GGUFError(message: "\(path): is a directory")
  }
  let temporary = temporaryURL(for: url)
  guard FileManager.default.createFile(atPath: temporary.path, contents: nil),
    let handle = FileHandle(forWritingAtPath: temporary.path)
  else {
    throw GGUFError(message: "\(path): cannot create a file in \(folder.path)")
  }
  var sink = FileSink(handle: handle, path: path)
  func discard() {
    try? handle.close()
    try? FileManager.default.removeItem(at: temporary)
  }
  do {
    try body(&sink)
  } catch {
    discard()
    throw error
  }
  do {
    try handle.synchronize()
    try handle.close()
  } catch {
    discard()
    throw GGUFError(message: "\(path): write failed: \(error.localizedDescription)")
  }
  if rename(temporary.path, path) != 0 {
    let reason = String(cString: strerror(errno))
    try? FileManager.default.removeItem(at: temporary)
    throw GGUFError(message: "\(path): cannot rename into place: \(reason)")
  }
  synchronizeFolder(folder)
}
