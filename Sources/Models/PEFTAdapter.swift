import Foundation
import IR

/// A PEFT LoRA adapter directory (`adapter_config.json` + `adapter_model.safetensors`) read into
/// lorac's names and orientation, strictly: a missing, unexpected or mis-shaped tensor is an error,
/// never a silently ignored module.
///
/// PEFT stores `lora_A.weight` as `[r, in]` and `lora_B.weight` as `[out, r]` in Hugging Face row
/// order; lorac's `lora_a` is `[in, r]` and `lora_b` `[r, out]`, and because lorac runs GGUF
/// weights, whose q and k rows are permuted for adjacent-pair RoPE, the q/k `lora_b` columns are
/// permuted the same way.
///
/// A per-head adapter (`"per_head": true` in adapter_config.json, the TransformerLens tutorial's
/// `Lora(n_inst=...)` on q, k, v and o) has the same tensor names with 3-D shapes in the
/// tutorial's orientation, `lora_A.weight` `[n_inst, in, r]` and `lora_B.weight`
/// `[n_inst, r, out]` (q and o: one instance per query head; k and v: per key/value head; q/k/v
/// `out` is the head dimension, o `in` is); lorac holds them as they are, with the q/k head
/// dimension permuted into GGUF order.
public struct PEFTAdapter: Sendable {
  public var rank: Int
  public var alpha: Double
  public var useRSLoRA: Bool
  /// lorac value names of the adapted linears (`layers.0.attn.q`), in file order.
  public var targets: [String]
  /// `<target>.lora_a` / `.lora_b` in lorac orientation.
  public var tensors: [String: HostTensor]
  /// One LoRA instance per attention head: `lora_a` `[n, in, r]`, `lora_b` `[n, r, out]`.
  public var perHead: Bool

  /// The scale the branch gets: alpha / r, or alpha / sqrt(r) with rsLoRA.
  public var scale: Double { useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }

  /// HF module names of a Llama block and lorac's names for them.
  static let modules: [(hf: String, lorac: String)] = [
    ("self_attn.q_proj", "attn.q"), ("self_attn.k_proj", "attn.k"), ("self_attn.v_proj", "attn.v"),
    ("self_attn.o_proj", "attn.o"), ("mlp.gate_proj", "mlp.gate"), ("mlp.up_proj", "mlp.up"),
    ("mlp.down_proj", "mlp.down"),
  ]

  /// GPT-2's PEFT modules (`c_attn` is the fused q/k/v product) and lorac's names for them.
  static let gpt2Modules: [(hf: String, lorac: String)] = [
    ("attn.c_attn", "attn.qkv"), ("attn.c_proj", "attn.o"), ("mlp.c_fc", "mlp.up"),
    ("mlp.c_proj", "mlp.down"),
  ]

  /// GPT-NeoX's PEFT modules (`query_key_value` is the fused q/k/v product) and lorac's names.
  static let neoXModules: [(hf: String, lorac: String)] = [
    ("attention.query_key_value", "attn.qkv"), ("attention.dense", "attn.o"),
    ("mlp.dense_h_to_4h", "mlp.up"), ("mlp.dense_4h_to_h", "mlp.down"),
  ]

  /// The prefix of a layer's modules in PEFT tensor names and the modules, for a family.
  ///
  /// GPT-2 and GPT-NeoX also name the q, k, v parts of their fused product as lorac does
  /// (`attn.q`), for per-head adapters, which PEFT cannot hold on any module (ordinary ones are
  /// saved as the fused module's blocks).
  static func naming(_ architecture: LlamaConfig.Architecture) -> (
    prefix: String, modules: [(hf: String, lorac: String)]
  ) {
    let parts = [("attn.q", "attn.q"), ("attn.k", "attn.k"), ("attn.v", "attn.v")]
    switch architecture {
    case .llama: return ("base_model.model.model.layers.", modules)
    case .gpt2: return ("base_model.model.transformer.h.", gpt2Modules + parts)
    case .gptNeoX: return ("base_model.model.gpt_neox.layers.", neoXModules + parts)
    }
  }

  /// An adapter from tensors in lorac orientation (`<target>.lora_a` `[in, r]`, `.lora_b`
  /// `[r, out]`; per head `[n, in, r]` and `[n, r, out]`), as a training session holds them.
  public init(
    rank: Int, alpha: Double, useRSLoRA: Bool = false, targets: [String],
    tensors: [String: HostTensor], perHead: Bool = false
  ) {
    self.rank = rank
    self.alpha = alpha
    self.useRSLoRA = useRSLoRA
    self.targets = targets
    self.tensors = tensors
    self.perHead = perHead
  }

  /// The per-head modules (`attn.q`, `attn.k`, `attn.v`, `attn.o`).
  static let perHeadModules = ["attn.q", "attn.k", "attn.v", "attn.o"]

  /// Whether a per-head adapter can hold `target`: an attention projection of a layer.
  static func canAdaptPerHead(_ target: String) -> Bool {
    canAdapt(target) && perHeadModules.contains { target.hasSuffix("." + $0) }
  }

