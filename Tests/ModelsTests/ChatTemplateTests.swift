import Foundation
import Models
import TestSupport
import Testing

@Test func smolLMTemplateIsChatMLWithItsDefaultSystemMessage() throws {
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let template = try #require(tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:)))
  #expect(
    template.defaultSystem == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  )
  #expect(template.family == .chatML)
  let chat = try template.render(
    [ChatMessage(role: "user", content: "Hi!")], addGenerationPrompt: true)
  #expect(
    chat
      == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      + "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
  let withSystem = try template.render(
    [
      ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "2+2?"),
      ChatMessage(role: "assistant", content: "4"),
    ], addGenerationPrompt: false)
  #expect(
    withSystem
      == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
  )
  // Control tokens in a rendered chat become their ids.
  let ids = tokenizer.encode(withSystem, parseSpecial: true)
  #expect(ids.first == 1 && ids.filter { $0 == 2 }.count == 3)
  #expect(ChatTemplate(template: "{{ messages }}") == nil)
}

// Chat templates against transformers' apply_chat_template on public templates of each family
// (Tests/Fixtures/make_tokenizer_fixtures.py): every conversation renders to the same text, or
// is refused where the template raises.

private struct ChatFixture: Decodable {
  struct Case: Decodable {
    var template: String
    var messages: [ChatMessage]
    var add_generation_prompt: Bool
    var bos: String
    var eos: String
    var text: String?
    var error: String?
  }
  var templates: [String: String]
  var cases: [Case]
}

private func chatFixture() throws -> ChatFixture {
  try JSONDecoder().decode(
    ChatFixture.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("chat.json")))
}

@Test func chatTemplatesRenderAsTransformersDoes() throws {
  let fixture = try chatFixture()
  #expect(fixture.cases.count >= 100)
  let families: [String: ChatTemplate.Family] = [
    "chatml": .chatML, "qwen2": .chatML, "smollm2": .chatML, "llama3": .llama3, "gemma": .gemma,
    "mistral": .mistral,
  ]
  for item in fixture.cases {
    let text = try #require(fixture.templates[item.template])
    let template = try ChatTemplate(
      recognizing: text, beginOfSequence: item.bos, endOfSequence: item.eos)
    #expect(template.family == families[item.template])
    let label = "\(item.template) \(item.messages.map(\.role)) \(item.add_generation_prompt)"
    do {
      let rendered = try template.render(
        item.messages, addGenerationPrompt: item.add_generation_prompt)
      #expect(rendered == item.text, "\(label)")
      #expect(item.error == nil, "\(label): transformers raised \(item.error ?? "")")
    } catch {
      #expect(error.message == item.error, "\(label)")
    }
  }
}

@Test func unknownChatTemplatesAndVariantsAreErrorsNamingThem() throws {
  let unknown = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
  #expect(
    throws: ChatTemplateError(
      message: "the chat template is not one lorac recognises (ChatML, Llama 3, Gemma, Mistral "
        + "[INST]): '{% for message in messages %}{{ message['content'] }}{% endf...'")
  ) { try ChatTemplate(recognizing: unknown) }
  #expect(ChatTemplate(template: unknown) == nil)
  let llama31 =
    "{{- bos_token }}<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: "
    + "December 2023{{ '<|eot_id|>' }}"
  #expect(throws: ChatTemplateError.self) { try ChatTemplate(recognizing: llama31) }
  do {
    _ = try ChatTemplate(recognizing: "[INST] <<SYS>>{{ m }}<</SYS>> [/INST]")
    Issue.record("Llama 2's template was recognised")
  } catch {
    #expect(error.message.hasPrefix("the chat template is Llama 2's (<<SYS>>), which lorac"))
  }
}

@Test func chatFormatUsesTheTokenizersSpecialTexts() throws {
  // The GGUF llama fixture carries Mistral v0.1's template; BOS and EOS come from its metadata.
  let tokenizer = try Tokenizer(
    gguf: GGUFFile(path: fixtureGGUF(tokenizerFixtures, "llama-spm.gguf")))
  let template = try #require(try tokenizer.chatFormat())
  #expect(template.family == .mistral)
  let text = try template.render(
    [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Yo")],
    addGenerationPrompt: false)
  #expect(text == "<s>[INST] Hi [/INST]Yo</s>")
  let ids = tokenizer.encode(text, parseSpecial: true)
  #expect(ids.first == 1 && ids.last == 2 && ids.filter { $0 == 3 || $0 == 4 }.count == 2)
}

@Test func chatDataLearnsTheAssistantTurnsOfEveryFamily() throws {
  let fixture = try chatFixture()
  let path = tokenizerFixtures.appendingPathComponent("gemma/tokenizer.json")
  let gemma = try Tokenizer(tokenizerJSON: Array(Data(contentsOf: path)), path: path.path)
  let template = try ChatTemplate(
    recognizing: try #require(fixture.templates["gemma"]), beginOfSequence: "<bos>",
    endOfSequence: "<eos>")
  let line = Data(
    (#"{"messages": [{"role": "user", "content": "Hi there"}, "#
      + #"{"role": "assistant", "content": "Hello, world 🙂"}, {"role": "user", "content": "x"}, "#
      + #"{"role": "assistant", "content": "y"}]}"#).utf8)
  let example = try #require(
    try Dataset.parse(line, path: "chat.jsonl", tokenizer: gemma, template: template).first)
  // The whole chat is tokenized as the template renders it.
  let rendered = try template.render(
    [
      ChatMessage(role: "user", content: "Hi there"),
      ChatMessage(role: "assistant", content: "Hello, world 🙂"),
      ChatMessage(role: "user", content: "x"), ChatMessage(role: "assistant", content: "y"),
    ], addGenerationPrompt: false)
  #expect(example.ids == gemma.encode(rendered, parseSpecial: true))
  #expect(example.ids.first == 2)
  let learned = zip(example.ids.dropFirst(), example.weights).filter { $0.1 == 1 }.map(\.0)
  #expect(gemma.decode(learned) == "Hello, world 🙂<end_of_turn>y<end_of_turn>")
  // A system message is refused, as the template raises.
  let system = Data(
    #"{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#
      .utf8)
  #expect(
    throws: DatasetError(
      message: "chat.jsonl:1: the chat template refuses the messages: System role not supported")
  ) { try Dataset.parse(system, path: "chat.jsonl", tokenizer: gemma, template: template) }
}
