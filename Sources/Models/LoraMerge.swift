import Foundation
import IR

/// Folding a LoRA adapter into a GGUF model's weights, and exporting it as a llama.cpp LoRA
/// adapter GGUF.
///
/// Both work from `PEFTAdapter`'s tensors: `lora_a` [in, r] and `lora_b` [r, out] with the q/k
/// output columns already in GGUF row order, so `ΔW = s·(a·b)ᵀ` is in the GGUF weight's own
/// [out, in] layout and row order.
public enum LoraMerge {
  /// The GGUF weight a lorac target adapts: `layers.3.attn.q` -> `blk.3.attn_q.weight`.
  public static func ggufWeightName(ofTarget target: String) -> String? {
    let parts = target.split(separator: ".")
    guard parts.count == 4, parts[0] == "layers", let layer = Int(parts[1]), layer >= 0 else {
      return nil
    }
    let modules = [
      "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v", "attn.o": "attn_output",
      "mlp.gate": "ffn_gate", "mlp.up": "ffn_up", "mlp.down": "ffn_down", "attn.qkv": "attn_qkv",
    ]
    guard let module = modules["\(parts[2]).\(parts[3])"] else { return nil }
    return "blk.\(layer).\(module).weight"
  }

  /// `weight` [outputs, inputs] += `scale` · (a · b)ᵀ for `a` [inputs, rank], `b` [rank, outputs]
  /// (lorac's orientation).
  public static func addLowRankProduct(
    to weight: inout [Float], outputs: Int, inputs: Int, a: [Float], b: [Float], rank: Int,
    scale: Float
  ) {
    precondition(weight.count == outputs * inputs && a.count == inputs * rank)
    precondition(b.count == rank * outputs)
    let aRows = transpose(a, rows: inputs, columns: rank)  // [rank, inputs]
    weight.withUnsafeMutableBufferPointer { w in
      aRows.withUnsafeBufferPointer { rows in
        for o in 0..<outputs {
          let row = o * inputs
          for k in 0..<rank {
            let coefficient = scale * b[k * outputs + o]
            if coefficient == 0 { continue }
            let source = k * inputs
            for i in 0..<inputs { w[row + i] += coefficient * rows[source + i] }
          }
        }
      }
    }
  }

  /// `weight` [outputs, inputs] += `scale` · ΔW for a per-head branch with `a` [n, in_h, r] and
  /// `b` [n, r, out_h] (lorac's orientation, q/k head dimension in GGUF order).
  ///
  /// With `concatenatedInput` (o) head h's block `a[h] · b[h]` [d_head, out] fills the columns
  /// `h·d_head ..< (h+1)·d_head` of the `[out, in]` weight (the rows of head h in `x W` terms);
  /// otherwise (q, k, v) it is [in, d_head] and fills the rows of head h's outputs.
  public static func addPerHeadProducts(
    to weight: inout [Float], outputs: Int, inputs: Int, a: [Float], b: [Float],
    instances: Int, rank: Int, concatenatedInput: Bool, scale: Float
  ) {
    let (blockIn, blockOut) =
      concatenatedInput ? (inputs / instances, outputs) : (inputs, outputs / instances)
    precondition(weight.count == outputs * inputs && a.count == instances * blockIn * rank)
    precondition(b.count == instances * rank * blockOut)
    for h in 0..<instances {
      for i in 0..<blockIn {
        for k in 0..<rank {
          let coefficient = scale * a[(h * blockIn + i) * rank + k]
          if coefficient == 0 { continue }
          let row = (h * rank + k) * blockOut
          for j in 0..<blockOut {
            // ΔW[in, out] block element (i, j) lands at weight[out][in] in GGUF's [out, in].
            let (output, input) = concatenatedInput ? (j, h * blockIn + i) : (h * blockOut + j, i)
            weight[output * inputs + input] += coefficient * b[row + j]
          }
        }
      }
    }
  }

