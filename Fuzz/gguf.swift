// libFuzzer target: the GGUF reader and what reads its metadata (hyper-parameters, tokenizer,
// chat template).
//
// Any bytes parse or throw `GGUFError`; every small tensor of a parsed file converts to a host
// tensor and dequantizes, or throws; the Llama config and the tokenizer build or throw, and a
// tokenizer encodes and decodes a short text.
import Foundation
import Models

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let mapping = FileMapping(
    copying: UnsafeBufferPointer(start: data, count: size), path: "fuzz.gguf")
  guard let file = try? GGUFFile(mapping: mapping) else { return 0 }
  for info in file.tensors where info.byteCount <= 1 << 20 {
    if let tensor = try? file.tensor(named: info.name) { _ = tensor.floats() }
    _ = try? file.dequantized(named: info.name)
  }
  _ = try? file.hostTensors()
  _ = try? LlamaConfig(gguf: file)
  if let tokenizer = try? Tokenizer(gguf: file) {
    let ids = tokenizer.encode("Hi <|im_start|>user 12 x\n", parseSpecial: true)
    _ = tokenizer.decode(ids)
    if let template = tokenizer.chatTemplate.flatMap(ChatTemplate.init(template:)) {
      _ = try? template.render(
        [ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
    }
  }
  return 0
}
