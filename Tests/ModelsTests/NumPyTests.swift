import Foundation
import IR
import Models
import TestSupport
import Testing

/// A version 1.0 `.npy` file with this header dictionary and data, padded as numpy pads.
private func npy(_ dictionary: String, _ payload: [UInt8]) -> Data {
  var header = dictionary
  header += String(repeating: " ", count: (64 - (10 + header.utf8.count + 1) % 64) % 64) + "\n"
  var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
  data.append(contentsOf: [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
  data.append(contentsOf: Array(header.utf8))
  data.append(contentsOf: payload)
  return data
}

private func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

@Test func numpyFilesDecodeAsNumpyWritesThem() throws {
  // A file numpy wrote (the steering vector fixture, float32 [576]).
  let url = smolLMFixtures.appendingPathComponent("hooks/steer.npy")
  let steer = try NumPy.decode(Data(contentsOf: url), path: url.path)
  #expect(steer.type == TensorType(.f32, [576]))
  #expect(try readNumPy(url).values == steer.floats())
  // float64 and float16 are converted; a 0-d array has shape [].
  let doubles = try NumPy.decode(
    npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 1), }", bytes([1.5, -2.25])),
    path: "d.npy")
  #expect(doubles.type.shape == [2, 1] && doubles.floats() == [1.5, -2.25])
  let halves = try NumPy.decode(
    npy(
      "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", bytes([UInt16(0x3C00), 0xC000])),
    path: "h.npy")
  #expect(halves.floats() == [1, -2])
  let scalar = try NumPy.decode(
    npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", bytes([Float(3)])), path: "s.npy"
  )
  #expect(scalar.type.shape == [] && scalar.floats() == [3])
  // Round trip through the encoder.
  let tensor = HostTensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
  #expect(try NumPy.decode(NumPy.encode(tensor), path: "r.npy") == tensor)
}

@Test func badNumpyFilesAreOneLineErrorsNamingTheFile() {
  func message(_ data: Data) -> String {
    do {
      _ = try NumPy.decode(data, path: "v.npy")
      return "no error"
    } catch {
      return error.message
    }
  }
  let f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
  #expect(message(Data("hello".utf8)) == "v.npy: not a .npy file (no \\x93NUMPY magic)")
  #expect(
    message(npy(f4, bytes([Float(1)])))
      == "v.npy: shape (2,) needs 2 elements of 4 bytes; the file holds 4 bytes of data")
  #expect(
    message(npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", bytes([Float(1)])))
      == "v.npy: holds '>f4' elements; expected float32 ('<f4'), float64 or float16")
  #expect(
    message(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", bytes([Float(1)])))
      == "v.npy: is in Fortran order; save it in C order")
  #expect(
    message(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", []))
      == "v.npy: shape (-1,) has a dimension that is not a count")
  #expect(message(npy("{'shape': (1,), }", bytes([Float(1)]))).hasPrefix("v.npy: the header lacks"))
  // A header length past the end of the file.
  var truncated = npy(f4, bytes([Float(1), 2]))
  truncated = truncated.prefix(20)
  #expect(message(truncated) == "v.npy: the header runs past the end of the file")
  // Dimensions whose product overflows are refused, not trusted.
  #expect(
    message(
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", [])
    )
      == "v.npy: shape (1099511627776, 1099511627776) has more elements than lorac reads from one "
      + "array")
}
