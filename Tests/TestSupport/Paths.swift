import Foundation
import Testing

/// The `Tests` folder of the checkout, found from this file's path (as swift-argument-parser
/// finds its fixtures), so tests read committed files wherever the package is built.
public let testsFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
  .deletingLastPathComponent()

/// `Tests/Fixtures`: small committed reference data and the scripts that made it.
public let fixturesFolder = testsFolder.appendingPathComponent("Fixtures")

/// `Tests/Fixtures/smollm`: what transformers computed for SmolLM2 (make_smollm_fixtures.py).
public let smolLMFixtures = fixturesFolder.appendingPathComponent("smollm")

/// `Tests/Fixtures/hf`: tiny Hugging Face checkpoints and tokenizers with what transformers and
/// the tokenizers library computed for them (make_hf_fixtures.py).
public let huggingFaceFixtures = fixturesFolder.appendingPathComponent("hf")

/// `Tests/Fixtures/tokenizers`: SentencePiece-style tokenizers (tokenizer.json and a GGUF) and chat
/// templates with what sentencepiece, tokenizers and transformers made of them
/// (make_tokenizer_fixtures.py).
public let tokenizerFixtures = fixturesFolder.appendingPathComponent("tokenizers")

/// The cached SmolLM2 GGUF (scripts/fetch-model), or a recorded failure telling how to get it.
///
/// `LORAC_MODEL` names the file; otherwise it is `SmolLM2-135M-Instruct.Q4_1.gguf` in
/// `$LORAC_CACHE/models` (default `~/.cache/lorac/models`), where scripts/fetch-model puts it.
/// - Throws: `CancellationError` after recording the issue when the file is missing.
public func modelPath() throws -> String {
  let environment = ProcessInfo.processInfo.environment
  let path =
    environment["LORAC_MODEL"]
    ?? (environment["LORAC_CACHE"].map { $0 + "/models" }
      ?? NSHomeDirectory() + "/.cache/lorac/models") + "/SmolLM2-135M-Instruct.Q4_1.gguf"
  guard FileManager.default.fileExists(atPath: path) else {
    Issue.record("model not found at \(path): run scripts/fetch-model (scripts/test does)")
    throw CancellationError()
  }
  return path
}
