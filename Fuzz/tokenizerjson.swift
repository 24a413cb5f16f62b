// libFuzzer target: a Hugging Face tokenizer.json.
//
// Any bytes build a tokenizer or throw `HuggingFaceError`; a tokenizer encodes a fixed text (with
// special tokens parsed, and not) and decodes the ids back.
import Foundation
import Models

let sample =
  "Hello, world! It's 2024: 12345 café 日本語 🙂 <|im_start|>user\n  x<|endoftext|>\r\n\u{0B}\u{85}"
  + " ▁x <s>[INST] e\u{301} <0x41> \u{1F9EA}</s><tool>  "

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizerJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = Array(UnsafeBufferPointer(start: data, count: size))
  guard let tokenizer = try? Tokenizer(tokenizerJSON: bytes, path: "tokenizer.json") else {
    return 0
  }
  for parseSpecial in [false, true] {
    let ids = tokenizer.encode(sample, parseSpecial: parseSpecial)
    _ = tokenizer.decode(ids)
    _ = tokenizer.bytes(ids)
  }
  if let template = try? tokenizer.chatFormat() {
    _ = try? template.render([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
  }
  return 0
}
