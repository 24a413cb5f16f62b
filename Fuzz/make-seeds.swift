// Writes the binary seeds of the fuzz corpora (Fuzz/corpus/{gguf,safetensors,peft}): small,
// valid files that reach every part of their readers. Run by `scripts/fuzz seeds`.
import Foundation
import IR
import Models
import Passes

let root = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "Fuzz/corpus"

/// The value of `body`; a seed that cannot be made ends the program with the error.
func must<T>(_ body: () throws -> T) -> T {
  do {
    return try body()
  } catch {
    fatalError("\(error)")
  }
}

func write(_ data: Data, _ target: String, _ name: String) {
  let url = URL(fileURLWithPath: "\(root)/\(target)/\(name)")
  must { try data.write(to: url) }
}

func floats(_ count: Int, _ scale: Float = 0.25) -> [Float] {
  (0..<count).map { Float($0 % 7) * scale - 0.5 }
}

/// Quantized blocks with a small scale and a pattern of quants.
func blocks(_ count: Int, bytes: Int) -> Data {
  Data((0..<(count * bytes)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) })
}

// GGUF: a one-block Llama with a byte-level BPE tokenizer, a chat template and one small tensor
// of each type lorac reads, and a second file with every metadata value type and alignment 64.
let tokens = [
  "<|endoftext|>", "<|im_start|>", "<|im_end|>", "H", "i", "Ġ", "u", "s", "e", "r", "1", "2",
  "x", "Ċ", "Hi", "us", "er", "user", "12",
]
var types = [GGUFValue](repeating: .int32(1), count: tokens.count)
for id in 0..<3 { types[id] = .int32(3) }
let llama = GGUFFileWriter(
  metadata: [
    ("general.architecture", .string("llama")), ("llama.embedding_length", .uint32(8)),
    ("llama.block_count", .uint32(1)), ("llama.attention.head_count", .uint32(2)),
    ("llama.attention.head_count_kv", .uint32(1)), ("llama.feed_forward_length", .uint32(16)),
    ("llama.rope.freq_base", .float32(10_000)),
    ("llama.attention.layer_norm_rms_epsilon", .float32(1e-5)),
    ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("smollm")),
    ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
    ("tokenizer.ggml.token_type", .array(types)),
    ("tokenizer.ggml.merges", .array(["H i", "u s", "e r", "us er", "1 2"].map { .string($0) })),
    ("tokenizer.ggml.bos_token_id", .uint32(1)), ("tokenizer.ggml.eos_token_id", .uint32(2)),
    ("tokenizer.ggml.add_bos_token", .bool(false)),
    (
      "tokenizer.chat_template",
      .string("<|im_start|>system\nYou are helpful.<|im_end|>\n{{ messages }}")
    ),
  ],
  tensors: [
    .f32(name: "token_embd.weight", shape: [2, 8], floats: floats(16)),
    .f16(name: "blk.0.attn_norm.weight", shape: [8], floats: floats(8)),
    GGUFTensorData(
      name: "blk.0.attn_q.weight", shape: [1, 32], typeID: 3, data: blocks(1, bytes: 20)),
    GGUFTensorData(
      name: "blk.0.attn_k.weight", shape: [1, 32], typeID: 8, data: blocks(1, bytes: 34)),
    GGUFTensorData(
      name: "blk.0.attn_v.weight", shape: [1, 32], typeID: 2, data: blocks(1, bytes: 18)),
    GGUFTensorData(
      name: "blk.0.ffn_up.weight", shape: [1, 256], typeID: 12, data: blocks(1, bytes: 144)),
    GGUFTensorData(
      name: "blk.0.ffn_down.weight", shape: [1, 256], typeID: 14, data: blocks(1, bytes: 210)),
    GGUFTensorData(name: "bf16", shape: [4], typeID: 30, data: blocks(1, bytes: 8)),
    GGUFTensorData(name: "i32", shape: [2], typeID: 26, data: blocks(1, bytes: 8)),
  ])
let values = GGUFFileWriter(
  metadata: [
    ("general.alignment", .uint32(64)), ("u8", .uint8(1)), ("i8", .int8(-1)),
    ("u16", .uint16(2)), ("i16", .int16(-2)), ("u32", .uint32(3)), ("i32", .int32(-3)),
    ("f32", .float32(0.5)), ("bool", .bool(true)), ("string", .string("text")),
    ("u64", .uint64(4)), ("i64", .int64(-4)), ("f64", .float64(0.25)),
    ("nested", .array([.array([.uint8(1), .uint8(2)]), .array([])])),
  ],
  tensors: [.f32(name: "a", shape: [2, 2, 1, 1], floats: floats(4))])