  /// The per-head shapes of `target` on a model with `config`: instances, input and output
  /// widths of one instance (q, k, v: `[heads, d_model] -> d_head`; o: `d_head -> d_model`).
  static func perHeadDimensions(of target: String, config: LlamaConfig)
    -> (instances: Int, inputs: Int, outputs: Int)
  {
    let (model, head) = (config.embeddingLength, config.headDimension)
    if target.hasSuffix("attn.k") || target.hasSuffix("attn.v") {
      return (config.keyValueHeadCount, model, head)
    }
    if target.hasSuffix("attn.o") { return (config.headCount, head, model) }
    return (config.headCount, model, head)
  }

  /// Whether the adapter_config.json in `directory` says `"per_head": true` (false when it is
  /// missing or unreadable: the full reader reports that).
  public static func isPerHead(directory: String) -> Bool {
    let path = URL(fileURLWithPath: directory).appendingPathComponent("adapter_config.json").path
    guard let data = FileManager.default.contents(atPath: path),
      let json = try? JSONValue.parse(Array(data))
    else { return false }
    if case .bool(true)? = json["per_head"] { return true }
    return false
  }

  /// Reads an adapter directory for a model with `config`.
  public init(directory: String, config: LlamaConfig) throws(FileError) {
    let folder = URL(fileURLWithPath: directory)
    func fail(_ message: String) -> FileError { FileError(message: "\(directory): \(message)") }
    let configURL = folder.appendingPathComponent("adapter_config.json")
    guard let configData = FileManager.default.contents(atPath: configURL.path) else {
      throw fail("no adapter_config.json (expected a PEFT adapter directory)")
    }
    try self.init(configJSON: configData, directory: directory, config: config) {
      () throws(FileError) in
      do throws(SafetensorsError) {
        return try SafetensorsFile(
          path: folder.appendingPathComponent("adapter_model.safetensors").path)
      } catch {
        throw FileError(message: error.message)
      }
    }
  }

  /// Reads an adapter from the bytes of its `adapter_config.json` and its parsed weights, as
  /// `init(directory:config:)` reads a directory; `directory` names them in messages.
  public init(
    configJSON configData: Data, weights: SafetensorsFile, directory: String, config: LlamaConfig
  ) throws(FileError) {
    try self.init(configJSON: configData, directory: directory, config: config) { weights }
  }

