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
