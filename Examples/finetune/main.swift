// Fine-tune a GGUF model with LoRA on q and v from a few examples held in memory, then generate.
//
//   swift run -c release finetune MODEL.gguf     (or LORAC_MODEL=MODEL.gguf)

import Foundation
import Models
import Runtime
import Sessions

let path =
  CommandLine.arguments.dropFirst().first ?? ProcessInfo.processInfo.environment["LORAC_MODEL"]
guard let path else {
  FileHandle.standardError.write(Data("usage: finetune MODEL.gguf (or set LORAC_MODEL)\n".utf8))
  exit(2)
}
do {
  let model = try LlamaModel.open(path)
  let tokenizer = try model.tokenizer()
  // The larger tutorial's task: `>>> mystery_function(a, b)` answers a + b.
  let examples = [(12, 30), (100, 23), (7, 8), (250, 250)].map { a, b in
    Dataset.completion(
      prompt: ">>> mystery_function(\(a), \(b))\n", completion: "\(a + b)", tokenizer: tokenizer)
  }
  let session = try TrainingSession(
    model: model,
    configuration: TrainingConfiguration(
      rank: 8, alpha: 16, targets: "layers.*.attn.{q,v}", batch: examples.count,
      sequence: examples.map { $0.ids.count - 1 }.reduce(2, max)))
  for step in 1...20 {
    let loss = try session.step(examples, learningRate: 2e-3)
    print("step \(step)  loss \(String(format: "%.4f", loss))")
  }
  // Decode with the trained adapter: a KV cache, greedy, until end-of-sequence or a newline.
  let prompt = try tokenizer.prompt(">>> mystery_function(40, 2)\n", chat: false)
  let generator = TextGenerator(
    session: DecodeSession(
      model: model, context: prompt.count + 16, adapter: try session.adapter()),
    tokenizer: tokenizer, stopStrings: ["\n"])
  let output = try generator.generate(prompt: prompt, maxTokens: 8, sampling: SamplingOptions())
  print(">>> mystery_function(40, 2) -> \(output.text)")
} catch {
  FileHandle.standardError.write(Data("error: \(error)\n".utf8))
  exit(1)
}
