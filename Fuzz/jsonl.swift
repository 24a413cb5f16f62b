// libFuzzer target: the jsonl dataset reader, with the model's tokenizer and chat template.
//
// Any bytes give training examples or throw `DatasetError`. The tokenizer comes from the GGUF
// file at $LORAC_MODEL (scripts/fuzz passes the fetched model), read once.
import Foundation
import Models

nonisolated(unsafe) var tokenizer: Tokenizer?
nonisolated(unsafe) var template: ChatTemplate?

@_cdecl("LLVMFuzzerInitialize")
public func initializeJSONL(
  _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>>
) -> CInt {
  guard let path = ProcessInfo.processInfo.environment["LORAC_MODEL"] else {
    fatalError("set LORAC_MODEL to the GGUF model whose tokenizer the dataset reader uses")
  }
  do {
    let file = try GGUFFile(path: path)
    tokenizer = try Tokenizer(gguf: file)
    template = tokenizer?.chatTemplate.flatMap(ChatTemplate.init(template:))
  } catch {
    fatalError("\(error)")
  }
  return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSONL(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard let tokenizer else { return 0 }
  let bytes = Data(bytes: data, count: size)
  // With and without a chat template: `messages` lines need one.
  _ = try? Dataset.parse(bytes, path: "fuzz.jsonl", tokenizer: tokenizer, template: template)
  _ = try? Dataset.parse(bytes, path: "fuzz.jsonl", tokenizer: tokenizer, template: nil)
  return 0
}
