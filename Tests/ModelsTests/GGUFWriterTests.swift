import Foundation
import IR
import Models
import TestSupport
import Testing

private func littleEndianFloats(_ values: [Float]) -> [UInt8] {
  values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
}

/// The metadata of `sampleFile()` (GGUFTests.swift) as values.
private let sampleMetadata: [(key: String, value: GGUFValue)] = [
  ("u8", .uint8(200)), ("i8", .int8(-1)), ("u16", .uint16(60000)), ("i16", .int16(-2)),
  ("u32", .uint32(4_000_000_000)), ("i32", .int32(-3)), ("f32", .float32(1.5)),
  ("bool", .bool(true)), ("name", .string("tiny")),
  ("list", .array([.string("a"), .string("bc")])),
  ("u64", .uint64(1 << 40)), ("i64", .int64(-5)), ("f64", .float64(0.25)),
  ("nested", .array([.array([.uint32(7), .uint32(9)])])),
]

@Test func writerProducesTheFormatByteForByte() throws {
  // The tests' own encoder (GGUFTests.swift) lays the same content out from the format's text.
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let writer = GGUFFileWriter(
    metadata: sampleMetadata,
    tensors: [
      .f32(name: "w", shape: [3, 2], floats: [0, 1, 2, 3, 4, 5]),
      .f32(name: "b", shape: [3], floats: [0, -1, -2]),
    ])
  let path = folder.appendingPathComponent("sample.gguf").path
  try writer.write(to: path)
  #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(sampleFile()))

  // With general.alignment = 64 the tensors start on multiples of 64.
  let f32 = littleEndianFloats([1, 2, 3])
  let expected = GGUFWriter.file(
    metadata: [("general.alignment", 4, { $0.u32(64) })],
    tensors: [("t", [3], 0, f32), ("u", [3], 0, f32)], alignment: 64)
  let aligned = GGUFFileWriter(
    metadata: [("general.alignment", .uint32(64))],
    tensors: [
      .f32(name: "t", shape: [3], floats: [1, 2, 3]),
      .f32(name: "u", shape: [3], floats: [1, 2, 3]),
    ])
  try aligned.write(to: path)
  #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(expected))
}

@Test func writerRoundTripsEveryMetadataTypeAndTensorType() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let metadata: [(key: String, value: GGUFValue)] = [
    ("general.architecture", .string("llama")), ("u8", .uint8(255)), ("i8", .int8(-128)),
    ("u16", .uint16(65535)), ("i16", .int16(-32768)), ("u32", .uint32(.max)),
    ("i32", .int32(.min)), ("f32", .float32(-0.1)), ("false", .bool(false)),
    ("true", .bool(true)), ("unicode", .string("Ġ t ✓ \u{1F642}")), ("empty string", .string("")),
    ("u64", .uint64(.max)), ("i64", .int64(.min)), ("f64", .float64(1e-300)),
    ("empty array", .array([])), ("ints", .array([.int32(-1), .int32(2), .int32(3)])),
    ("floats", .array([.float32(1.5), .float32(-2)])), ("bools", .array([.bool(true)])),
    ("deep", .array([.array([.array([.array([.uint8(1)])])])])),
    ("ragged", .array([.array([.string("x")]), .array([.uint64(1), .uint64(2)])])),
  ]
  // Quantized blocks pass through as bytes: any bytes are a valid Q4_1 / Q8_0 block.
  let q41 = Data((0..<(2 * 40)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) })
  let q80 = Data((0..<34).map { UInt8(truncatingIfNeeded: $0 &* 53 &+ 5) })
  let halves: [Float] = [
    0.5, -2, 1024, Float(sign: .plus, exponent: -14, significand: 1),
    Float(sign: .minus, exponent: -24, significand: 1), 0.1,
  ]
  let writer = GGUFFileWriter(
    metadata: metadata,
    tensors: [
      GGUFTensorData(name: "q4_1", shape: [2, 64], typeID: 3, data: q41),
      .f16(name: "half", shape: [halves.count], floats: halves),
      GGUFTensorData(name: "q8_0", shape: [1, 1, 32], typeID: 8, data: q80),
      .f32(name: "four", shape: [1, 2, 1, 3], floats: [1, 2, 3, 4, 5, 6]),
      GGUFTensorData(name: "lazy", shape: [2], typeID: 0) { () throws(GGUFError) -> Data in
        Data(littleEndianFloats([7, -8]))
      },
    ])
  let path = folder.appendingPathComponent("all.gguf").path
  try writer.write(to: path)
  let file = try GGUFFile(path: path)
  #expect(file.version == 3)
  #expect(file.metadata.map(\.key) == metadata.map(\.key))
  for ((_, written), (key, read)) in zip(metadata, file.metadata) {
    #expect(written == read, "\(key)")
  }
  #expect(file["f32"] == .float32(-0.1))
  #expect(file["deep"]?.array?.first?.array?.first?.array?.first == .array([.uint8(1)]))
  #expect(file.tensors.map(\.name) == ["q4_1", "half", "q8_0", "four", "lazy"])
  #expect(file.tensors.map(\.shape) == [[2, 64], [6], [1, 1, 32], [1, 2, 1, 3], [2]])
  #expect(file.tensors.map(\.typeID) == [3, 1, 8, 0, 0])
  let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
  func stored(_ name: String) throws -> Data {
    let info = try #require(file.info(name))
    #expect(info.offset % 32 == 0)
    let start = file.dataOffset + info.offset
    return bytes[start..<(start + info.byteCount)]
  }
  #expect(try stored("q4_1") == q41)
  #expect(try stored("q8_0") == q80)
  #expect(try stored("four") == Data(littleEndianFloats([1, 2, 3, 4, 5, 6])))
  #expect(try file.tensor(named: "lazy").floats() == [7, -8])
  // Exactly representable halves (a normal minimum, a subnormal) come back unchanged; 0.1 rounds
  // to f16 0x2E66.
  #expect(try stored("half").prefix(2) == Data([0x00, 0x38]))
  let decoded = try file.tensor(named: "half").floats()
  #expect(Array(decoded.prefix(5)) == Array(halves.prefix(5)))
  #expect(decoded[5] == 0.099_975_585_937_5)
}

