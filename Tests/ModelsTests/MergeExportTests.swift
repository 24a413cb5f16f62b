import Foundation
import IR
import Models
import TestSupport
import Testing

private let fixture = smolLMFixtures.appendingPathComponent("peft_qv_r4")

/// A PEFT tensor's values, row-major in its stored shape, read by the safetensors reader.
private func peft(_ file: SafetensorsFile, layer: Int, module: String, _ half: String) throws
  -> (shape: [Int], values: [Float])
{
  let tensor = try file.tensor(
    named: "base_model.model.model.layers.\(layer).self_attn.\(module).lora_\(half).weight")
  return (tensor.type.shape, tensor.floats())
}

/// One element of a Q4_1 GGUF tensor decoded by hand from the file's bytes:
/// f16 d, f16 m, 16 bytes of nibbles (low nibbles are the block's first 16 values).
private func q4_1Element(path: String, file: GGUFFile, tensor: String, index: Int) throws -> Float {
  let info = try #require(file.info(tensor))
  #expect(info.typeName == "Q4_1")
  let handle = try #require(FileHandle(forReadingAtPath: path))
  defer { try? handle.close() }
  try handle.seek(toOffset: UInt64(file.dataOffset + info.offset + index / 32 * 20))
  let block = [UInt8](try #require(try handle.read(upToCount: 20)))
  let d = Float(Float16(bitPattern: UInt16(block[0]) | UInt16(block[1]) << 8))
  let m = Float(Float16(bitPattern: UInt16(block[2]) | UInt16(block[3]) << 8))
  let j = index % 32
  let q = j < 16 ? block[4 + j] & 0xF : block[4 + j - 16] >> 4
  return Float(q) * d + m
}

@Test func mergeFoldsAPEFTAdapterIntoTheModel() throws {
  let path = try modelPath()
  let model = try GGUFFile(path: path)
  let adapter = try PEFTAdapter(directory: fixture.path, config: LlamaConfig(gguf: model))
  #expect(adapter.scale == 2)  // alpha 8, r 4
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let out = folder.appendingPathComponent("merged.gguf").path
  try LoraMerge.mergedModel(model, adapter: adapter).write(to: out)
  let merged = try GGUFFile(path: out)

  // The model's metadata and tensor table, with the six adapted weights now F32.
  #expect(merged.metadata.map(\.key) == model.metadata.map(\.key))
  #expect(zip(merged.metadata, model.metadata).allSatisfy { $0.value == $1.value })
  #expect(merged.tensors.map(\.name) == model.tensors.map(\.name))
  #expect(merged.tensors.map(\.shape) == model.tensors.map(\.shape))
  let adapted = Set(
    [0, 1, 29].flatMap { ["blk.\($0).attn_q.weight", "blk.\($0).attn_v.weight"] })
  for info in model.tensors {
    let copy = try #require(merged.info(info.name))
    if adapted.contains(info.name) {
      #expect(copy.typeName == "F32")
    } else {
      #expect(copy.typeID == info.typeID)
      #expect(try merged.tensor(named: info.name).data == model.tensor(named: info.name).data)
    }
  }

  let weights = try SafetensorsFile(
    path: fixture.appendingPathComponent("adapter_model.safetensors").path)
  // One element by hand: GGUF row 1 of blk.0.attn_q is HF row 32 (head 0, pair 0, second half).
  #expect(huggingFaceRow(ofGGUFRow: 1, headDimension: 64) == 32)
  #expect(huggingFaceRow(ofGGUFRow: 2, headDimension: 64) == 1)
  #expect(huggingFaceRow(ofGGUFRow: 64 + 63, headDimension: 64) == 64 + 63)
  let (row, column) = (1, 37)
  let a = try peft(weights, layer: 0, module: "q_proj", "A")  // [4, 576]
  let b = try peft(weights, layer: 0, module: "q_proj", "B")  // [576, 4]
  #expect(a.shape == [4, 576] && b.shape == [576, 4])
  let base = try q4_1Element(
    path: path, file: model, tensor: "blk.0.attn_q.weight", index: row * 576 + column)
  var delta = 0.0
  for k in 0..<4 { delta += Double(b.values[32 * 4 + k]) * Double(a.values[k * 576 + column]) }
  let element = try merged.tensor(named: "blk.0.attn_q.weight").floats()[row * 576 + column]
  #expect(abs(Double(element) - (Double(base) + 2 * delta)) <= 1e-6)
  #expect(abs(2 * delta) > 1e-4, "the fixture's update at this element is too small to see")

  // Whole tensors: merged = dequantized W + 2·B·A with q rows permuted, v rows as they are.
  for (layer, module, gguf, rows) in [
    (0, "q_proj", "attn_q", 576), (29, "v_proj", "attn_v", 192), (1, "q_proj", "attn_q", 576),
  ] {
    let name = "blk.\(layer).\(gguf).weight"
    let w = try model.dequantized(named: name)
    let got = try merged.tensor(named: name).floats()
    let a = try peft(weights, layer: layer, module: module, "A").values
    let b = try peft(weights, layer: layer, module: module, "B").values
    var worst = 0.0
    var largestUpdate = 0.0
    for o in 0..<rows {
      let source = module == "q_proj" ? huggingFaceRow(ofGGUFRow: o, headDimension: 64) : o
      for i in 0..<576 {
        var update = 0.0
        for k in 0..<4 { update += Double(b[source * 4 + k]) * Double(a[k * 576 + i]) }
        largestUpdate = max(largestUpdate, abs(2 * update))
        worst = max(worst, abs(Double(got[o * 576 + i]) - Double(w[o * 576 + i]) - 2 * update))
      }
    }
    #expect(worst <= 2e-6, "\(name): worst difference \(worst)")
    #expect(largestUpdate > 1e-3, "\(name)")
  }

  // f16 storage: the same merged values, rounded to half precision.
  let half = folder.appendingPathComponent("merged-f16.gguf").path
  try LoraMerge.mergedModel(model, adapter: adapter, dtype: .f16).write(to: half)
  let halfFile = try GGUFFile(path: half)
  #expect(halfFile.info("blk.0.attn_q.weight")?.typeName == "F16")
  #expect(halfFile.info("blk.2.attn_q.weight")?.typeName == "Q4_1")
  let rounded = try merged.tensor(named: "blk.0.attn_q.weight").floats().map {
    Float(Float16($0))
  }
  #expect(try halfFile.tensor(named: "blk.0.attn_q.weight").floats() == rounded)
  #expect(throws: GGUFError.self) {
    try LoraMerge.mergedModel(model, adapter: adapter, dtype: .q4_1)
  }
}

