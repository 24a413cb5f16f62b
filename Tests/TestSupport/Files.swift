import Foundation

/// A fresh path in the temporary folder, `lorac-<UUID><suffix>`; nothing is created.
public func temporaryURL(_ suffix: String = "") -> URL {
  FileManager.default.temporaryDirectory.appendingPathComponent("lorac-\(UUID())\(suffix)")
}

/// A fresh, empty folder in the temporary folder (the caller removes it).
public func temporaryFolder() throws -> URL {
  let folder = temporaryURL()
  try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  return folder
}

/// What `readNumPy` found wrong with a file.
public struct NumPyError: Error, CustomStringConvertible {
  public var description: String
}

/// Reads a little-endian float32 C-order `.npy` file (format version 1, as numpy writes it).
///
/// - Returns: the shape from the header and the values in C order.
/// - Throws: `NumPyError` when the file is not such a file.
public func readNumPy(_ url: URL) throws -> (shape: [Int], values: [Float]) {
  let data = try Data(contentsOf: url)
  guard data.count >= 10, data.prefix(6) == Data([0x93] + Array("NUMPY".utf8)) else {
    throw NumPyError(description: "\(url.lastPathComponent): not a .npy file")
  }
  let headerLength = Int(data[8]) | Int(data[9]) << 8
  let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
  guard header.contains("'descr': '<f4'"), header.contains("'fortran_order': False") else {
    throw NumPyError(description: "\(url.lastPathComponent): not float32 in C order: \(header)")
  }
  let shapeText = header.split(separator: "(")[1].split(separator: ")").first ?? ""
  let shape = shapeText.split(separator: ",").compactMap {
    Int($0.trimmingCharacters(in: .whitespaces))
  }
  let values = data[(10 + headerLength)...].withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
  return (shape, values)
}

/// The `step`, `loss`, `lr` and `grad_norm` fields of each metrics.jsonl line, as their text (so
/// that equality is bit-for-bit); times and memory differ between runs and are left out.
public func trainingMetricFields(_ folder: URL) throws -> [String] {
  let text = try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
  return text.split(separator: "\n").map { line in
    line.split(separator: ",").filter {
      !$0.contains("tokens_per_s") && !$0.contains("elapsed_s") && !$0.contains("rss_bytes")
    }.joined(separator: ",")
  }
}