@Test func writerHonoursTheAlignment() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  for alignment in [1, 8, 64, 256] {
    let path = folder.appendingPathComponent("a\(alignment).gguf").path
    let q80 = Data(repeating: 0x3C, count: 34)
    try GGUFFileWriter(
      metadata: [("general.alignment", .uint32(UInt32(alignment))), ("x", .string("odd"))],
      tensors: [
        .f32(name: "three", shape: [3], floats: [1, 2, 3]),
        GGUFTensorData(name: "block", shape: [32], typeID: 8, data: q80),
        .f16(name: "five", shape: [5], floats: [1, 2, 3, 4, 5]),
      ]
    ).write(to: path)
    let file = try GGUFFile(path: path)
    let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    #expect(file.alignment == alignment)
    #expect(file.dataOffset % alignment == 0)
    #expect(bytes.count % alignment == 0)
    var end = file.dataOffset
    for info in file.tensors {
      #expect(info.offset % alignment == 0, "\(info.name) at \(info.offset)")
      let start = file.dataOffset + info.offset
      // Only zeros between one tensor's end and the next one's start.
      #expect(bytes[end..<start].allSatisfy { $0 == 0 })
      end = start + info.byteCount
    }
    #expect(try file.tensor(named: "five").floats() == [1, 2, 3, 4, 5])
    #expect(try file.tensor(named: "block").data == q80)
  }
}