  /// A writer for `model` with `adapter` folded in.
  ///
  /// The model's metadata, and its tensors in file order: each adapted weight dequantized,
  /// `W + s·B·A` added and stored as `dtype` (f32 or f16), every other tensor copied byte for
  /// byte. Merged weights are computed as they are written.
  public static func mergedModel(_ model: GGUFFile, adapter: PEFTAdapter, dtype: DType = .f32)
    throws(GGUFError) -> GGUFFileWriter
  {
    guard dtype == .f32 || dtype == .f16 else {
      throw GGUFError(message: "merged weights can be f32 or f16, not \(dtype.rawValue)")
    }
    // GPT-2's and GPT-NeoX's q, k, v parts are blocks of the fused weight.
    let adapter = adapter.fusingParts(try LlamaConfig(gguf: model))
    var adapted: [String: String] = [:]  // GGUF weight name -> target
    for target in adapter.targets {
      guard let name = ggufWeightName(ofTarget: target) else {
        throw GGUFError(message: "'\(target)' does not name a Llama linear layer")
      }
      guard let info = model.info(name) else {
        throw GGUFError(message: "\(model.path): no tensor '\(name)' for the adapter's '\(target)'")
      }
      guard let a = adapter.tensors[target + ".lora_a"], let b = adapter.tensors[target + ".lora_b"]
      else {
        throw GGUFError(message: "the adapter has no lora_a/lora_b for '\(target)'")
      }
      let expected =
        !adapter.perHead
        ? [b.type.shape[1], a.type.shape[0]]
        : target.hasSuffix("attn.o")
          ? [b.type.shape[2], a.type.shape[0] * a.type.shape[1]]
          : [a.type.shape[0] * b.type.shape[2], a.type.shape[1]]
      guard info.shape == expected else {
        throw GGUFError(
          message:
            "\(model.path): '\(name)' is \(info.shape) but the adapter's '\(target)' needs \(expected) ([out, in])"
        )
      }
      guard info.dtype != nil || info.typeID == 2 else {
        throw GGUFError(
          message: "\(model.path): '\(name)' is \(info.typeName), which lorac cannot dequantize")
      }
      adapted[name] = target
    }
    let scale = Float(adapter.scale)
    // The stored bytes of every tensor, whatever its type, from a second read-only mapping.
    let mapping: FileMapping
    do {
      mapping = try FileMapping(path: model.path)
    } catch {
      throw GGUFError(message: error.message)
    }
    var tensors: [GGUFTensorData] = []
    for info in model.tensors {
      guard let target = adapted[info.name] else {
        let start = model.dataOffset + info.offset
        guard start + info.byteCount <= mapping.bytes.count else {
          throw GGUFError(message: "\(model.path): the file changed while it was being read")
        }
        tensors.append(
          GGUFTensorData(
            name: info.name, shape: info.shape, typeID: info.typeID,
            data: mapping.data(offset: start, count: info.byteCount)))
        continue
      }
      let a = adapter.tensors[target + ".lora_a"]?.floats() ?? []
      let b = adapter.tensors[target + ".lora_b"]?.floats() ?? []
      let (outputs, inputs) = (info.shape[0], info.shape[1])
      let instances =
        adapter.perHead ? adapter.tensors[target + ".lora_a"]?.type.shape.first : nil
      // A fused q/k/v target's rank is 3 r.
      let rank = adapter.tensors[target + ".lora_a"]?.type.shape.last ?? adapter.rank
      tensors.append(
        GGUFTensorData(name: info.name, shape: info.shape, typeID: dtype == .f16 ? 1 : 0) {
          () throws(GGUFError) -> Data in
          var weight = try model.dequantized(named: info.name)
          if let instances {
            addPerHeadProducts(
              to: &weight, outputs: outputs, inputs: inputs, a: a, b: b, instances: instances,
              rank: rank, concatenatedInput: target.hasSuffix("attn.o"), scale: scale)
          } else {
            addLowRankProduct(
              to: &weight, outputs: outputs, inputs: inputs, a: a, b: b, rank: rank, scale: scale)
          }
          return dtype == .f16
            ? GGUFTensorData.encodeF16(weight) : GGUFTensorData.encodeF32(weight)
        })
    }
    return GGUFFileWriter(metadata: model.metadata, tensors: tensors)
  }

