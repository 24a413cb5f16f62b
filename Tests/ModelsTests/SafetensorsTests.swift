import Foundation
import IR
import Models
import TestSupport
import Testing

/// A file with the given JSON header (unpadded) followed by `data`.
private func file(_ header: String, _ data: [UInt8] = []) -> Data {
  var bytes = Data()
  withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
  bytes.append(contentsOf: Array(header.utf8))
  bytes.append(contentsOf: data)
  return bytes
}

private func error(_ data: Data) -> String {
  do {
    _ = try SafetensorsFile(data: data, path: "x.safetensors")
    return "no error"
  } catch {
    return error.message
  }
}

@Test func safetensorsWriteThenReadRoundTrips() throws {
  let url = temporaryURL(".safetensors")
  defer { try? FileManager.default.removeItem(at: url) }
  let a = HostTensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
  let b = try HostTensor(
    type: TensorType(.bf16, [3]), data: Data([0x80, 0x3F, 0x00, 0x40, 0x40, 0xC0]))
  let c = HostTensor(shape: [1], ints: [-7])
  try SafetensorsFile.write(
    [("layers.0.q.lora_A.weight", a), ("b", b), ("c", c)], metadata: ["format": "pt"], to: url)
  let bytes = try Data(contentsOf: url)
  let headerLength = bytes.withUnsafeBytes {
    Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)))
  }
  #expect((8 + headerLength) % 8 == 0)
  let read = try SafetensorsFile(path: url.path)
  #expect(read.metadata == ["format": "pt"])
  #expect(read.entries.map(\.name) == ["layers.0.q.lora_A.weight", "b", "c"])
  #expect(try read.tensor(named: "layers.0.q.lora_A.weight") == a)
  #expect(try read.tensor(named: "b").floats() == [1, 2, -3])
  #expect(try read.tensor(named: "c").ints() == [-7])
}

@Test func malformedSafetensorsGiveExactErrors() {
  let f32x2 = [UInt8](repeating: 0, count: 8)
  var huge = Data()
  withUnsafeBytes(of: UInt64(200_000_000).littleEndian) { huge.append(contentsOf: $0) }
  var pastEnd = Data()
  withUnsafeBytes(of: UInt64(100).littleEndian) { pastEnd.append(contentsOf: $0) }
  pastEnd.append(contentsOf: Array("{}".utf8))
  let cases: [(Data, String)] = [
    (Data([1, 2, 3]), "x.safetensors: file of 3 bytes is too short for a header length"),
    (huge, "x.safetensors: header length 200000000 exceeds the limit of 100000000 bytes"),
    (pastEnd, "x.safetensors: header length 100 extends past the end of the file (10 bytes)"),
    (file("[1,2]"), "x.safetensors: header is not a JSON object (it must start with '{')"),
    (file("{\"a\":1}"), "x.safetensors: entry 'a' is not an object"),
    (file("{\"a\":"), "x.safetensors: header: offset 5: unexpected end of input"),
    (
      file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", f32x2),
      "x.safetensors: 'a' has no valid data_offsets [begin, end]"
    ),
    (
      file("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", f32x2),
      "x.safetensors: 'a': F32[3] needs 12 bytes, data_offsets hold 8"
    ),
    (
      file("{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2),
      "x.safetensors: 'a' has unknown dtype 'F31'"
    ),
    (
      file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", f32x2),
      "x.safetensors: a hole of 4 bytes before 'a'"
    ),
    (
      file(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        f32x2), "x.safetensors: 'b' overlaps the tensor before it"
    ),
    (
      file(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
        f32x2), "x.safetensors: header: offset 54: duplicate key \"a\""
    ),
    (
      file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", f32x2),
      "x.safetensors: tensor data extends past the end of the file"
    ),
    (
      file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f32x2),
      "x.safetensors: 4 bytes after the last tensor"
    ),
    (
      file("{\"__metadata__\":{\"k\":1}}"),
      "x.safetensors: __metadata__ value of 'k' is not a string"
    ),
  ]
  for (data, expected) in cases { #expect(error(data) == expected) }
}

@Test func failedWritesLeaveNothingBehind() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let tensor = HostTensor(shape: [1], floats: [1])
  // The target is a directory: the rename fails after the temporary file was written.
  let target = folder.appendingPathComponent("adapter.safetensors")
  try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
  #expect(throws: SafetensorsError.self) {
    try SafetensorsFile.write([("a", tensor)], to: target)
  }
  #expect(
    try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["adapter.safetensors"])
  #expect(throws: SafetensorsError.self) {
    try SafetensorsFile.write(
      [("a", tensor)], to: folder.appendingPathComponent("missing/x.safetensors"))
  }
  #expect(
    throws: SafetensorsError(message: "\(folder.path)/d.safetensors: duplicate tensor name 'a'")
  ) {
    try SafetensorsFile.write(
      [("a", tensor), ("a", tensor)], to: folder.appendingPathComponent("d.safetensors"))
  }
}

@Test func staleTemporaryFilesOfTheGivenNamesAreRemovedAndNothingElse() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let uuid = UUID().uuidString
  // What a writer killed mid-write leaves, next to files that only look alike.
  let stale = [".metrics.jsonl.\(uuid).tmp", ".a.b.safetensors.\(uuid).tmp"]
  let kept = [
    "metrics.jsonl", ".metrics.jsonl.not-a-uuid.tmp", ".notes.txt.\(uuid).tmp",
    "metrics.jsonl.\(uuid).tmp", ".metrics.jsonl.\(uuid).tmp.bak",
  ]
  for name in stale + kept {
    try Data("x".utf8).write(to: folder.appendingPathComponent(name))
  }
  let removed = removeStaleTemporaryFiles(
    in: folder, for: ["metrics.jsonl", "a.b.safetensors", "other.json"])
  #expect(removed == stale.sorted())
  #expect(
    try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == kept.sorted())
  #expect(removeStaleTemporaryFiles(in: folder.appendingPathComponent("none"), for: ["x"]) == [])
}