@Test func writerRejectsBadInputAndLeavesNoFile() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let path = folder.appendingPathComponent("out.gguf").path
  let one = GGUFTensorData.f32(name: "t", shape: [1], floats: [1])
  let cases: [(GGUFFileWriter, String)] = [
    (
      GGUFFileWriter(metadata: [("k", .uint8(1)), ("k", .uint8(2))]),
      "duplicate metadata key 'k'"
    ),
    (GGUFFileWriter(tensors: [one, one]), "duplicate tensor name 't'"),
    (
      GGUFFileWriter(tensors: [
        GGUFTensorData(name: "t", shape: [3], typeID: 0, data: Data(count: 8))
      ]),
      "tensor 't' (F32 [3]) needs 12 bytes, got 8"
    ),
    (
      GGUFFileWriter(tensors: [
        GGUFTensorData(name: "q", shape: [2, 32], typeID: 3, data: Data(count: 20))
      ]),
      "tensor 'q' (Q4_1 [2, 32]) needs 40 bytes, got 20"
    ),
    (
      GGUFFileWriter(tensors: [GGUFTensorData(name: "q", shape: [30], typeID: 3, data: Data())]),
      "tensor 'q': rows of 30 are not whole Q4_1 blocks of 32"
    ),
    (
      GGUFFileWriter(tensors: [GGUFTensorData(name: "t", shape: [1], typeID: 77, data: Data())]),
      "tensor 't' has unknown ggml type 77"
    ),
    (
      GGUFFileWriter(tensors: [.f32(name: "t", shape: [2, 0], floats: [])]),
      "tensor 't' has shape [2, 0] (dimensions must be positive)"
    ),
    (
      GGUFFileWriter(tensors: [.f32(name: "t", shape: [1, 1, 1, 1, 1], floats: [1])]),
      "tensor 't' has 5 dimensions (expected 1 to 4)"
    ),
    (
      GGUFFileWriter(tensors: [
        .f32(name: String(repeating: "n", count: 64), shape: [1], floats: [1])
      ]),
      "tensor name '\(String(repeating: "n", count: 64))' is 64 bytes (llama.cpp reads at most 63)"
    ),
    (
      GGUFFileWriter(metadata: [("general.alignment", .uint32(48))]),
      "general.alignment must be an integer power of two up to 2^20, got uint32(48)"
    ),
    (
      GGUFFileWriter(metadata: [("general.alignment", .string("32"))]),
      "general.alignment must be an integer power of two up to 2^20, got string(\"32\")"
    ),
    (
      GGUFFileWriter(metadata: [("mixed", .array([.uint8(1), .int8(1)]))]),
      "metadata 'mixed' is an array of mixed types (element 0 has type 0, element 1 type 1)"
    ),
    (
      GGUFFileWriter(metadata: [("deep", .array([.array([.array([.array([.array([])])])])]))]),
      "metadata 'deep' nests arrays more than 4 deep"
    ),
    (
      GGUFFileWriter(tensors: [
        GGUFTensorData(name: "lazy", shape: [4], typeID: 0) { () throws(GGUFError) -> Data in
          Data(count: 12)
        }
      ]),
      "tensor 'lazy' ([4]) needs 16 bytes, got 12"
    ),
    (
      GGUFFileWriter(tensors: [
        one,
        GGUFTensorData(name: "failing", shape: [1], typeID: 0) { () throws(GGUFError) -> Data in
          throw GGUFError(message: "the producer failed")
        },
      ]),
      "the producer failed"
    ),
  ]
  // An existing file stays as it was when a write fails.
  try Data("old".utf8).write(to: URL(fileURLWithPath: path))
  for (writer, expected) in cases {
    do {
      try writer.write(to: path)
      Issue.record("no error for '\(expected)'")
    } catch {
      let message =
        error.message.hasPrefix(path + ": ")
        ? String(error.message.dropFirst(path.count + 2)) : error.message
      #expect(message == expected)
    }
    #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data("old".utf8))
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["out.gguf"])
  }
  let places: [(String, String)] = [
    ("/nonexistent/x.gguf", "/nonexistent/x.gguf: cannot create a file in /nonexistent"),
    (folder.path, "\(folder.path): is a directory"),
  ]
  for (target, expected) in places {
    #expect(throws: GGUFError(message: expected)) { try GGUFFileWriter().write(to: target) }
  }
}

@Test func baseModelNameComesFromTheFilesMetadataElseItsPath() throws {
  let folder = try temporaryFolder()
  func name(_ metadata: [(key: String, value: GGUFValue)]) throws -> String {
    let path = folder.appendingPathComponent("m\(metadata.count).gguf").path
    try GGUFFileWriter(metadata: [("general.architecture", .string("llama"))] + metadata)
      .write(to: path)
    return try GGUFFile(path: path).baseModelName
  }
  #expect(
    try name([("general.source.huggingface.repository", .string("HuggingFaceTB/SmolLM2-135M"))])
      == "HuggingFaceTB/SmolLM2-135M")
  #expect(
    try name([
      ("general.organization", .string("x")),
      ("general.source.url", .string("https://huggingface.co/Qwen/Qwen2.5-0.5B/tree/main")),
    ]) == "Qwen/Qwen2.5-0.5B")
  #expect(
    try name([
      ("general.base_model.count", .uint32(1)),
      ("general.base_model.0.repo_url", .string("https://huggingface.co/meta-llama/Llama-3.2-1B")),
      ("general.name", .string("Llama 3.2 1B")),
    ]) == "meta-llama/Llama-3.2-1B")
  // SmolLM2's GGUF names no repository (only an organization and a display name): its path.
  let bare = try name([])
  #expect(bare.hasPrefix("/") && bare.hasSuffix("/m0.gguf"))
}