@Test func exportWritesALlamaCppLoRAAdapter() throws {
  let model = try GGUFFile(path: try modelPath())
  let adapter = try PEFTAdapter(directory: fixture.path, config: LlamaConfig(gguf: model))
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let out = folder.appendingPathComponent("adapter.gguf").path
  try LoraMerge.llamaCppAdapter(adapter, model: model).write(to: out)
  let file = try GGUFFile(path: out)
  #expect(
    file.metadata.map(\.key) == [
      "general.architecture", "general.type", "adapter.type", "adapter.lora.alpha",
    ])
  #expect(file["general.architecture"] == .string("llama"))
  #expect(file["general.type"] == .string("adapter"))
  #expect(file["adapter.type"] == .string("lora"))
  #expect(file["adapter.lora.alpha"] == .float32(8))
  var names: [String] = []
  for layer in [0, 1, 29] {
    for module in ["attn_q", "attn_v"] {
      names += ["blk.\(layer).\(module).weight.lora_a", "blk.\(layer).\(module).weight.lora_b"]
    }
  }
  #expect(file.tensors.map(\.name) == names)
  #expect(file.tensors.allSatisfy { $0.typeName == "F32" && $0.offset % 32 == 0 })
  let weights = try SafetensorsFile(
    path: fixture.appendingPathComponent("adapter_model.safetensors").path)
  for layer in [0, 1, 29] {
    for (module, gguf, rows) in [("q_proj", "attn_q", 576), ("v_proj", "attn_v", 192)] {
      let prefix = "blk.\(layer).\(gguf).weight"
      // llama.cpp's check: model ne[0] == a.ne[0], model ne[1] == b.ne[1], a.ne[1] == b.ne[0].
      #expect(file.info(prefix + ".lora_a")?.shape == [4, 576])
      #expect(file.info(prefix + ".lora_b")?.shape == [rows, 4])
      let a = try peft(weights, layer: layer, module: module, "A")
      let b = try peft(weights, layer: layer, module: module, "B")
      #expect(try file.tensor(named: prefix + ".lora_a").floats() == a.values)
      let exported = try file.tensor(named: prefix + ".lora_b").floats()
      var expected = b.values
      if module == "q_proj" {
        for o in 0..<rows {
          let source = huggingFaceRow(ofGGUFRow: o, headDimension: 64)
          for k in 0..<4 { expected[o * 4 + k] = b.values[source * 4 + k] }
        }
        #expect(expected != b.values)
      }
      #expect(exported == expected, "\(prefix).lora_b")
    }
  }

  // rsLoRA: alpha / sqrt(r) is written as an alpha whose alpha / r is the same scale.
  let rs = folder.appendingPathComponent("rslora")
  try FileManager.default.createDirectory(at: rs, withIntermediateDirectories: true)
  try FileManager.default.copyItem(
    at: fixture.appendingPathComponent("adapter_model.safetensors"),
    to: rs.appendingPathComponent("adapter_model.safetensors"))
  let config = try String(
    contentsOf: fixture.appendingPathComponent("adapter_config.json"), encoding: .utf8)
  try config.replacingOccurrences(of: "\"use_rslora\": false", with: "\"use_rslora\": true")
    .write(to: rs.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
  let rsAdapter = try PEFTAdapter(directory: rs.path, config: LlamaConfig(gguf: model))
  #expect(rsAdapter.scale == 4)
  let rsOut = folder.appendingPathComponent("rs.gguf").path
  try LoraMerge.llamaCppAdapter(rsAdapter, model: model).write(to: rsOut)
  #expect(try GGUFFile(path: rsOut)["adapter.lora.alpha"] == .float32(16))

  // q_proj needs the head counts, which only the model has.
  #expect(
    throws: FileError(
      message:
        "\(fixture.path): export of q_proj/k_proj adapters needs the model's head counts (GGUF permutes their rows per head): give --model MODEL.gguf"
    )
  ) { try PEFTAdapter(directory: fixture.path, withoutModelFor: "export") }
}