@Test func safetensorsCorruptionNeverCrashes() throws {
  let url = temporaryURL(".safetensors")
  defer { try? FileManager.default.removeItem(at: url) }
  try SafetensorsFile.write([("a", HostTensor(shape: [2, 2], floats: [1, 2, 3, 4]))], to: url)
  let original = try Data(contentsOf: url)
  // The layout by the format, read here by hand: u64 header length, the header, then the one
  // tensor's 16 bytes (1, 2, 3, 4 as little-endian f32) at the end of the file.
  let dataStart = original.count - 16
  let headerLength = original.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
  try #require(8 + headerLength == dataStart)
  let four: [Float] = [1, 2, 3, 4]
  try #require(
    original[dataStart...].elementsEqual(
      four.flatMap { value in
        withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) }
      }))
  /// The file's tensors' bytes as it reads them, or its error.
  func read(_ bytes: Data) -> (entries: [SafetensorsFile.Entry], data: [String: Data?])? {
    guard let file = try? SafetensorsFile(data: bytes, path: "x") else { return nil }
    var data: [String: Data?] = [:]
    for entry in file.entries { data[entry.name] = try? file.tensor(named: entry.name).data }
    return (file.entries, data)
  }
  let reference = try #require(read(original))
  var generator = SplitMix64(seed: 9)
  var seen = (data: 0, length: 0, header: 0, headerParsed: 0)
  for _ in 0..<2000 {
    var bytes = original
    let index = Int(generator.next() % UInt64(bytes.count))
    bytes[index] = UInt8(truncatingIfNeeded: generator.next())
    let result = read(bytes)
    if index >= dataStart || bytes == original {
      // Tensor bytes (or nothing) changed: the same entries, reading the new bytes.
      seen.data += 1
      let (entries, data) = try #require(result, "byte \(index) changed")
      #expect(entries == reference.entries)
      #expect(data["a"] == bytes[dataStart...], "byte \(index) changed")
    } else if index < 8 {
      // A different header length never lands on another valid header here.
      seen.length += 1
      #expect(result == nil, "header length byte \(index) changed")
    } else if let (entries, data) = result {
      // The JSON changed and still parses: every entry lies inside the file and reads its bytes.
      seen.headerParsed += 1
      let start = 8 + bytes.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
      for entry in entries {
        #expect(start + entry.end <= bytes.count && entry.begin <= entry.end, "\(entry.name)")
        if case .some(.some(let tensor)) = data[entry.name] {
          #expect(tensor == bytes[(start + entry.begin)..<(start + entry.end)])
        }
      }
    } else {
      seen.header += 1
    }
    // A file cut short of its tensor data is an error (unless the header now claims less data).
    let cut = Int(generator.next() % UInt64(bytes.count))
    let prefix = read(bytes.prefix(cut))
    if index >= dataStart || bytes == original {
      #expect(prefix == nil, "a prefix of \(cut) bytes")
    }
  }
  #expect(seen.data > 20 && seen.length > 5 && seen.header > 100, "\(seen)")
}

@Test func mappedSafetensorsShareTheFile() throws {
  let url = temporaryURL(".safetensors")
  defer { try? FileManager.default.removeItem(at: url) }
  let weights = HostTensor(shape: [4, 8], floats: (0..<32).map(Float.init))
  let bias = HostTensor(shape: [3], floats: [1, 2, 3])
  try SafetensorsFile.write([("bias", bias), ("w", weights)], to: url)
  let mapping = try FileMapping(path: url.path)
  let file = try SafetensorsFile(
    data: mapping.data(offset: 0, count: mapping.bytes.count), path: url.path, mapping: mapping)
  guard let base = mapping.bytes.baseAddress, let entry = file.entry("w") else {
    Issue.record("no mapping or no entry 'w'")
    return
  }
  let headerLength = Int(mapping.bytes.loadUnaligned(as: UInt64.self))
  let tensor = try file.tensor(named: "w")
  #expect(tensor == weights)
  #expect(tensor.data.withUnsafeBytes { $0.baseAddress } == base + 8 + headerLength + entry.begin)
  // Bytes that are not the mapping's own are copied out instead.
  let copied = try SafetensorsFile(data: try Data(contentsOf: url), path: "x", mapping: mapping)
  #expect(try copied.tensor(named: "w") == weights)
}

@Test func headersMustStartWithABrace() {
  let padded = file(" {}")
  #expect(error(padded) == "x.safetensors: header is not a JSON object (it must start with '{')")
  #expect(error(file("")) == "x.safetensors: header is not a JSON object (it must start with '{')")
  #expect(error(file("{}")) == "no error")
  #expect(error(file("{}   ")) == "no error")
}

@Test func theMetadataKeyCannotNameATensor() {
  let url = temporaryURL(".safetensors")
  #expect(
    throws: SafetensorsError(
      message: "\(url.path): '__metadata__' is reserved and cannot name a tensor")
  ) {
    try SafetensorsFile.write([("__metadata__", HostTensor(shape: [1], floats: [1]))], to: url)
  }
  #expect(!FileManager.default.fileExists(atPath: url.path))
}
