import Foundation
import IR

/// NumPy `.npy` files (format version 1.0), the exchange format of `lorac logits`.
public enum NumPy {
  /// The bytes of a little-endian C-order `.npy` file holding an f32 or i32 tensor.
  public static func encode(_ tensor: HostTensor) -> Data {
    let descriptor = tensor.type.dtype == .i32 ? "<i4" : "<f4"
    let shape = tensor.type.shape
    let shapeText =
      shape.count == 1
      ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '\(descriptor)', 'fortran_order': False, 'shape': \(shapeText), }"
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64,
    // ending in a newline.
    let unpadded = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
    let length = UInt16(header.utf8.count)
    data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
    data.append(contentsOf: Array(header.utf8))
    if tensor.type.dtype == .f32 || tensor.type.dtype == .i32 {
      data.append(tensor.data)
    } else {
      tensor.floats().withUnsafeBytes { data.append(contentsOf: $0) }
    }
    return data
  }
}

extension NumPy {
  /// A `.npy` file that cannot be read: the message names the file and what was expected.
  public struct DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
  }

  /// Reads a `.npy` file into an f32 tensor.
  ///
  /// Format 1.0, 2.0 or 3.0; little-endian float32, float64 or float16 elements in C order
  /// (float64 and float16 are converted). Anything else (other dtypes, Fortran order, a short
  /// file) is an error naming `path`.
  public static func decode(_ data: Data, path: String) throws(DecodeError) -> HostTensor {
    func fail(_ problem: String) -> DecodeError { DecodeError(message: "\(path): \(problem)") }
    let bytes = [UInt8](data)
    guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
      throw fail("not a .npy file (no \\x93NUMPY magic)")
    }
    let major = bytes[6]
    let headerStart = major == 1 ? 10 : 12
    guard (1...3).contains(major), bytes.count >= headerStart else {
      throw fail("unsupported .npy format version \(major).\(bytes[7])")
    }
    var headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
    if major > 1 { headerLength |= Int(bytes[10]) << 16 | Int(bytes[11]) << 24 }
    guard headerLength <= bytes.count - headerStart,
      let header = String(bytes: bytes[headerStart..<(headerStart + headerLength)], encoding: .utf8)
    else {
      throw fail("the header runs past the end of the file")
    }
    guard let descriptor = field("descr", in: header),
      let order = field("fortran_order", in: header),
      let shapeText = field("shape", in: header)
    else {
      throw fail("the header lacks 'descr', 'fortran_order' or 'shape': \(header)")
    }
    let itemSize: Int
    switch descriptor {
    case "'<f4'": itemSize = 4
    case "'<f8'": itemSize = 8
    case "'<f2'": itemSize = 2
    default:
      throw fail("holds \(descriptor) elements; expected float32 ('<f4'), float64 or float16")
    }
    guard order == "False" else { throw fail("is in Fortran order; save it in C order") }
    guard shapeText.hasPrefix("("), shapeText.hasSuffix(")") else {
      throw fail("shape \(shapeText) is not a tuple")
    }
    var shape: [Int] = []
    for part in shapeText.dropFirst().dropLast().split(separator: ",") {
      let trimmed = part.trimmingCharacters(in: .whitespaces)
      if trimmed.isEmpty { continue }
      guard let dimension = Int(trimmed), dimension >= 0, dimension <= 1 << 40 else {
        throw fail("shape \(shapeText) has a dimension that is not a count")
      }
      shape.append(dimension)
    }
    var count = 1
    for dimension in shape {
      let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
      guard !overflow, product <= Int(Int32.max) else {
        throw fail("shape \(shapeText) has more elements than lorac reads from one array")
      }
      count = product
    }
    let start = headerStart + headerLength
    guard bytes.count - start == count * itemSize else {
      throw fail(
        "shape \(shapeText) needs \(count) elements of \(itemSize) bytes; the file holds "
          + "\(bytes.count - start) bytes of data")
    }
    var values = [Float](repeating: 0, count: count)
    bytes.withUnsafeBytes { raw in
      for i in 0..<count {
        let offset = start + i * itemSize
        switch itemSize {
        case 4:
          values[i] = Float(
            bitPattern: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
        case 8:
          values[i] = Float(
            Double(
              bitPattern: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian))
        default:
          values[i] = floatFromHalf(
            raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self).littleEndian)
        }
      }
    }
    return HostTensor(shape: shape, floats: values)
  }

  /// The text of `key`'s value in a header dictionary (`'shape': (3, 4)` gives `(3, 4)`).
  private static func field(_ key: String, in header: String) -> String? {
    guard let keyRange = header.range(of: "'\(key)':") else { return nil }
    let rest = header[keyRange.upperBound...].drop(while: { $0 == " " })
    guard let first = rest.first else { return nil }
    if first == "(" {
      guard let close = rest.firstIndex(of: ")") else { return nil }
      return String(rest[...close])
    }
    let end = rest.firstIndex { $0 == "," || $0 == "}" } ?? rest.endIndex
    return String(rest[..<end]).trimmingCharacters(in: .whitespaces)
  }
}
