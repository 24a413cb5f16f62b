import Foundation
import IR
import Models
import TestSupport
import Testing

@Test func smolLMFileFacts() throws {
  let file = try GGUFFile(path: try modelPath())
  #expect(file.version == 3)
  #expect(file.tensors.count == 272)
  #expect(file.metadata.count == 33)
  #expect(file.alignment == 32)
  #expect(file.dataOffset == 1_785_664)
  #expect(file["general.architecture"]?.string == "llama")
  #expect(file["tokenizer.ggml.tokens"]?.array?.count == 49152)
  #expect(file["tokenizer.ggml.merges"]?.array?.count == 48900)
  #expect(file["tokenizer.ggml.tokens"]?.array?[1].string == "<|im_start|>")
  #expect(file.info("token_embd.weight")?.shape == [49152, 576])
  #expect(file.info("token_embd.weight")?.dtype == .q8_0)
  #expect(file.info("blk.0.attn_q.weight")?.shape == [576, 576])
  #expect(file.info("blk.0.attn_k.weight")?.shape == [192, 576])
  #expect(file.info("blk.0.attn_q.weight")?.dtype == .q4_1)
  // The worked example of formats.md: the first Q4_1 block of blk.0.attn_q.weight.
  let first = Array(try file.dequantized(named: "blk.0.attn_q.weight").prefix(4))
  let expected: [Float] = [-0.09631348, 0.15734863, -0.09631348, -0.73046875]
  #expect(zip(first, expected).allSatisfy { abs($0 - $1) <= 1e-7 })
  let config = try LlamaConfig(gguf: file)
  #expect(
    config
      == LlamaConfig(
        vocabularySize: 49152, embeddingLength: 576, layerCount: 30, headCount: 9,
        keyValueHeadCount: 3, feedForwardLength: 1536, ropeTheta: 100_000,
        normEpsilon: Double(Float(1e-5)), tiedEmbeddings: true, interleavedRope: true))
}
