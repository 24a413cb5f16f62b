import Foundation
import Models
import TestSupport
import Testing

@Test func aCompiledBundleRunsLikeTheTracedModel() throws {
  let model = try modelPath()
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  let (bundle, ours, reference) = (
    temporaryURL(".lorac").path, temporaryURL(".npy").path, temporaryURL(".npy").path
  )
  defer {
    for path in [bundle, ours, reference] { try? FileManager.default.removeItem(atPath: path) }
  }
  let compiled = try lorac([
    "compile", model, "--adapter", adapter, "--seq", "5", "-o", bundle,
  ])
  #expect(compiled.status == 0, "\(compiled.stderr)")
  #expect(compiled.stderr.hasPrefix("compiled "))
  // Same graph, same kernels: the logits are byte-identical to lorac logits with the adapter.
  let ran = try lorac(["run", bundle, "--ids", "1,17,300,42,9", "--out", ours])
  #expect(ran.status == 0, "\(ran.stderr)")
  let traced = try lorac([
    "logits", model, "--ids", "1,17,300,42,9", "--out", reference, "--adapter", adapter,
  ])
  #expect(traced.status == 0)
  #expect(
    try Data(contentsOf: URL(fileURLWithPath: ours))
      == Data(contentsOf: URL(fileURLWithPath: reference)))
  // dump-ir prints the bundle's IR, which check-ir accepts as canonical.
  let dumped = try lorac(["dump-ir", bundle])
  #expect(dumped.status == 0)
  #expect(dumped.stdout.contains("lora_linear"))
  let checked = try lorac(["check-ir", "-"], stdin: dumped.stdout)
  #expect(checked.stdout == dumped.stdout)
  // The bundle holds the plan it was compiled with; printed beside the IR, which still parses.
  let planned = try lorac(["dump-ir", bundle, "--plan"])
  #expect(planned.status == 0, "\(planned.stderr)")
  #expect(planned.stdout.hasPrefix("# target isa="))
  #expect(try lorac(["check-ir", "-"], stdin: planned.stdout).stdout == dumped.stdout)
  // A bundle from before plans were stored still runs (planned again), with the same logits.
  var old = try CompiledBundle(path: bundle)
  #expect(old.plan != nil)
  old.plan = nil
  let (oldBundle, oldLogits) = (temporaryURL(".lorac").path, temporaryURL(".npy").path)
  defer {
    for path in [oldBundle, oldLogits] { try? FileManager.default.removeItem(atPath: path) }
  }
  try old.write(to: oldBundle)
  let oldRan = try lorac(["run", oldBundle, "--ids", "1,17,300,42,9", "--out", oldLogits])
  #expect(oldRan.status == 0, "\(oldRan.stderr)")
  #expect(
    try Data(contentsOf: URL(fileURLWithPath: oldLogits))
      == Data(contentsOf: URL(fileURLWithPath: ours)))
  #expect(try lorac(["dump-ir", oldBundle, "--plan"]).stdout == planned.stdout)
}