  /// The config checked first, then the weights `open` returns.
  private init(
    configJSON configData: Data, directory: String, config: LlamaConfig,
    open: () throws(FileError) -> SafetensorsFile
  ) throws(FileError) {
    func fail(_ message: String) -> FileError { FileError(message: "\(directory): \(message)") }
    let json: JSONValue
    do {
      json = try JSONValue.parse(Array(configData))
    } catch {
      throw fail("adapter_config.json: \(error.message)")
    }
    if case .string(let type)? = json["peft_type"], type != "LORA" {
      throw fail("peft_type is '\(type)'; lorac reads LORA adapters")
    }
    guard case .integer(let rank)? = json["r"], rank > 0 else {
      throw fail("adapter_config.json: 'r' must be a positive integer")
    }
    let alpha: Double
    switch json["lora_alpha"] {
    case .integer(let value)?: alpha = Double(value)
    case .number(let value)?: alpha = value
    case nil: alpha = 8
    default: throw fail("adapter_config.json: 'lora_alpha' must be a number")
    }
    // Per-module ranks only as lorac writes split q/k/v adapters of a fused product: the fused
    // module at 3 r and 3 alpha (the same scale), its B zero outside the q, k, v blocks.
    let fusedModule = PEFTAdapter.naming(config.architecture).modules.first {
      $0.lorac == "attn.qkv"
    }?.hf.split(separator: ".").last.map(String.init)
    var splitsFused = false
    for key in ["rank_pattern", "alpha_pattern"] {
      guard case .object(let pairs)? = json[key], !pairs.isEmpty else { continue }
      let expected = key == "rank_pattern" ? Double(3 * rank) : 3 * alpha
      var matches = false
      if let fusedModule, pairs.count == 1 {
        switch json[key]?[fusedModule] {
        case .integer(let value)?: matches = Double(value) == expected
        case .number(let value)?: matches = value == expected
        default: break
        }
      }
      guard matches else {
        throw fail(
          "adapter_config.json: per-module '\(key)' is not supported (lorac reads it only as it writes split q/k/v adapters: {\"\(fusedModule ?? "c_attn")\": 3 r})"
        )
      }
      splitsFused = true
    }
    if case .bool(true)? = json["use_dora"] { throw fail("DoRA adapters are not supported") }
    self.rank = rank
    self.alpha = alpha
    if case .bool(let value)? = json["use_rslora"] { useRSLoRA = value } else { useRSLoRA = false }
    switch json["per_head"] {
    case .bool(let value)?: perHead = value
    case nil, .null?: perHead = false
    default: throw fail("adapter_config.json: 'per_head' must be true or false")
    }

    let weights = try open()
    var pairs: [String: (a: HostTensor?, b: HostTensor?)] = [:]
    var order: [String] = []
    for entry in weights.entries {
      let architecture = config.architecture
      guard
        let (target, isA) = PEFTAdapter.loracName(
          entry.name, layers: config.layerCount, architecture: architecture)
      else {
        if let layer = PEFTAdapter.layerIndex(entry.name, architecture: architecture),
          layer >= config.layerCount
        {
          throw fail(
            "tensor '\(entry.name)' adapts layer \(layer), but the model has \(config.layerCount) "
              + "layers (an adapter for another model?)")
        }
        throw fail(
          "unexpected tensor '\(entry.name)' (expected \(PEFTAdapter.naming(architecture).prefix)N.<module>.lora_{A,B}.weight)"
        )
      }
      let tensor: HostTensor
      do {
        tensor = try weights.tensor(named: entry.name)
      } catch {
        throw FileError(message: error.message)
      }
      if pairs[target] == nil { order.append(target) }
      if isA {
        pairs[target, default: (nil, nil)].a = tensor
      } else {
        pairs[target, default: (nil, nil)].b = tensor
      }
    }
    var tensors: [String: HostTensor] = [:]
    // Fused targets read as their q, k, v parts (rank_pattern), by fused target.
    var replaced: [String: [String]] = [:]
    for target in order {
      guard let a = pairs[target]?.a, let b = pairs[target]?.b else {
        throw fail("'\(target)' has only one of lora_A and lora_B")
      }
      if perHead {
        let (shapeA, shapeB) = try PEFTAdapter.perHeadTensors(
          target, a: a, b: b, rank: rank, config: config, fail: fail)
        tensors[target + ".lora_a"] = HostTensor(shape: shapeA, floats: a.floats())
        var bValues = b.floats()
        if config.interleavedRope && (target.hasSuffix("attn.q") || target.hasSuffix("attn.k")) {
          bValues = PEFTAdapter.permuteLastAxisForGGUF(bValues, dimension: shapeB[2])
        }
        tensors[target + ".lora_b"] = HostTensor(shape: shapeB, floats: bValues)
        continue
      }
      let (inputs, outputs) = PEFTAdapter.dimensions(of: target, config: config)
      if splitsFused && target.hasSuffix("attn.qkv") {
        guard a.type.shape == [3 * rank, inputs], b.type.shape == [outputs, 3 * rank] else {
          throw fail(
            "'\(target)': lora_A is \(a.type.shape) and lora_B \(b.type.shape); rank_pattern 3 x \(rank) on this model needs [\(3 * rank), \(inputs)] and [\(outputs), \(3 * rank)]"
          )
        }
        let layer = String(target.dropLast(9))
        let split = try PEFTAdapter.splitFused(a, b, rank: rank, config: config) { problem in
          fail("'\(target)': \(problem)")
        }
        for (part, parts) in split {
          for (suffix, tensor) in parts { tensors[layer + "." + part + suffix] = tensor }
          replaced[target, default: []].append(layer + "." + part)
        }
        continue
      }
      guard a.type.shape == [rank, inputs], b.type.shape == [outputs, rank] else {
        let hint =
          a.type.rank == 3
          ? " (3-D tensors are a per-head adapter's: its adapter_config.json must say \"per_head\": true)"
          : ""
        throw fail(
          "'\(target)': lora_A is \(a.type.shape) and lora_B \(b.type.shape); rank \(rank) on this model needs [\(rank), \(inputs)] and [\(outputs), \(rank)]\(hint)"
        )
      }
      let aValues = a.floats()
      var bValues = b.floats()
      if target.hasSuffix("attn.qkv") {
        bValues = PEFTAdapter.fusedRowsForModel(bValues, columns: rank, config: config)
      }
      // A Hugging Face folder's q/k rows are in PEFT's order already (no interleaved RoPE).
      if config.interleavedRope && (target.hasSuffix("attn.q") || target.hasSuffix("attn.k")) {
        let heads = target.hasSuffix("attn.q") ? config.headCount : config.keyValueHeadCount
        bValues = PEFTAdapter.permuteRowsForGGUF(
          bValues, rows: outputs, columns: rank, heads: heads)
      }
      tensors[target + ".lora_a"] = HostTensor(
        shape: [inputs, rank], floats: transpose(aValues, rows: rank, columns: inputs))
      tensors[target + ".lora_b"] = HostTensor(
        shape: [rank, outputs], floats: transpose(bValues, rows: outputs, columns: rank))
    }
    if order.isEmpty { throw fail("the adapter holds no LoRA tensors") }
    targets = order.flatMap { replaced[$0] ?? [$0] }
    self.tensors = tensors
  }

  /// The shapes a per-head target's A and B must have (`[n, in, r]`, `[n, r, out]`), checked.
  private static func perHeadTensors(
    _ target: String, a: HostTensor, b: HostTensor, rank: Int, config: LlamaConfig,
    fail: (String) -> FileError
  ) throws(FileError) -> ([Int], [Int]) {
    guard canAdaptPerHead(target) else {
      throw fail(
        "'\(target)': a per-head adapter holds only attention projections (q_proj, k_proj, v_proj, o_proj)"
      )
    }
    let (instances, inputs, outputs) = perHeadDimensions(of: target, config: config)
    let (shapeA, shapeB) = ([instances, inputs, rank], [instances, rank, outputs])
    guard a.type.shape == shapeA, b.type.shape == shapeB else {
      throw fail(
        "'\(target)': lora_A is \(a.type.shape) and lora_B \(b.type.shape); a per-head adapter of rank \(rank) on this model needs \(shapeA) and \(shapeB) ([heads, in, r], [heads, r, out])"
      )
    }
    return (shapeA, shapeB)
  }

