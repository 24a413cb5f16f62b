import Foundation
import IR
import Models
import TestSupport
import Testing

// SmolLM2's GGUF against its Hugging Face export (make_hf_fixtures.py --smollm GGUF OUT: the
// GGUF's weights dequantized by transformers to float32, q/k rows returned to Hugging Face order,
// and its tokenizer.json). The export is about 540 MB, too large to commit: these tests run when
// LORAC_HF_SMOLLM names it and are skipped, with that reason, otherwise.

private let exportPath = ProcessInfo.processInfo.environment["LORAC_HF_SMOLLM"]
private let skipReason: Comment =
  "LORAC_HF_SMOLLM does not name a SmolLM2 export (Tests/Fixtures/make_hf_fixtures.py --smollm GGUF OUT)"

private struct Prompts: Decodable {
  struct Prompt: Decodable {
    var text: String
    var ids: [Int32]
  }
  var prompts: [Prompt]
}

private struct Strings: Decodable {
  struct Case: Decodable {
    var text: String
    var ids: [Int32]
  }
  var strings: [Case]
}

/// Both files hold the same numbers (the export's f32 weights are the GGUF's blocks decoded);
/// the traces differ in RoPE's form (pairs of adjacent rows vs halves), the kernels in summation
/// order (quantized rows vs sgemm): float32 rounding only, so the f32 bound, 1e-4.
@Test(.enabled(if: exportPath != nil, skipReason))
func smolLMExportGivesTheGGUFLogits() throws {
  let gguf = try LlamaModel(path: try modelPath())
  let export = try LlamaModel(path: try #require(exportPath))
  #expect(export.config.interleavedRope == false && gguf.config.interleavedRope)
  var configs = (gguf.config, export.config)
  configs.1.interleavedRope = true
  configs.1.normEpsilon = configs.0.normEpsilon
  #expect(configs.0 == configs.1)
  let prompts = try JSONDecoder().decode(
    Prompts.self, from: Data(contentsOf: smolLMFixtures.appendingPathComponent("prompts.json")))
  var worst: Float = 0
  for prompt in prompts.prompts {
    let (a, b) = (try runLogits(gguf, prompt.ids), try runLogits(export, prompt.ids))
    #expect(a.count == b.count)
    for (x, y) in zip(a, b) { worst = max(worst, abs(x - y)) }
  }
  print("SmolLM2 GGUF vs Hugging Face export: max |logit difference| \(worst)")
  #expect(worst <= 1e-4, "max |difference| \(worst)")
}

/// The export's tokenizer.json gives the ids transformers gave on the GGUF tokenizer
/// (Tests/Fixtures/smollm/tokenizer.json, 340 strings).
@Test(.enabled(if: exportPath != nil, skipReason))
func smolLMExportTokenizerMatchesHuggingFace() throws {
  let folder = try HuggingFaceFolder(path: try #require(exportPath))
  let tokenizer = try Tokenizer(huggingFace: folder)
  let fixture = try JSONDecoder().decode(
    Strings.self, from: Data(contentsOf: smolLMFixtures.appendingPathComponent("tokenizer.json")))
  var mismatches: [String] = []
  for item in fixture.strings {
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
  }
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
}