for (name, writer) in [("llama", llama), ("values", values)] {
  let path = NSTemporaryDirectory() + "lorac-seed-\(name)"
  must { try writer.write(to: path) }
  write(must { try Data(contentsOf: URL(fileURLWithPath: path)) }, "gguf", name)
  try? FileManager.default.removeItem(atPath: path)
}

/// A safetensors file's bytes.
func safetensors(_ tensors: [(String, HostTensor)], metadata: [String: String] = [:]) -> Data {
  let path = NSTemporaryDirectory() + "lorac-seed.safetensors"
  must { try SafetensorsFile.write(tensors, metadata: metadata, to: URL(fileURLWithPath: path)) }
  defer { try? FileManager.default.removeItem(atPath: path) }
  return must { try Data(contentsOf: URL(fileURLWithPath: path)) }
}

// PEFT: adapters for the fuzz target's Llama (width 8, 2 heads of 4, 1 KV head, feed-forward 16,
// 2 layers) as config, a zero byte, weights.
let shapes: [String: (inputs: Int, outputs: Int)] = [
  "self_attn.q_proj": (8, 8), "self_attn.k_proj": (8, 4), "self_attn.v_proj": (8, 4),
  "self_attn.o_proj": (8, 8), "mlp.gate_proj": (8, 16), "mlp.up_proj": (8, 16),
  "mlp.down_proj": (16, 8),
]
func adapter(rank: Int, layers: [Int], modules: [String]) -> Data {
  var tensors: [(String, HostTensor)] = []
  for layer in layers {
    for module in modules {
      guard let (inputs, outputs) = shapes[module] else { fatalError("no shape for \(module)") }
      let prefix = "base_model.model.model.layers.\(layer).\(module)"
      tensors.append(
        (
          "\(prefix).lora_A.weight",
          HostTensor(shape: [rank, inputs], floats: floats(rank * inputs))
        ))
      tensors.append(
        (
          "\(prefix).lora_B.weight",
          HostTensor(shape: [outputs, rank], floats: floats(rank * outputs, 0.125))
        ))
    }
  }
  return safetensors(tensors)
}
let qv = adapter(rank: 2, layers: [0, 1], modules: ["self_attn.q_proj", "self_attn.v_proj"])
let rest = adapter(
  rank: 1, layers: [1],
  modules: [
    "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
  ])
write(
  Data(
    #"{"peft_type":"LORA","r":2,"lora_alpha":4,"use_rslora":false,"use_dora":false,"rank_pattern":{},"alpha_pattern":{},"target_modules":["q_proj","v_proj"]}"#
      .utf8) + Data([0]) + qv, "peft", "qv")
write(
  Data(#"{"peft_type":"LORA","r":1,"lora_alpha":0.5,"use_rslora":true}"#.utf8) + Data([0]) + rest,
  "peft", "all-modules")

// Safetensors: the adapter, and tensors of several dtypes with metadata.
write(qv, "safetensors", "adapter")
write(
  safetensors(
    [
      ("f32", HostTensor(shape: [2, 3], floats: floats(6))),
      ("i32", HostTensor(shape: [3], ints: [1, -2, 3])),
      ("f16", must { try HostTensor(type: TensorType(.f16, [2]), data: Data([0, 60, 0, 188])) }),
      (
        "bf16",
        must { try HostTensor(type: TensorType(.bf16, [2]), data: Data([128, 63, 0, 192])) }
      ),
    ], metadata: ["format": "pt", "note": "fuzz seed"]), "safetensors", "dtypes")

// IR: a one-block Llama (loss graph, fused and with LoRA gradients, and a decoding step) and
// the MLP with its gradients, as printed text.
let tiny = LlamaConfig(
  vocabularySize: 16, embeddingLength: 8, layerCount: 1, headCount: 2, keyValueHeadCount: 1,
  feedForwardLength: 16)
let loss = must { try Llama.trace(tiny, batch: 1, sequence: 3, loss: true) }
let graphs: [(String, Graph)] = [
  ("llama", must { try Llama.trace(tiny, batch: 1, sequence: 2) }),
  (
    "llama-lora-grad",
    must {
      try Pipeline(parsing: "lora{rank=2,targets=layers.*.attn.{q,v}},freeze,fuse,autodiff,dce")
        .run(loss)
    }
  ),
  ("llama-step", must { try Llama.traceDecoding(tiny, batch: 1, tokens: 1, context: 4) }),
  (
    "mlp-grad",
    must { try Pipeline(parsing: "autodiff{loss=loss},dce").run(try MLP.trace(batch: 2)) }
  ),
]
for (name, graph) in graphs { write(Data(Printer().print(graph).utf8), "ir", name) }