  /// `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` -> (`layers.3.attn.q`, A);
  /// `base_model.model.transformer.h.3.attn.c_attn.lora_A.weight` -> (`layers.3.attn.qkv`, A) for
  /// GPT-2.
  static func loracName(
    _ name: String, layers: Int, architecture: LlamaConfig.Architecture = .llama
  ) -> (String, Bool)? {
    let (prefix, modules) = naming(architecture)
    guard name.hasPrefix(prefix) else { return nil }
    let rest = name.dropFirst(prefix.count)
    // Layer numbers as PEFT writes them: `Int` alone would also read `+1` and `01`.
    guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]),
      String(layer) == rest[..<dot], layer >= 0, layer < layers
    else { return nil }
    let tail = rest[rest.index(after: dot)...]
    for module in modules {
      if tail == module.hf + ".lora_A.weight" { return ("layers.\(layer).\(module.lorac)", true) }
      if tail == module.hf + ".lora_B.weight" { return ("layers.\(layer).\(module.lorac)", false) }
    }
    return nil
  }

  /// The layer number in a PEFT tensor name (`...layers.3....` -> 3), whatever follows it.
  static func layerIndex(_ name: String, architecture: LlamaConfig.Architecture = .llama) -> Int? {
    let prefix = naming(architecture).prefix
    guard name.hasPrefix(prefix) else { return nil }
    return Int(name.dropFirst(prefix.count).prefix { $0 != "." })
  }

  static func dimensions(of target: String, config: LlamaConfig) -> (inputs: Int, outputs: Int) {
    let kv = config.keyValueHeadCount * config.headDimension
    if target.hasSuffix("attn.k") || target.hasSuffix("attn.v") {
      return (config.embeddingLength, kv)
    }
    if target.hasSuffix("mlp.gate") || target.hasSuffix("mlp.up") {
      return (config.embeddingLength, config.feedForwardLength)
    }
    if target.hasSuffix("mlp.down") { return (config.feedForwardLength, config.embeddingLength) }
    if target.hasSuffix("attn.o") {
      return (config.headCount * config.headDimension, config.embeddingLength)
    }
    if target.hasSuffix("attn.qkv") {
      return (config.embeddingLength, 3 * config.headCount * config.headDimension)
    }
    return (config.embeddingLength, config.headCount * config.headDimension)
  }

  /// Whether PEFT's fused q/k/v rows are per head (`[heads, 3, headDim]`): GPT-NeoX's, as its
  /// Hugging Face checkpoint stores them, also for a GGUF whose rows llama.cpp reordered.
  static func peftRowsPerHead(_ config: LlamaConfig) -> Bool { config.architecture == .gptNeoX }

  /// Per-head PEFT rows of the fused product to the model's order (all q, k, v) when the two
  /// differ (a `gptneox` GGUF), or back with `inverse`; `values` is `[rows, columns]`.
  static func fusedRowsForModel(
    _ values: [Float], columns: Int, config: LlamaConfig, inverse: Bool = false
  ) -> [Float] {
    guard peftRowsPerHead(config) != config.qkvPerHead else { return values }
    var result = values
    for part in 0..<3 {
      let peft = fusedRows(part: part, config: config)
      let model = fusedRows(part: part, config: config, perHead: config.qkvPerHead)
      for (source, target) in zip(peft, model) {
        let (from, to) = inverse ? (target, source) : (source, target)
        for c in 0..<columns { result[to * columns + c] = values[from * columns + c] }
      }
    }
    return result
  }

  /// The rows of the fused q/k/v product's output that are `part` (0: q, 1: k, 2: v) in PEFT's
  /// order (or with `perHead` given, in that order): all q, then k, then v, or each head's q, k,
  /// v side by side.
  static func fusedRows(part: Int, config: LlamaConfig, perHead: Bool? = nil) -> [Int] {
    let (heads, headDim) = (config.headCount, config.headDimension)
    if !(perHead ?? PEFTAdapter.peftRowsPerHead(config)) {
      return Array((part * heads * headDim)..<((part + 1) * heads * headDim))
    }
    var rows: [Int] = []
    for head in 0..<heads {
      let start = (head * 3 + part) * headDim
      rows += Array(start..<(start + headDim))
    }
    return rows
  }

  /// A fused target's PEFT A `[3r, in]` and B `[out, 3r]` read as its q, k, v parts in lorac
  /// orientation (`.lora_a` `[in, r]`, `.lora_b` `[r, width]`), the inverse of `fusedTensors`:
  /// B must be zero outside the blocks; a part whose A and B are all zero is left out.
  static func splitFused(
    _ a: HostTensor, _ b: HostTensor, rank: Int, config: LlamaConfig,
    fail: (String) -> FileError
  ) throws(FileError) -> [(String, [String: HostTensor])] {
    let (inputs, outputs) = (a.type.shape[1], b.type.shape[0])
    let (aValues, bValues) = (a.floats(), b.floats())
    let width = outputs / 3
    var result: [(String, [String: HostTensor])] = []
    var inBlock = [[Bool]](
      repeating: [Bool](repeating: false, count: 3 * rank), count: outputs)
    for part in 0..<3 {
      let rows = fusedRows(part: part, config: config)
      var partA = [Float](repeating: 0, count: inputs * rank)
      var partB = [Float](repeating: 0, count: rank * width)
      for k in 0..<rank {
        for i in 0..<inputs { partA[i * rank + k] = aValues[(part * rank + k) * inputs + i] }
        for (j, row) in rows.enumerated() {
          partB[k * width + j] = bValues[row * 3 * rank + part * rank + k]
          inBlock[row][part * rank + k] = true
        }
      }
      if partA.allSatisfy({ $0 == 0 }) && partB.allSatisfy({ $0 == 0 }) { continue }
      result.append(
        (
          ["attn.q", "attn.k", "attn.v"][part],
          [
            ".lora_a": HostTensor(shape: [inputs, rank], floats: partA),
            ".lora_b": HostTensor(shape: [rank, width], floats: partB),
          ]
        ))
    }
    for row in 0..<outputs {
      for column in 0..<(3 * rank)
      where !inBlock[row][column] && bValues[row * 3 * rank + column] != 0 {
        throw fail("lora_B is not zero outside the q, k, v blocks (row \(row), column \(column))")
      }
    }
    return result
  }

  /// Split q, k, v tensors of one layer (lorac names and orientation, `[in, r]` and `[r, width]`,
  /// any of them absent) as the fused target's PEFT A `[3r, in]` and B `[out, 3r]`: A stacks the
  /// parts' rows, B holds each part's columns on its rows and zero elsewhere.
  static func fusedTensors(
    _ parts: [HostTensor?], isA: Bool, rank: Int, inputs: Int, config: LlamaConfig
  ) -> HostTensor {
    let outputs = 3 * config.headCount * config.headDimension
    if isA {
      var values = [Float](repeating: 0, count: 3 * rank * inputs)
      for (part, tensor) in parts.enumerated() {
        guard let tensor else { continue }
        let floats = tensor.floats()
        for k in 0..<rank {
          for i in 0..<inputs { values[(part * rank + k) * inputs + i] = floats[i * rank + k] }
        }
      }
      return HostTensor(shape: [3 * rank, inputs], floats: values)
    }
    var values = [Float](repeating: 0, count: outputs * 3 * rank)
    for (part, tensor) in parts.enumerated() {
      guard let tensor else { continue }
      let floats = tensor.floats()
      let width = outputs / 3
      for (j, row) in fusedRows(part: part, config: config).enumerated() {
        for k in 0..<rank { values[row * 3 * rank + part * rank + k] = floats[k * width + j] }
      }
    }
    return HostTensor(shape: [outputs, 3 * rank], floats: values)
  }

  /// Several adapters as one whose branch is the weighted sum of theirs:
  /// `Σ weight_i · scale_i · (x A_i) B_i` on every target any of them adapts.
  ///
  /// The ranks are stacked: A is `[A_1 | A_2 | ...]`, B the rows of each `B_i` times
  /// `weight_i · scale_i`, with zero blocks where an adapter leaves a target alone; rank
  /// `Σ r_i`, alpha equal to it (scale 1). One adapter of weight 1 is returned as it is.
  /// Per-head adapters stack the same way within each head.
  ///
  /// - Throws: `FileError` when per-head and ordinary adapters are mixed (their branches have
  ///   different shapes).
  public static func combining(_ adapters: [(adapter: PEFTAdapter, weight: Double)])
    throws(FileError) -> PEFTAdapter
  {
    if adapters.count == 1, adapters[0].weight == 1 { return adapters[0].adapter }
    let perHead = adapters.first?.adapter.perHead ?? false
    if adapters.contains(where: { $0.adapter.perHead != perHead }) {
      throw FileError(
        message:
          "--adapter: per-head and ordinary adapters cannot be combined (fold one into the model with lorac merge first)"
      )
    }
    if perHead { return combiningPerHead(adapters) }
    var targets: [String] = []
    for (adapter, _) in adapters {
      for target in adapter.targets where !targets.contains(target) { targets.append(target) }
    }
    let rank = adapters.map(\.adapter.rank).reduce(0, +)
    var tensors: [String: HostTensor] = [:]
    for target in targets {
      // The layer's sizes, from any adapter that has it: A is [in, r], B [r, out].
      guard
        let shapes = adapters.lazy.compactMap({ entry -> (Int, Int)? in
          guard let a = entry.adapter.tensors[target + ".lora_a"],
            let b = entry.adapter.tensors[target + ".lora_b"]
          else { return nil }
          return (a.type.shape[0], b.type.shape[1])
        }).first
      else { continue }
      let (inputs, outputs) = shapes
      var a = [Float](repeating: 0, count: inputs * rank)
      var b = [Float](repeating: 0, count: rank * outputs)
      var column = 0
      for (adapter, weight) in adapters {
        let r = adapter.rank
        defer { column += r }
        guard let ai = adapter.tensors[target + ".lora_a"]?.floats(),
          let bi = adapter.tensors[target + ".lora_b"]?.floats()
        else { continue }
        let factor = Float(weight * adapter.scale)
        for row in 0..<inputs {
          for k in 0..<r { a[row * rank + column + k] = ai[row * r + k] }
        }
        for k in 0..<r {
          for j in 0..<outputs { b[(column + k) * outputs + j] = factor * bi[k * outputs + j] }
        }
      }
      tensors[target + ".lora_a"] = HostTensor(shape: [inputs, rank], floats: a)
      tensors[target + ".lora_b"] = HostTensor(shape: [rank, outputs], floats: b)
    }
    return PEFTAdapter(
      rank: rank, alpha: Double(rank), targets: targets.filter { tensors[$0 + ".lora_a"] != nil },
      tensors: tensors)
  }

  /// `combining` for per-head adapters: per head, A `[n, in, r]` stacks along r and B
  /// `[n, r, out]` along r, each `B_i` times `weight_i · scale_i`.
  private static func combiningPerHead(_ adapters: [(adapter: PEFTAdapter, weight: Double)])
    -> PEFTAdapter
  {
    var targets: [String] = []
    for (adapter, _) in adapters {
      for target in adapter.targets where !targets.contains(target) { targets.append(target) }
    }
    let rank = adapters.map(\.adapter.rank).reduce(0, +)
    var tensors: [String: HostTensor] = [:]
    for target in targets {
      guard
        let shapes = adapters.lazy.compactMap({ entry -> (Int, Int, Int)? in
          guard let a = entry.adapter.tensors[target + ".lora_a"],
            let b = entry.adapter.tensors[target + ".lora_b"]
          else { return nil }
          return (a.type.shape[0], a.type.shape[1], b.type.shape[2])
        }).first
      else { continue }
      let (instances, inputs, outputs) = shapes
      var a = [Float](repeating: 0, count: instances * inputs * rank)
      var b = [Float](repeating: 0, count: instances * rank * outputs)
      var column = 0
      for (adapter, weight) in adapters {
        let r = adapter.rank
        defer { column += r }
        guard let ai = adapter.tensors[target + ".lora_a"]?.floats(),
          let bi = adapter.tensors[target + ".lora_b"]?.floats()
        else { continue }
        let factor = Float(weight * adapter.scale)
        for h in 0..<instances {
          for row in 0..<inputs {
            for k in 0..<r {
              a[(h * inputs + row) * rank + column + k] = ai[(h * inputs + row) * r + k]
            }
          }
          for k in 0..<r {
            for j in 0..<outputs {
              b[(h * rank + column + k) * outputs + j] = factor * bi[(h * r + k) * outputs + j]
            }
          }
        }
      }
      tensors[target + ".lora_a"] = HostTensor(shape: [instances, inputs, rank], floats: a)
      tensors[target + ".lora_b"] = HostTensor(shape: [instances, rank, outputs], floats: b)
    }
    return PEFTAdapter(
      rank: rank, alpha: Double(rank), targets: targets.filter { tensors[$0 + ".lora_a"] != nil },
      tensors: tensors, perHead: true)
  }

  /// Whether a PEFT adapter can hold a LoRA branch on the linear layer named `target`
  /// (`layers.N.attn.{q,k,v,o}`, `layers.N.mlp.{gate,up,down}`).
  public static func canAdapt(_ target: String) -> Bool {
    let parts = target.split(separator: ".")
    return parts.count == 4 && parts[0] == "layers" && Int(parts[1]) != nil
      && (modules.contains { $0.lorac == "\(parts[2]).\(parts[3])" }
        || "\(parts[2]).\(parts[3])" == "attn.qkv")
  }

  /// The linear layers a PEFT adapter can hold, as a glob: what `canAdapt` accepts
  /// (`attn.qkv`: GPT-2's and GPT-NeoX's fused product).
  public static let adaptableTargets =
    "layers.N.{" + modules.map(\.lorac).joined(separator: ",") + ",attn.qkv}"

  /// Tensors in lorac's names and orientation (`layers.0.attn.q.lora_a` [in, r], `.lora_b`
  /// [r, out]: adapter weights or their gradients) as PEFT names and shapes, sorted by name:
  /// transposed, and q/k `lora_b` rows returned to Hugging Face order.
  ///
  /// Per-head tensors (3-D, `[n, in, r]` and `[n, r, out]`) keep their shapes under the same
  /// names; q/k `lora_b` get their head dimension back in Hugging Face order.
  public static func peftTensors(_ tensors: [String: HostTensor], config: LlamaConfig)
    throws(FileError)
    -> [(name: String, tensor: HostTensor)]
  {
    var result: [(name: String, tensor: HostTensor)] = []
    let (prefix, modules) = naming(config.architecture)
    let fused = config.architecture != .llama
    // Split q, k, v of a fused product, by layer: written as the fused module's blocks.
    var split: [Int: [String: HostTensor]] = [:]
    for (name, tensor) in tensors {
      let isA = name.hasSuffix(".lora_a")
      guard isA || name.hasSuffix(".lora_b"), tensor.type.rank == 2 || tensor.type.rank == 3
      else {
        throw FileError(message: "'\(name)' is not a lora_a or lora_b tensor")
      }
      let target = String(name.dropLast(7))
      let parts = target.split(separator: ".")
      if fused, tensor.type.rank == 2, parts.count == 4, parts[0] == "layers",
        let layer = Int(parts[1]), parts[2] == "attn", ["q", "k", "v"].contains(parts[3])
      {
        split[layer, default: [:]][parts[3] + (isA ? ".a" : ".b")] = tensor
        continue
      }
      guard parts.count == 4, parts[0] == "layers", let layer = Int(parts[1]),
        let module = modules.first(where: { $0.lorac == "\(parts[2]).\(parts[3])" })
      else { throw FileError(message: "'\(name)' does not name a linear layer of the model") }
      let peftName = "\(prefix)\(layer).\(module.hf).lora_\(isA ? "A" : "B").weight"
      if tensor.type.rank == 3 {
        guard canAdaptPerHead(target) else {
          throw FileError(message: "'\(name)' is 3-D, but only attention projections are per head")
        }
        var values = tensor.floats()
        if !isA && config.interleavedRope
          && (target.hasSuffix("attn.q") || target.hasSuffix("attn.k"))
        {
          values = permuteLastAxisForGGUF(values, dimension: tensor.type.shape[2], inverse: true)
        }
        result.append((peftName, HostTensor(shape: tensor.type.shape, floats: values)))
        continue
      }
      let (rows, columns) = (tensor.type.shape[0], tensor.type.shape[1])
      var values = transpose(tensor.floats(), rows: rows, columns: columns)
      if !isA && target.hasSuffix("attn.qkv") {
        values = fusedRowsForModel(values, columns: rows, config: config, inverse: true)
      }
      if !isA && config.interleavedRope
        && (target.hasSuffix("attn.q") || target.hasSuffix("attn.k"))
      {
        let heads = target.hasSuffix("attn.q") ? config.headCount : config.keyValueHeadCount
        values = permuteRowsForGGUF(
          values, rows: columns, columns: rows, heads: heads, inverse: true)
      }
      result.append((peftName, HostTensor(shape: [columns, rows], floats: values)))
    }
    if let module = modules.first(where: { $0.lorac == "attn.qkv" }) {
      for (layer, parts) in split {
        if tensors.keys.contains("layers.\(layer).attn.qkv.lora_a") {
          throw FileError(
            message: "layer \(layer) adapts both attn.qkv and its parts: they are one PEFT module")
        }
        guard let some = parts.first(where: { $0.key.hasSuffix(".a") })?.value else {
          throw FileError(message: "layers.\(layer).attn: a q/k/v part has only lora_b")
        }
        let (inputs, rank) = (some.type.shape[0], some.type.shape[1])
        for (isA, suffix) in [(true, "A"), (false, "B")] {
          let tensors = ["q", "k", "v"].map { parts[$0 + (isA ? ".a" : ".b")] }
          for case let tensor? in tensors
          where tensor.type.shape
            != (isA ? [inputs, rank] : [rank, config.headCount * config.headDimension])
          {
            throw FileError(
              message: "layers.\(layer).attn: q, k, v adapters must share rank and widths")
          }
          result.append(
            (
              "\(prefix)\(layer).\(module.hf).lora_\(suffix).weight",
              fusedTensors(tensors, isA: isA, rank: rank, inputs: inputs, config: config)
            ))
        }
      }
    }
    return result.sorted { $0.name < $1.name }
  }

  /// The adapter with q, k, v parts of a fused product folded into one target per layer.
  ///
  /// Each layer's parts (GPT-2, GPT-NeoX) become one `attn.qkv` target of rank 3 r at the same scale, its B in the model's row order and zero
  /// outside the parts' blocks: what folding into the fused weight, or a llama.cpp adapter,
  /// needs. Other adapters are returned as they are.
  public func fusingParts(_ config: LlamaConfig) -> PEFTAdapter {
    guard splitsFusedProduct(config), !perHead else { return self }
    var result = self
    var layers: [Int: [String: HostTensor]] = [:]
    for target in targets {
      let parts = target.split(separator: ".")
      guard parts.count == 4, let layer = Int(parts[1]), parts[2] == "attn",
        ["q", "k", "v"].contains(parts[3])
      else { continue }
      for suffix in [".lora_a", ".lora_b"] {
        layers[layer, default: [:]][parts[3] + suffix] = tensors[target + suffix]
        result.tensors[target + suffix] = nil
      }
    }
    result.targets = targets.filter { target in
      !["attn.q", "attn.k", "attn.v"].contains(
        target.split(separator: ".").suffix(2).joined(separator: "."))
    }
    for (layer, parts) in layers.sorted(by: { $0.key < $1.key }) {
      guard
        let inputs = ["q", "k", "v"].lazy.compactMap({ parts[$0 + ".lora_a"] }).first?.type
          .shape[0]
      else { continue }
      let peftA = PEFTAdapter.fusedTensors(
        ["q", "k", "v"].map { parts[$0 + ".lora_a"] }, isA: true, rank: rank, inputs: inputs,
        config: config)
      let peftB = PEFTAdapter.fusedTensors(
        ["q", "k", "v"].map { parts[$0 + ".lora_b"] }, isA: false, rank: rank, inputs: inputs,
        config: config)
      let outputs = peftB.type.shape[0]
      let b = PEFTAdapter.fusedRowsForModel(peftB.floats(), columns: 3 * rank, config: config)
      let target = "layers.\(layer).attn.qkv"
      result.targets.append(target)
      result.tensors[target + ".lora_a"] = HostTensor(
        shape: [inputs, 3 * rank],
        floats: transpose(peftA.floats(), rows: 3 * rank, columns: inputs))
      result.tensors[target + ".lora_b"] = HostTensor(
        shape: [3 * rank, outputs], floats: transpose(b, rows: outputs, columns: 3 * rank))
    }
    return result
  }

  /// Whether the adapter holds q, k or v parts of a fused product (GPT-2, GPT-NeoX), which PEFT
  /// holds as the fused module at rank 3 r (`rank_pattern`).
  func splitsFusedProduct(_ config: LlamaConfig) -> Bool {
    config.architecture != .llama
      && targets.contains {
        ["attn.q", "attn.k", "attn.v"].contains(
          $0.split(separator: ".").suffix(2).joined(separator: "."))
      }
  }

  /// Hugging Face row order to GGUF's for q/k outputs (or back, with `inverse`): GGUF row
  /// `h·hd + 2i + j` is HF row `h·hd + j·hd/2 + i`.
  static func permuteRowsForGGUF(
    _ values: [Float], rows: Int, columns: Int, heads: Int, inverse: Bool = false
  ) -> [Float] {
    let headDimension = rows / heads
    var result = values
    for h in 0..<heads {
      for i in 0..<(headDimension / 2) {
        for j in 0..<2 {
          let gguf = h * headDimension + 2 * i + j
          let huggingFace = h * headDimension + j * headDimension / 2 + i
          let (target, source) = inverse ? (huggingFace, gguf) : (gguf, huggingFace)
          for c in 0..<columns { result[target * columns + c] = values[source * columns + c] }
        }
      }
    }
    return result
  }
}

