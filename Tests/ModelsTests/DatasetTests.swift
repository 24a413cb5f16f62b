import Foundation
import Models
import TestSupport
import Testing

private func write(_ text: String) throws -> String {
  let url = temporaryURL(".jsonl")
  try text.write(to: url, atomically: true, encoding: .utf8)
  return url.path
}

@Test func datasetReadsEveryFormatWithTheRightLossMask() throws {
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let template = tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:))
  let path = try write(
    """
    {"prompt": ">>> mystery_function(1, 2)\\n", "completion": "3"}

    {"text": "Hello world"}
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    """)
  defer { try? FileManager.default.removeItem(atPath: path) }
  let examples = try Dataset.load(path: path, tokenizer: tokenizer, template: template)
  #expect(examples.count == 3)
  // Completion: only "3" and the end-of-sequence token are learned.
  let completion = examples[0]
  let promptCount = tokenizer.encode(">>> mystery_function(1, 2)\n").count
  #expect(completion.ids.count == promptCount + 2)
  #expect(completion.weights == [Float](repeating: 0, count: promptCount - 1) + [1, 1])
  #expect(completion.ids.last == 2)
  // Text: everything is learned, ending with end-of-sequence.
  #expect(examples[1].weights.allSatisfy { $0 == 1 })
  // Chat: only the assistant's "Hello!<|im_end|>" is learned.
  let chat = examples[2]
  let learned = zip(chat.ids.dropFirst(), chat.weights).filter { $0.1 == 1 }.map(\.0)
  #expect(tokenizer.decode(learned) == "Hello!<|im_end|>")
}

@Test func datasetErrorsNameTheLine() throws {
  let tokenizer = try Tokenizer(gguf: GGUFFile(path: try modelPath()))
  let template = tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:))
  let cases: [(String, String)] = [
    (
      "{\"text\": \"ok\"}\n{\"text\": 3}\n",
      ":2: \"text\" must be a string, got a number"
    ),
    ("{\"prompt\": \"a\"}\n", ":1: \"prompt\" needs a string \"completion\""),
    ("{\"text\": \"a\"}\nnot json\n", ":2: not valid JSON (offset 0: invalid literal)"),
    ("[1, 2]\n", ":1: expected a JSON object, got an array"),
    (
      "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
      ":1: \"messages\" has no assistant turn to learn"
    ),
    ("\n\n", ": no examples"),
  ]
  for (text, suffix) in cases {
    let path = try write(text)
    defer { try? FileManager.default.removeItem(atPath: path) }
    #expect(throws: DatasetError(message: path + suffix)) {
      try Dataset.load(path: path, tokenizer: tokenizer, template: template)
    }
  }
}

@Test func mysteryFunctionExamplesAreSumsBelowOneThousand() {
  let examples = Dataset.mysteryFunction(count: 500, seed: 3)
  let again = Dataset.mysteryFunction(count: 500, seed: 3)
  #expect(examples.map(\.prompt) == again.map(\.prompt))
  for example in examples {
    let numbers = example.prompt.dropFirst(">>> mystery_function(".count).dropLast(2)
      .split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    #expect(numbers.count == 2 && numbers.allSatisfy { (0..<1000).contains($0) })
    #expect(example.answer == String(numbers.reduce(0, +)))
  }
}