@Test func aCompiledTrainBundleGivesTheLossOfLoracGrad() throws {
  let model = try modelPath()
  let adapter = smolLMFixtures.appendingPathComponent("peft_qv_r4").path
  let (bundle, gradients) = (temporaryURL(".lorac").path, temporaryURL(".safetensors").path)
  let gradGradients = temporaryURL(".safetensors").path
  defer {
    for path in [bundle, gradients, gradGradients] {
      try? FileManager.default.removeItem(atPath: path)
    }
  }
  let compiled = try lorac([
    "compile", model, "--adapter", adapter, "--seq", "4", "--loss", "--pipeline",
    "freeze,fuse,autodiff{loss=loss},dce", "-o", bundle,
  ])
  #expect(compiled.status == 0, "\(compiled.stderr)")
  let ran = try lorac(["run", bundle, "--ids", "5,6,7,8,9", "--out", gradients])
  let grad = try lorac([
    "grad", model, "--adapter", adapter, "--ids", "5,6,7,8,9", "--out", gradGradients,
  ])
  #expect(ran.status == 0, "\(ran.stderr)")
  #expect(grad.status == 0, "\(grad.stderr)")
  func loss(_ text: String) -> Double? {
    let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    return (object?["loss"] as? NSNumber)?.doubleValue
  }
  let (ours, reference) = (try #require(loss(ran.stdout)), try #require(loss(grad.stdout)))
  #expect(abs(ours - reference) <= 1e-5 * abs(reference))
  #expect(FileManager.default.fileExists(atPath: gradients))
}

@Test func bundlesRefuseAnotherBaseModelAndBadInput() throws {
  let model = try modelPath()
  let bundle = temporaryURL(".lorac").path
  let copy = temporaryURL(".gguf").path
  defer { for path in [bundle, copy] { try? FileManager.default.removeItem(atPath: path) } }
  #expect(try lorac(["compile", model, "--seq", "2", "-o", bundle]).status == 0)
  // The same size, one byte different.
  var bytes = try Data(contentsOf: URL(fileURLWithPath: model))
  bytes[bytes.count / 2] ^= 0x01
  try bytes.write(to: URL(fileURLWithPath: copy))
  bytes = Data()
  let moved = try lorac([
    "run", bundle, "--ids", "1,2", "--out", temporaryURL(".npy").path, "--model", copy,
  ])
  #expect(moved.status == 1)
  #expect(moved.stderr.hasPrefix("error: \(copy) is not the model \(bundle) was compiled for"))
  let truncated = temporaryURL(".lorac").path
  defer { try? FileManager.default.removeItem(atPath: truncated) }
  try Data(try Data(contentsOf: URL(fileURLWithPath: bundle)).prefix(500)).write(
    to: URL(fileURLWithPath: truncated))
  let cases: [([String], String)] = [
    (["run", bundle, "--ids", "1,2,3"], "error: --ids: the bundle takes 1 x 2 = 2 ids, got 3\n"),
    (["run", bundle, "--ids", "1,99999"], "error: --ids: token 99999 is out of range 0..<49152\n"),
    (["run", bundle, "--ids", "1,2"], "error: --out: where to write the logits (.npy)\n"),
    (["run", "/nonexistent.lorac", "--ids", "1"], "error: /nonexistent.lorac: "),
    (["run", truncated, "--ids", "1"], "error: \(truncated): header length "),
    (["run", model, "--ids", "1"], "(expected a .lorac bundle from lorac compile)\n"),
    (
      ["compile", model, "--pipeline", "fuse,fsue", "-o", temporaryURL(".lorac").path],
      "unknown pass 'fsue'"
    ),
    (
      ["compile", model, "--loss", "-o", temporaryURL(".lorac").path],
      "error: --pipeline 'fuse' does not differentiate the loss (add autodiff{loss=loss})\n"
    ),
  ]
  for (arguments, message) in cases {
    let result = try lorac(arguments)
    #expect(result.status == 1, "\(arguments)")
    #expect(
      result.stderr.hasPrefix(message) || result.stderr.contains(message),
      "\(arguments): \(result.stderr)")
  }
}

@Test func aBundleOfAnotherGraphIsRefusedNotRun() throws {
  // A bundle whose graph is the tutorials' MLP: well formed, but nothing lorac run can feed.
  let model = try modelPath()
  let (bundle, mlp) = (temporaryURL(".lorac").path, temporaryURL(".ir").path)
  defer { for path in [bundle, mlp] { try? FileManager.default.removeItem(atPath: path) } }
  #expect(try lorac(["compile", model, "--seq", "2", "-o", bundle]).status == 0)
  let ir = try lorac(["dump-ir", "--example", "mlp"]).stdout
  // Swap the IR in the bundle's header for the MLP's (same length is not needed: rewrite it).
  var data = try Data(contentsOf: URL(fileURLWithPath: bundle))
  let length = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
  var header = try #require(
    try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as? [String: Any])
  var metadata = try #require(header["__metadata__"] as? [String: String])
  metadata["lorac.ir"] = ir
  header = ["__metadata__": metadata]
  var json = try JSONSerialization.data(withJSONObject: header)
  json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
  data = Data()
  withUnsafeBytes(of: UInt64(json.count).littleEndian) { data.append(contentsOf: $0) }
  data.append(json)
  try data.write(to: URL(fileURLWithPath: bundle))
  let result = try lorac(["run", bundle, "--ids", "1,2", "--out", temporaryURL(".npy").path])
  #expect(result.status == 1)
  // The reader checks the bundle's tensors against the graph it carries before anything runs.
  #expect(result.stderr == "error: \(bundle): no tensor for parameter @fc1.weight\n")
}