@Test func exportWithoutTheModelForAdaptersWithoutQK() throws {
  let model = try GGUFFile(path: try modelPath())
  let weights = try SafetensorsFile(
    path: fixture.appendingPathComponent("adapter_model.safetensors").path)
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  // The fixture's v_proj halves alone.
  let kept = weights.entries.map(\.name).filter { $0.contains("v_proj") }
  try SafetensorsFile.write(
    try kept.map { (name: $0, tensor: try weights.tensor(named: $0)) },
    to: folder.appendingPathComponent("adapter_model.safetensors"))
  try FileManager.default.copyItem(
    at: fixture.appendingPathComponent("adapter_config.json"),
    to: folder.appendingPathComponent("adapter_config.json"))
  let alone = try PEFTAdapter(directory: folder.path, withoutModelFor: "export")
  let withModel = try PEFTAdapter(directory: folder.path, config: LlamaConfig(gguf: model))
  #expect(alone.targets == ["layers.0.attn.v", "layers.1.attn.v", "layers.29.attn.v"])
  #expect(alone.tensors == withModel.tensors)
  let first = folder.appendingPathComponent("alone.gguf").path
  let second = folder.appendingPathComponent("model.gguf").path
  try LoraMerge.llamaCppAdapter(alone, model: nil).write(to: first)
  try LoraMerge.llamaCppAdapter(withModel, model: model).write(to: second)
  #expect(
    try Data(contentsOf: URL(fileURLWithPath: first))
      == Data(contentsOf: URL(fileURLWithPath: second)))
  #expect(try GGUFFile(path: first).info("blk.29.attn_v.weight.lora_b")?.shape == [192, 4])
}
