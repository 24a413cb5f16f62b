import Foundation
import TestSupport
import Testing

/// A GGUF reader for these tests, written from the layout in formats.md §3d and independent of
/// lorac's: scalar, string and array metadata, the tensor table, F32 data.
private struct TestGGUF {
  var keys: [String] = []
  var values: [String: Any] = [:]
  var tensors: [(name: String, ne: [Int], type: UInt32, offset: Int)] = []
  var dataStart = 0
  let data: Data

  init(path: String) throws {
    data = try Data(contentsOf: URL(fileURLWithPath: path))
    var at = 0
    func take(_ count: Int) throws -> Data {
      guard at + count <= data.count else { throw CancellationError() }
      defer { at += count }
      return data[at..<(at + count)]
    }
    func integer(_ count: Int) throws -> UInt64 {
      try take(count).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    func string() throws -> String {
      String(decoding: try take(Int(try integer(8))), as: UTF8.self)
    }
    func value(_ type: UInt32) throws -> Any {
      switch type {
      case 0, 1, 7: return try integer(1)
      case 2, 3: return try integer(2)
      case 4, 5: return try integer(4)
      case 6: return Float(bitPattern: UInt32(try integer(4)))
      case 8: return try string()
      case 9:
        let element = UInt32(try integer(4))
        return try (0..<Int(try integer(8))).map { _ in try value(element) }
      case 10, 11: return try integer(8)
      case 12: return Double(bitPattern: try integer(8))
      default: throw CancellationError()
      }
    }
    #expect(try take(4) == Data("GGUF".utf8))
    #expect(try integer(4) == 3)
    let tensorCount = Int(try integer(8))
    let keyCount = Int(try integer(8))
    for _ in 0..<keyCount {
      let key = try string()
      keys.append(key)
      values[key] = try value(UInt32(try integer(4)))
    }
    for _ in 0..<tensorCount {
      let name = try string()
      let ne = try (0..<Int(try integer(4))).map { _ in Int(try integer(8)) }
      let type = UInt32(try integer(4))
      tensors.append((name, ne, type, Int(try integer(8))))
    }
    dataStart = (at + 31) / 32 * 32
  }

  func floats(_ name: String) throws -> [Float] {
    let tensor = try #require(tensors.first { $0.name == name })
    #expect(tensor.type == 0)
    let start = dataStart + tensor.offset
    let count = tensor.ne.reduce(1, *)
    return data[start..<(start + 4 * count)].withUnsafeBytes {
      Array($0.bindMemory(to: Float.self))
    }
  }
}

@Test func mergedModelGivesTheAdapterLogitsAndExportKeepsGGUFRowOrder() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let adapter = folder.appendingPathComponent("adapter")
  let train = try lorac([
    "train", try modelPath(), "--task", "mystery_function", "--out", adapter.path, "--steps", "3",
    "--batch", "2", "--rank", "4", "--targets", "layers.{0,1}.{attn.{q,k,v,o},mlp.{gate,up,down}}",
  ])
  #expect(train.status == 0, "\(train.stderr)")
  let peft = try SafetensorsReader(url: adapter.appendingPathComponent("adapter_model.safetensors"))
  #expect(peft.names.count == 2 * 7 * 2)
  let qB = try peft.floats("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
  #expect(qB.contains { $0 != 0 }, "training left B at zero")

  let merged = folder.appendingPathComponent("merged.gguf")
  let merge = try lorac(["merge", try modelPath(), "--adapter", adapter.path, "-o", merged.path])
  #expect(merge.status == 0, "\(merge.stderr)")
  #expect(merge.stdout.isEmpty)
  #expect(
    try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == [
      "adapter", "merged.gguf",
    ])
  let ids = "1,9690,28,216,33,34,35,504,3575,282,6607,24"
  func logits(_ arguments: [String]) throws -> [Float] {
    let out = folder.appendingPathComponent("logits-\(UUID()).npy")
    defer { try? FileManager.default.removeItem(at: out) }
    let result = try lorac(["logits"] + arguments + ["--ids", ids, "--out", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    return try readNumPy(out).values
  }
  let fromMerge = try logits([merged.path])
  let fromAdapter = try logits([try modelPath(), "--adapter", adapter.path])
  let base = try logits([try modelPath()])
  #expect(fromMerge.count == 12 * 49152 && fromAdapter.count == fromMerge.count)
  let difference = zip(fromMerge, fromAdapter).map { abs($0 - $1) }.max() ?? .infinity
  let effect = zip(base, fromAdapter).map { abs($0 - $1) }.max() ?? 0
  #expect(difference <= 1e-4, "max |merged - adapter| = \(difference)")
  #expect(effect > 1e-2, "the adapter changes the logits by only \(effect)")

  // The llama.cpp adapter: metadata, names, shapes (ne) and q/k lora_b rows in GGUF order.
  let exported = folder.appendingPathComponent("adapter.gguf")
  let export = try lorac([
    "export", adapter.path, "--gguf-adapter", exported.path, "--model", try modelPath(),
  ])
  #expect(export.status == 0, "\(export.stderr)")
  let file = try TestGGUF(path: exported.path)
  #expect(
    file.keys == ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"])
  #expect(file.values["general.architecture"] as? String == "llama")
  #expect(file.values["general.type"] as? String == "adapter")
  #expect(file.values["adapter.type"] as? String == "lora")
  #expect(file.values["adapter.lora.alpha"] as? Float == 16)  // lorac train's alpha; r = 4
  #expect(file.tensors.count == 28)
  let modules: [(hf: String, gguf: String, inputs: Int, outputs: Int, heads: Int?)] = [
    ("self_attn.q_proj", "attn_q", 576, 576, 9), ("self_attn.k_proj", "attn_k", 576, 192, 3),
    ("self_attn.v_proj", "attn_v", 576, 192, nil),
    ("self_attn.o_proj", "attn_output", 576, 576, nil),
    ("mlp.gate_proj", "ffn_gate", 576, 1536, nil), ("mlp.up_proj", "ffn_up", 576, 1536, nil),
    ("mlp.down_proj", "ffn_down", 1536, 576, nil),
  ]
  for layer in 0..<2 {
    for module in modules {
      let name = "blk.\(layer).\(module.gguf).weight"
      let peftName = "base_model.model.model.layers.\(layer).\(module.hf)"
      let a = try #require(file.tensors.first { $0.name == name + ".lora_a" })
      let b = try #require(file.tensors.first { $0.name == name + ".lora_b" })
      #expect(a.ne == [module.inputs, 4] && b.ne == [4, module.outputs], "\(name)")
      #expect(a.offset % 32 == 0 && b.offset % 32 == 0)
      #expect(try file.floats(name + ".lora_a") == peft.floats(peftName + ".lora_A.weight"))
      let peftB = try peft.floats(peftName + ".lora_B.weight")
      var expected = peftB
      if module.heads != nil {
        for o in 0..<module.outputs {
          let source = huggingFaceRow(ofGGUFRow: o, headDimension: 64)
          for k in 0..<4 { expected[o * 4 + k] = peftB[source * 4 + k] }
        }
      }
      #expect(try file.floats(name + ".lora_b") == expected, "\(name).lora_b")
    }
  }
  // Without --model the q/k rows cannot be permuted: an error, and no file.
  let noModel = folder.appendingPathComponent("no-model.gguf")
  let refused = try lorac(["export", adapter.path, "--gguf-adapter", noModel.path])
  #expect(refused.status == 1)
  #expect(
    refused.stderr
      == "error: \(adapter.path): export of q_proj/k_proj adapters needs the model's head counts (GGUF permutes their rows per head): give --model MODEL.gguf\n"
  )
  #expect(!FileManager.default.fileExists(atPath: noModel.path))
}

/// Writes a PEFT adapter directory with F32 tensors (shapes as given, values 0.01·index).
private func writeAdapter(_ folder: URL, rank: Int, tensors: [(String, [Int])]) throws {
  try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  try """
  {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": \(rank), "lora_alpha": 8, \
  "target_modules": ["v_proj"]}
  """.write(
    to: folder.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
  var entries: [String] = []
  var bytes = Data()
  for (name, shape) in tensors {
    let count = shape.reduce(1, *)
    entries.append(
      "\"\(name)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[\(bytes.count),\(bytes.count + 4 * count)]}"
    )
    for i in 0..<count { withUnsafeBytes(of: Float(i) * 0.01) { bytes.append(contentsOf: $0) } }
  }
  var header = "{" + entries.joined(separator: ",") + "}"
  header += String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
  var file = Data()
  withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { file.append(contentsOf: $0) }
  file.append(contentsOf: Array(header.utf8))
  file.append(bytes)
  try file.write(to: folder.appendingPathComponent("adapter_model.safetensors"))
}

@Test func mergeAndExportRejectBadInputWithoutPartialFiles() throws {
  let path = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let fixture = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  // A v_proj adapter for SmolLM2-360M (hidden 960, key/value width 320).
  let other = folder.appendingPathComponent("other")
  let prefix = "base_model.model.model.layers.0.self_attn.v_proj"
  try writeAdapter(
    other, rank: 4,
    tensors: [(prefix + ".lora_A.weight", [4, 960]), (prefix + ".lora_B.weight", [320, 4])])
  let out = folder.appendingPathComponent("out.gguf").path
  let mismatch =
    "error: \(other.path): 'layers.0.attn.v': lora_A is [4, 960] and lora_B [320, 4]; rank 4 on this model needs [4, 576] and [192, 4]\n"
  let cases: [([String], String)] = [
    (["merge", path, "--adapter", other.path, "-o", out], mismatch),
    (
      ["merge", "/nonexistent.gguf", "--adapter", fixture, "-o", out],
      "error: /nonexistent.gguf: cannot open: No such file or directory\n"
    ),
    (
      ["merge", path, "--adapter", "/nonexistent", "-o", out],
      "error: /nonexistent: no adapter_config.json (expected a PEFT adapter directory)\n"
    ),
    (
      ["merge", path, "--adapter", fixture, "-o", "/nonexistent/out.gguf"],
      "error: /nonexistent/out.gguf: cannot create a file in /nonexistent\n"
    ),
    (
      ["merge", path, "--adapter", fixture, "-o", folder.path],
      "error: \(folder.path): is a directory\n"
    ),
    (
      ["merge", path, "--adapter", fixture, "-o", path],
      "error: \(path): refusing to overwrite the model being merged\n"
    ),
    (
      ["export", other.path, "--gguf-adapter", out, "--model", path], mismatch
    ),
    (
      ["export", "/nonexistent", "--gguf-adapter", out],
      "error: /nonexistent: no adapter_config.json (expected a PEFT adapter directory)\n"
    ),
    (
      ["export", fixture, "--gguf-adapter", out, "--model", "/nonexistent.gguf"],
      "error: /nonexistent.gguf: cannot open: No such file or directory\n"
    ),
    (
      ["export", fixture, "--gguf-adapter", "/nonexistent/a.gguf", "--model", path],
      "error: /nonexistent/a.gguf: cannot create a file in /nonexistent\n"
    ),
  ]
  for (arguments, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(result.stderr == message, "\(arguments)")
    #expect(!FileManager.default.fileExists(atPath: out), "\(arguments) left \(out)")
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["other"])
  }
  let dtype = try lorac(["merge", path, "--adapter", fixture, "-o", out, "--dtype", "bf16"])
  #expect(dtype.status == 1)
  #expect(
    dtype.stderr == "error: --dtype must be f32 or f16, got 'bf16' (see 'lorac merge --help')\n")
  // The 360M adapter has no q/k, so without --model it exports on its own shapes.
  let alone = try lorac(["export", other.path, "--gguf-adapter", out])
  #expect(alone.status == 0, "\(alone.stderr)")
  let file = try TestGGUF(path: out)
  #expect(file.tensors.map(\.name) == ["blk.0.attn_v.weight.lora_a", "blk.0.attn_v.weight.lora_b"])
  #expect(file.tensors.map(\.ne) == [[960, 4], [4, 320]])
  #expect(file.values["adapter.lora.alpha"] as? Float == 8)
}
