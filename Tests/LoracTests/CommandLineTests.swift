import Foundation
import TestSupport
import Testing

@Test func dumpIRPrintsTheMLPAndCheckIRRoundTripsIt() throws {
  let dump = try lorac(["dump-ir", "--example", "mlp"])
  #expect(dump.status == 0)
  #expect(
    dump.stdout.hasPrefix("func @mlp(%x: f32[4,2], %labels: f32[4,2]) -> (f32[], f32[4,2]) {\n"))
  #expect(dump.stderr.isEmpty)
  let check = try lorac(["check-ir", "-"], stdin: dump.stdout)
  #expect(check.status == 0)
  #expect(check.stdout == dump.stdout)
}

@Test func dumpIRPrintsTheKernelPlanOfAnyTier() throws {
  let plain = try lorac(["dump-ir", "--example", "mlp"]).stdout
  for isa in ["portable", "avx2", "avx512", "avx512-vnni", "avx512-bf16"] {
    let dump = try lorac(["dump-ir", "--example", "mlp", "--plan", "--isa", isa])
    #expect(dump.status == 0, "\(dump.stderr)")
    #expect(dump.stdout.hasPrefix("# target isa=\(isa) threads=in-force"))
    // Every instruction has its entry beside it, and the text still parses to the same IR.
    let instructions = dump.stdout.split(separator: "\n").filter { $0.hasPrefix("  %") }
    #expect(instructions.count == 13 && instructions.allSatisfy { $0.contains("# ") })
    #expect(try lorac(["check-ir", "-"], stdin: dump.stdout).stdout == plain)
  }
  // Without a rows kernel (portable) the f32 products go to sgemm; AVX2 and AVX-512 have one.
  let products = try lorac(["dump-ir", "--example", "mlp", "--plan", "--isa", "portable"]).stdout
  #expect(products.contains("# sgemm ") && !products.contains("f32_rows"))
  let rows = try lorac(["dump-ir", "--example", "mlp", "--plan", "--isa", "avx2"]).stdout
  #expect(rows.contains("f32_rows") && rows.contains("avx2"))
  let bad = try lorac(["dump-ir", "--example", "mlp", "--isa", "avx2"])
  #expect(bad.status != 0 && bad.stderr.contains("--isa needs --plan"))
}

@Test func checkIRCanonicalisesAFile() throws {
  let file = temporaryURL(".ir")
  try "func @f(%x: f32[2]) -> (f32[2]) {\n%y = neg %x : f32[2]\nreturn %y\n}".write(
    to: file, atomically: true, encoding: .utf8)
  defer { try? FileManager.default.removeItem(at: file) }
  let result = try lorac(["check-ir", file.path])
  #expect(result.status == 0)
  #expect(
    result.stdout
      == "func @f(%x: f32[2]) -> (f32[2]) {\n  %0 = neg %x                                : f32[2]\n  return %0\n}\n"
  )
}

@Test func checkIRReportsLineAndColumn() throws {
  let result = try lorac(
    ["check-ir", "-"],
    stdin:
      "func @f(%x: f32[2,3]) -> (f32[2,2]) {\n  %0 = matmul %x, %x : f32[2,2]\n  return %0\n}\n")
  #expect(result.status == 1)
  #expect(result.stdout.isEmpty)
  #expect(result.stderr == "error: 2:8: matmul: contraction mismatch: f32[2,3] x f32[2,3]\n")
}

@Test func checkIRReportsUnreadableFiles() throws {
  let missing = try lorac(["check-ir", "/nonexistent/model.ir"])
  #expect(missing.status == 1)
  #expect(
    missing.stderr == "error: /nonexistent/model.ir: cannot open: No such file or directory\n")
  let folder = try lorac(["check-ir", "/tmp"])
  #expect(folder.status == 1)
  #expect(folder.stderr == "error: /tmp: is a directory\n")
  let garbage = try lorac(["check-ir", "-"], stdin: "\u{FF}")
  #expect(garbage.status == 1)
  #expect(garbage.stderr == "error: 1:1: unexpected character byte 0xc3\n")
}

@Test func helpAndVersion() throws {
  let version = try lorac(["--version"])
  #expect(version.status == 0)
  #expect(version.stdout == "lorac 0.1.0\n")
  let help = try lorac(["--help"])
  #expect(help.status == 0)
  #expect(help.stdout.contains("dump-ir"))
  #expect(help.stdout.contains("check-ir"))
  let unknown = try lorac(["dump-ir", "--example", "gpt5"])
  #expect(unknown.status == 1)
  #expect(unknown.stderr.hasPrefix("error: "))
  #expect(unknown.stderr.contains("gpt5"))
  #expect(unknown.stderr.hasSuffix(" (see 'lorac dump-ir --help')\n"))
}

@Test func namesListsEveryHookPointAsTextAndJSON() throws {
  let model = try modelPath()
  let text = try lorac(["names", model])
  #expect(text.status == 0, "\(text.stderr)")
  let lines = text.stdout.split(separator: "\n")
  #expect(lines.count == 302)
  #expect(
    lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["embed", "f32[576]"])
  let json = try lorac(["names", model, "--json"])
  let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
  let names = try #require(object?["names"] as? [[String: Any]])
  #expect(names.count == 302)
  let probs = try #require(names.first { $0["name"] as? String == "layers.0.attn.probs" })
  #expect(probs["shape"] as? [AnyHashable] == [9, "seq"])
  let missing = try lorac(["names", "missing.gguf"])
  #expect(missing.status == 1)
  #expect(missing.stderr == "error: missing.gguf: cannot open: No such file or directory\n")
}

@Test func everyModelBenchRunsTheKernelsOfAnotherTier() throws {
  let model = try modelPath()
  for arguments in [
    ["decode", model, "--positions", "4", "--runs", "1"],
    ["prefill", model, "--tokens", "8", "--runs", "1"],
    ["train", model, "--batch", "1", "--seq", "4", "--runs", "1"],
  ] {
    let result = try lorac(["bench"] + arguments + ["--isa", "avx2", "--json"])
    #expect(result.status == 0, "bench \(arguments[0]): \(result.stderr)")
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    #expect((object?["tokens_per_s"] as? Double ?? 0) > 0, "bench \(arguments[0])")
  }
  let unknown = try lorac(["bench", "decode", model, "--isa", "sse"])
  #expect(unknown.status == 1)
  #expect(unknown.stderr.hasPrefix("error: The value 'sse' is invalid for '--isa <isa>'"))
}