extension PEFTAdapter {
  /// Hugging Face order to GGUF's (or back, with `inverse`) along the last axis of `values`, whose
  /// vectors of `dimension` elements are each one head's q/k outputs: GGUF element `2i + j` is
  /// HF element `j·dimension/2 + i` (`permuteRowsForGGUF` within one head).
  static func permuteLastAxisForGGUF(_ values: [Float], dimension: Int, inverse: Bool = false)
    -> [Float]
  {
    var result = values
    let half = dimension / 2
    for start in stride(from: 0, to: values.count, by: dimension) {
      for i in 0..<half {
        for j in 0..<2 {
          let (gguf, huggingFace) = (start + 2 * i + j, start + j * half + i)
          if inverse {
            result[huggingFace] = values[gguf]
          } else {
            result[gguf] = values[huggingFace]
          }
        }
      }
    }
    return result
  }
}

/// The transpose of a row-major [rows, columns] matrix.
func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
  var result = [Float](repeating: 0, count: values.count)
  for r in 0..<rows {
    for c in 0..<columns { result[c * rows + r] = values[r * columns + c] }
  }
  return result
}

extension PEFTAdapter {
  /// Writes the adapter in PEFT's layout to `folder`: adapter_model.safetensors and
  /// adapter_config.json (with `"per_head": true` for a per-head adapter), each crash-safely.
  public func save(to folder: URL, config: LlamaConfig, baseModel: String) throws {
    let peft = try PEFTAdapter.peftTensors(tensors, config: config)
    // Each module by its last name, or by its path when the family has two of that name
    // (GPT-2's attn.c_proj and mlp.c_proj), so that PEFT adapts exactly these.
    let family = PEFTAdapter.naming(config.architecture).modules.map(\.hf)
    let modules = Set(
      peft.map { name -> String in
        let parts = name.name.split(separator: ".")
        let last = String(parts[parts.count - 3])
        guard family.filter({ $0.hasSuffix("." + last) || $0 == last }).count > 1 else {
          return last
        }
        return parts[parts.count - 4] + "." + last
      }
    ).sorted()
    // Split q, k, v parts are the fused module's blocks, at rank 3 r and alpha 3 alpha (the
    // same scale); lorac reads them back as the parts.
    var pattern = ("{}", "{}")
    if splitsFusedProduct(config), !perHead,
      let module = PEFTAdapter.naming(config.architecture).modules.first(where: {
        $0.lorac == "attn.qkv"
      })?.hf.split(separator: ".").last
    {
      pattern = ("{\"\(module)\": \(3 * rank)}", "{\"\(module)\": \(3 * alpha)}")
    }
    let text = """
      {
        "base_model_name_or_path": \(jsonString(baseModel)),
        "bias": "none",
        "fan_in_fan_out": \(config.architecture == .gpt2),
        "inference_mode": true,
        "init_lora_weights": true,
        "lora_alpha": \(alpha),
        "lora_dropout": 0.0,
        "peft_type": "LORA",\(perHead ? "\n  \"per_head\": true," : "")
        "r": \(rank),
        "rank_pattern": \(pattern.0),
        "alpha_pattern": \(pattern.1),
        "target_modules": [\(modules.map { "\"\($0)\"" }.joined(separator: ", "))],
        "task_type": "CAUSAL_LM",
        "use_rslora": \(useRSLoRA)
      }

      """
    try SafetensorsFile.write(
      peft, metadata: ["format": "pt"],
      to: folder.appendingPathComponent("adapter_model.safetensors"))
    try writeAtomically(Data(text.utf8), to: folder.appendingPathComponent("adapter_config.json"))
  }
}
