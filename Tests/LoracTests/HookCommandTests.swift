import Foundation
import IR
import Models
import TestSupport
import Testing

// `--capture`, `--patch`, `--add`, `--ablate` on logits and generate: the files they write and the
// one-line errors for bad names, files and shapes (no capture file is left behind).

/// Writes `tensor` as a .npy file and returns its path.
private func npy(_ tensor: HostTensor) throws -> String {
  let url = temporaryURL(".npy")
  try NumPy.encode(tensor).write(to: url)
  return url.path
}

@Test func logitsAndGenerateWriteCapturesAndApplyEdits() throws {
  let model = try modelPath()
  let (plain, edited, captures) = (temporaryURL(".npy"), temporaryURL(".npy"), temporaryURL(".st"))
  defer { for url in [plain, edited, captures] { try? FileManager.default.removeItem(at: url) } }
  let ids = ["--ids", "1,504,3575,282,4649"]
  let plainCaptures = temporaryURL(".st")
  defer { try? FileManager.default.removeItem(at: plainCaptures) }
  let first = try lorac(
    ["logits", model] + ids + [
      "--out", plain.path, "--capture", "layers.1.residual.mlp", "--capture-out",
      plainCaptures.path,
    ])
  #expect(first.status == 0, "\(first.stderr)")
  let v = (0..<576).map { Float($0 % 7) - 3 }
  let vector = try npy(HostTensor(shape: [576], floats: v))
  let run = try lorac(
    ["logits", model] + ids + [
      "--out", edited.path, "--capture", "layers.{1,2}.residual.*", "--capture", "embed",
      "--capture-out", captures.path, "--add", "layers.1.residual.mlp=\(vector):0.5",
      "--ablate", "layers.2.mlp.down",
    ])
  #expect(run.status == 0, "\(run.stderr)")
  #expect(try Data(contentsOf: edited) != Data(contentsOf: plain))
  let file = try SafetensorsFile(path: captures.path)
  #expect(
    file.entries.map(\.name) == [
      "embed", "layers.1.residual.attn", "layers.1.residual.mlp", "layers.2.residual.attn",
      "layers.2.residual.mlp",
    ])
  let entries = file.entries
  #expect(entries.allSatisfy { $0.shape == [1, 5, 576] && $0.dtype == "F32" })
  // The steering vector moved layer 1's stream by 0.5 v at every position ...
  let steered = try file.tensor(named: "layers.1.residual.mlp").floats()
  let unsteered = try SafetensorsFile(path: plainCaptures.path).tensor(
    named: "layers.1.residual.mlp"
  ).floats()
  let largest = unsteered.map(abs).max() ?? 0
  for (k, (a, b)) in zip(steered, unsteered).enumerated() {
    #expect(abs((a - b) - 0.5 * v[k % 576]) <= 1e-6 * largest + 1e-6)
  }
  // ... and layer 2's MLP adds nothing: its residual is the one after its attention.
  #expect(
    try file.tensor(named: "layers.2.residual.mlp").floats()
      == file.tensor(named: "layers.2.residual.attn").floats())

  let generated = try lorac([
    "generate", model, "--prompt-ids", "1,504,3575", "--max-tokens", "3", "--json",
    "--capture", "layers.0.attn.v", "--capture-out", captures.path,
  ])
  #expect(generated.status == 0, "\(generated.stderr)")
  let decoded = try SafetensorsFile(path: captures.path)
  // The prompt's 3 positions and the 3 generated tokens'.
  #expect(decoded.entries.map(\.shape) == [[1, 6, 192]])
}

@Test func hookFlagsRejectBadInputWithOneLine() throws {
  let model = try modelPath()
  let out = temporaryURL(".npy")
  let captures = temporaryURL(".safetensors")
  defer { for url in [out, captures] { try? FileManager.default.removeItem(at: url) } }
  let logits = ["logits", model, "--ids", "1,504,3575", "--out", out.path]
  func error(_ arguments: [String]) throws -> String {
    let result = try lorac(arguments)
    #expect(result.status != 0, "\(arguments.suffix(4)) succeeded")
    return result.stderr.trimmingCharacters(in: .newlines)
  }
  #expect(
    try error(logits + ["--capture", "layers.0.attn.pattern", "--capture-out", captures.path])
      == "error: --capture layers.0.attn.pattern: no value of the model has that name (nearest: "
      + "layers.0.attn.probs, layers.0.attn.q, layers.0.attn.k; `lorac names MODEL` lists "
      + "them all)")
  #expect(!FileManager.default.fileExists(atPath: captures.path))
  #expect(
    try error(logits + ["--capture", "embed"]).hasPrefix("error: --capture needs --capture-out"))
  #expect(
    try error(logits + ["--patch", "embed"]).hasPrefix("error: 'embed': expected NAME=FILE.npy"))
  let wrong = try npy(HostTensor(shape: [4, 576], floats: [Float](repeating: 1, count: 4 * 576)))
  #expect(
    try error(logits + ["--patch", "embed=\(wrong)"])
      == "error: --patch embed: the tensor has 4 positions; the run computes 3")
  let narrow = try npy(HostTensor(shape: [2, 575], floats: [Float](repeating: 1, count: 2 * 575)))
  #expect(
    try error(logits + ["--add", "layers.3.attn.o=\(narrow):2"])
      == "error: --add layers.3.attn.o: the tensor is f32[2, 575]; layers.3.attn.o is f32[576] "
      + "per token, so expected f32[576] or f32[positions, 576]")
  let integers = temporaryURL(".npy")
  defer { try? FileManager.default.removeItem(at: integers) }
  try NumPy.encode(HostTensor(shape: [576], ints: [Int32](repeating: 0, count: 576))).write(
    to: integers)
  #expect(
    try error(logits + ["--patch", "embed=\(integers.path)"])
      == "error: \(integers.path): holds '<i4' elements; expected float32 ('<f4'), float64 or "
      + "float16")
  #expect(
    try error(logits + ["--patch", "embed=/nonexistent/v.npy"]).hasPrefix(
      "error: --patch: cannot read /nonexistent/v.npy"))
  #expect(
    try error([
      "generate", model, "--prompt", "hi", "--capture", "layers.1.attn.probs", "--capture-out",
      captures.path,
    ])
      == "error: --capture layers.1.attn.probs: its shape f32[9, seq] runs over the keys, which "
      + "KV-cache decoding does not form; capture or change it with `lorac logits`")
  #expect(!FileManager.default.fileExists(atPath: captures.path))
}

@Test func hookPassesShowInDumpIR() throws {
  let result = try lorac([
    "dump-ir", try modelPath(), "--batch", "1", "--seq", "2", "--pipeline",
    "ablate{names=layers.0.attn.o},capture{names=layers.0.residual.attn}",
  ])
  #expect(result.status == 0, "\(result.stderr)")
  #expect(result.stdout.contains("fill {value=0.0}"))
  #expect(result.stdout.contains("\"layers.0.attn.o\""))
  #expect(result.stdout.contains("-> (f32[1,2,49152], f32[1,2,576])"))
}