  /// Why `llamaCppAdapter` refuses a per-head adapter.
  public static let perHeadExportRefusal =
    "a per-head adapter cannot be exported: llama.cpp's LoRA adapters have one A and one B per weight, with no per-head form; fold it into the model with lorac merge instead"

  /// A llama.cpp LoRA adapter GGUF for `adapter` (not a per-head one).
  ///
  /// Metadata `general.architecture`, `general.type = adapter`, `adapter.type = lora` and
  /// `adapter.lora.alpha` (written so that alpha / r is the adapter's effective scale, rsLoRA
  /// included); per adapted weight `<weight>.lora_a` (numpy [r, in], PEFT's A) and
  /// `<weight>.lora_b` (numpy [out, r], PEFT's B with q/k rows in GGUF order), F32. With `model`,
  /// the architecture is the model's and every adapted weight must be one of its tensors with
  /// the adapter's [out, in] shape; without, it is `llama`.
  public static func llamaCppAdapter(_ adapter: PEFTAdapter, model: GGUFFile?)
    throws(GGUFError) -> GGUFFileWriter
  {
    if adapter.perHead { throw GGUFError(message: perHeadExportRefusal) }
    let architecture = model?["general.architecture"]?.string ?? "llama"
    var adapter = adapter
    if let model, architecture == "gpt2" || architecture == "gptneox" {
      adapter = adapter.fusingParts(try LlamaConfig(gguf: model))
    }
    var tensors: [GGUFTensorData] = []
    let order = adapter.targets.sorted { lhs, rhs in
      let (l, r) = (layerAndModule(lhs), layerAndModule(rhs))
      return l.layer != r.layer ? l.layer < r.layer : l.module < r.module
    }
    for target in order {
      guard let name = ggufWeightName(ofTarget: target) else {
        throw GGUFError(message: "'\(target)' does not name a Llama linear layer")
      }
      guard let a = adapter.tensors[target + ".lora_a"], let b = adapter.tensors[target + ".lora_b"]
      else {
        throw GGUFError(message: "the adapter has no lora_a/lora_b for '\(target)'")
      }
      let (inputs, rank) = (a.type.shape[0], a.type.shape[1])
      let outputs = b.type.shape[1]
      if let model {
        guard let info = model.info(name) else {
          throw GGUFError(
            message: "\(model.path): no tensor '\(name)' for the adapter's '\(target)'")
        }
        guard info.shape == [outputs, inputs] else {
          throw GGUFError(
            message:
              "\(model.path): '\(name)' is \(info.shape) but the adapter's '\(target)' needs [\(outputs), \(inputs)] ([out, in])"
          )
        }
      }
      tensors.append(
        .f32(
          name: name + ".lora_a", shape: [rank, inputs],
          floats: transpose(a.floats(), rows: inputs, columns: rank)))
      // llama.cpp scales each weight's branch by alpha / its own rank: a fused q/k/v target of
      // rank 3 r keeps the adapter's scale with B times 3.
      let factor = Float(rank) / Float(adapter.rank)
      tensors.append(
        .f32(
          name: name + ".lora_b", shape: [outputs, rank],
          floats: transpose(b.floats(), rows: rank, columns: outputs).map { $0 * factor }))
    }
    return GGUFFileWriter(
      metadata: [
        ("general.architecture", .string(architecture)), ("general.type", .string("adapter")),
        ("adapter.type", .string("lora")),
        ("adapter.lora.alpha", .float32(Float(adapter.scale * Double(adapter.rank)))),
      ], tensors: tensors)
  }

