import Foundation
import Models
import TestSupport
import Testing

/// The tiny Llama folder with `template` as its chat_template.jinja.
private func folder(withTemplate template: String) throws -> URL {
  let folder = try temporaryFolder()
  let tiny = huggingFaceFixtures.appendingPathComponent("tiny-llama").path
  for name in try FileManager.default.contentsOfDirectory(atPath: tiny) {
    try FileManager.default.copyItem(
      atPath: tiny + "/" + name, toPath: folder.appendingPathComponent(name).path)
  }
  try template.write(
    to: folder.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
  return folder
}

private struct ChatFixture: Decodable {
  struct Case: Decodable {
    var template: String
    var messages: [ChatMessage]
    var add_generation_prompt: Bool
    var text: String?
  }
  var templates: [String: String]
  var cases: [Case]
}

@Test func generateChatUsesTheFoldersLlama3TemplateAndRefusesAnUnknownOne() throws {
  let fixture = try JSONDecoder().decode(
    ChatFixture.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("chat.json")))
  let llama3 = try folder(withTemplate: try #require(fixture.templates["llama3"]))
  let unknown = try folder(
    withTemplate: "{% for message in messages %}{{ message['content'] }}{% endfor %}")
  defer {
    for url in [llama3, unknown] { try? FileManager.default.removeItem(at: url) }
  }
  // The prompt is transformers' rendering of one user message, BOS written once by the template.
  let rendered = try #require(
    fixture.cases.first {
      $0.template == "llama3" && $0.add_generation_prompt && $0.messages.count == 1
        && $0.messages[0].content == "Hi!"
    }?.text)
  let tokenizer = try Tokenizer(huggingFace: HuggingFaceFolder(path: llama3.path))
  let expected = tokenizer.encode(rendered, parseSpecial: true)
  #expect(expected.first == 0 && expected.filter { $0 == 0 }.count == 1)
  let result = try lorac([
    "generate", llama3.path, "--prompt", "Hi!", "--chat", "--max-tokens", "1", "--json",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  let output = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
  #expect((output?["prompt_ids"] as? [Int])?.map(Int32.init) == expected)

  let refused = try lorac(["generate", unknown.path, "--prompt", "hi", "--chat"])
  #expect(refused.status == 1)
  #expect(
    refused.stderr
      == "error: --chat: the chat template is not one lorac recognises (ChatML, Llama 3, Gemma, "
      + "Mistral [INST]): '{% for message in messages %}{{ message['content'] }}{% endf...'\n")
  #expect(refused.stdout.isEmpty)
}
