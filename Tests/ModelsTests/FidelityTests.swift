import Foundation
import IR
import Models
import Runtime
import TestSupport
import Testing

// SmolLM2 against Hugging Face transformers loading the same GGUF (dequantised to float32), from
// the fixtures Tests/Fixtures/make_smollm_fixtures.py wrote.

private struct TokenizerFixture: Decodable {
  struct Case: Decodable {
    var text: String
    var ids: [Int32]
  }
  var strings: [Case]
}

private struct PromptFixture: Decodable {
  struct Prompt: Decodable {
    var text: String
    var ids: [Int32]
    var greedy: [Int32]
    var columns: [Int]
  }
  var prompts: [Prompt]
}

private func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
  try JSONDecoder().decode(
    type, from: Data(contentsOf: smolLMFixtures.appendingPathComponent(name)))
}

/// The model's logits [n, vocab] for `ids` through the compiled runtime.
func runLogits(_ model: LlamaModel, _ ids: [Int32], target: Target = .host) throws -> [Float] {
  let graph = try model.trace(batch: 1, sequence: ids.count)
  let executable = try Executable(graph, constants: try model.weights(for: graph), target: target)
  return try executable.run(inputs: [
    "tokens": HostTensor(shape: [1, ids.count], ints: ids),
    "positions": HostTensor(shape: [1, ids.count], ints: (0..<ids.count).map { Int32($0) }),
  ])[0].floats()
}

@Test func tokenizerMatchesHuggingFace() throws {
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let fixture = try load("tokenizer.json", as: TokenizerFixture.self)
  #expect(fixture.strings.count >= 300)
  var mismatches: [String] = []
  for item in fixture.strings {
    let ids = tokenizer.encode(item.text, parseSpecial: true)
    if ids != item.ids { mismatches.append("\(item.text.debugDescription): \(ids) != \(item.ids)") }
    #expect(tokenizer.decode(ids) == item.text, "decode(encode(\(item.text.debugDescription)))")
  }
  #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
}

@Test func tokenizerSplitsNumeralsLikeLlamaCpp() throws {
  // transformers' GGUF tokenizer lacks the smollm digit split, so these are checked by hand: every
  // numeric code point is its own piece, and a space before one is its own token (216).
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let superscript = tokenizer.encode("x²")
  #expect(tokenizer.decode(superscript) == "x²")
  #expect(
    tokenizer.preTokenize("a ½²").map { String(String.UnicodeScalarView($0)) } == [
      "a", " ", "½", "²",
    ])
  #expect(tokenizer.encode(" 7") == [216, 39])
  #expect(tokenizer.encode("<|im_end|>") != [2])
  #expect(tokenizer.encode("<|im_end|>", parseSpecial: true) == [2])
}

@Test func logitsMatchTransformers() throws {
  let model = try LlamaModel(path: try modelPath())
  let fixture = try load("prompts.json", as: PromptFixture.self)
  #expect(fixture.prompts.count >= 5)
  let vocabulary = model.config.vocabularySize
  for (k, prompt) in fixture.prompts.enumerated() {
    let reference = try readNumPy(smolLMFixtures.appendingPathComponent("logits_\(k).npy"))
    #expect(reference.shape == [prompt.ids.count, prompt.columns.count])
    let logits = try runLogits(model, prompt.ids)
    var worst: Float = 0
    for position in 0..<prompt.ids.count {
      for (c, column) in prompt.columns.enumerated() {
        let ours = logits[position * vocabulary + column]
        let theirs = reference.values[position * prompt.columns.count + c]
        worst = max(worst, abs(ours - theirs))
      }
    }
    #expect(worst <= 1e-3, "prompt \(k): max |difference| \(worst)")
  }
}

@Test func greedyContinuationsMatchTransformers() throws {
  let model = try LlamaModel(path: try modelPath())
  let fixture = try load("prompts.json", as: PromptFixture.self)
  let vocabulary = model.config.vocabularySize
  for prompt in fixture.prompts {
    var ids = prompt.ids
    var generated: [Int32] = []
    while generated.count < prompt.greedy.count {
      let logits = try runLogits(model, ids)
      let last = logits[((ids.count - 1) * vocabulary)...]
      let next = Int32(last.indices.max { last[$0] < last[$1] }! - (ids.count - 1) * vocabulary)
      generated.append(next)
      ids.append(next)
    }
    #expect(generated == prompt.greedy, "\(prompt.text.debugDescription)")
  }
}