  /// (layer, module index) of `layers.N.<module>` for ordering.
  private static func layerAndModule(_ target: String) -> (layer: Int, module: Int) {
    let parts = target.split(separator: ".")
    let layer = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
    let module = parts.count == 4 ? "\(parts[2]).\(parts[3])" : ""
    return (layer, PEFTAdapter.modules.firstIndex { $0.lorac == module } ?? 0)
  }
}

extension PEFTAdapter {
  /// Reads an adapter directory without a model, for uses that need no head counts: the model's
  /// dimensions are taken from the adapter's own tensor shapes (which must agree with each
  /// other), and q/k adapters, whose rows GGUF permutes per head, are refused.
  public init(directory: String, withoutModelFor use: String) throws(FileError) {
    let path = URL(fileURLWithPath: directory).appendingPathComponent("adapter_model.safetensors")
      .path
    guard FileManager.default.fileExists(atPath: path) else {
      // Let the full reader report the missing file the way it always does.
      try self.init(
        directory: directory,
        config: LlamaConfig(
          vocabularySize: 1, embeddingLength: 1, layerCount: 1, headCount: 1,
          keyValueHeadCount: 1, feedForwardLength: 1))
      return
    }
    let weights: SafetensorsFile
    do {
      weights = try SafetensorsFile(path: path)
    } catch {
      throw FileError(message: error.message)
    }
    let config = try PEFTAdapter.config(fromShapesOf: weights, directory: directory, use: use)
    try self.init(directory: directory, config: config)
  }

  /// Reads an adapter without a model from the bytes of its `adapter_config.json` and its parsed
  /// weights, as `init(directory:withoutModelFor:)` reads a directory.
  public init(
    configJSON: Data, weights: SafetensorsFile, directory: String, withoutModelFor use: String
  ) throws(FileError) {
    let config = try PEFTAdapter.config(fromShapesOf: weights, directory: directory, use: use)
    try self.init(configJSON: configJSON, weights: weights, directory: directory, config: config)
  }

  /// A model config that fits the adapter's own tensor shapes.
  private static func config(
    fromShapesOf weights: SafetensorsFile, directory: String, use: String
  ) throws(FileError) -> LlamaConfig {
    var embedding: Int?
    var keyValue: Int?
    var feedForward: Int?
    var layers = 0
    for entry in weights.entries {
      guard let (target, isA) = PEFTAdapter.loracName(entry.name, layers: Int.max),
        entry.shape.count == 2
      else { continue }  // the full reader names the problem
      if target.hasSuffix("attn.q") || target.hasSuffix("attn.k") {
        throw FileError(
          message:
            "\(directory): \(use) of q_proj/k_proj adapters needs the model's head counts (GGUF permutes their rows per head): give --model MODEL.gguf"
        )
      }
      layers = max(layers, Int(target.split(separator: ".")[1]).map { $0 + 1 } ?? 0)
      let (rows, columns) = (entry.shape[0], entry.shape[1])
      let isDown = target.hasSuffix("mlp.down")
      if isA {
        if isDown { feedForward = feedForward ?? columns } else { embedding = embedding ?? columns }
      } else if isDown || target.hasSuffix("attn.o") {
        embedding = embedding ?? rows
      } else if target.hasSuffix("attn.v") {
        keyValue = keyValue ?? rows
      } else {
        feedForward = feedForward ?? rows
      }
    }
    // At least 1, so head dimensions are defined; the reader refuses zero dimensions itself.
    let width = max(embedding ?? 1, 1)
    // One-element heads make every head-count product equal the widths themselves.
    return LlamaConfig(
      vocabularySize: 1, embeddingLength: width, layerCount: max(layers, 1), headCount: width,
      keyValueHeadCount: keyValue ?? width, feedForwardLength: feedForward ?? width)
  }
}
