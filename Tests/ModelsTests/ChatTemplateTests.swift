import Models
import TestSupport
import Testing

@Test func smolLMTemplateIsChatMLWithItsDefaultSystemMessage() throws {
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let template = try #require(tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:)))
  #expect(
    template.defaultSystem == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  )
  let chat = template.render([ChatMessage(role: "user", content: "Hi!")], addGenerationPrompt: true)
  #expect(
    chat
      == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      + "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
  let withSystem = template.render(
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
