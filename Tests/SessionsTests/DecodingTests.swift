import Foundation
import Models
import Runtime
import Sessions
import TestSupport
import Testing

@Test func stopStringsCutTheGreedyTextAndStreamingDeliversTheSameText() throws {
  let model = try LlamaModel.open(try modelPath())
  let tokenizer = try model.tokenizer()
  let prompt = try tokenizer.prompt("The capital of France is", chat: false)
  let session = DecodeSession(model: model, context: 64, adapter: nil)
  // The oracle: the same greedy decode with no stop string, cut by hand.
  let free = try TextGenerator(session: session, tokenizer: tokenizer, ignoreEndOfSequence: true)
    .generate(prompt: prompt, maxTokens: 24, sampling: SamplingOptions())
  #expect(free.ids.count == 24)
  let words = free.text.split(separator: " ")
  try #require(words.count > 3)
  let stop = " " + words[2]
  let expected = String(free.text[..<free.text.range(of: stop)!.lowerBound])
  var pieces: [String] = []
  let cut = try TextGenerator(session: session, tokenizer: tokenizer, stopStrings: [stop])
    .generate(prompt: prompt, maxTokens: 24, sampling: SamplingOptions()) { pieces.append($0) }
  #expect(cut.text == expected)
  #expect(pieces.joined() == expected)
  #expect(cut.ids.count < free.ids.count)
  #expect(Array(free.ids.prefix(cut.ids.count)) == cut.ids)
}

@Test func aPromptTooLongForTheContextIsRefusedBeforeDecoding() throws {
  let model = try LlamaModel.open(try modelPath())
  let ids = [Int32](repeating: 1, count: model.contextLength)
  #expect(throws: SessionError.self) {
    try model.checkPrompt(ids, vocabulary: model.config.vocabularySize, option: "--prompt-ids")
  }
  #expect(throws: SessionError("the prompt has no tokens")) {
    try model.checkPrompt([], vocabulary: model.config.vocabularySize, option: "--prompt-ids")
  }
}
