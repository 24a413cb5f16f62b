import Foundation
import Testing

/// The cached SmolLM2 GGUF (scripts/fetch-model), or a recorded failure.
func cachedModel() throws -> String {
  let path =
    ProcessInfo.processInfo.environment["LORAC_MODEL"]
    ?? NSHomeDirectory() + "/.cache/lorac/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  guard FileManager.default.fileExists(atPath: path) else {
    Issue.record("model not found at \(path): run scripts/fetch-model (scripts/test does)")
    throw CancellationError()
  }
  return path
}

/// The output of one run of the built `lorac` executable.
struct RunResult {
  var status: Int32
  var stdout: String
  var stderr: String
}

/// The folder holding the built products (`lorac` sits beside the test bundle).
func productsFolder() -> URL {
  var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
  if let first = CommandLine.arguments.first {
    candidates.append(URL(fileURLWithPath: first).deletingLastPathComponent())
  }
  for folder in candidates
  where FileManager.default.isExecutableFile(atPath: folder.appendingPathComponent("lorac").path) {
    return folder
  }
  return Bundle.main.bundleURL
}

/// Runs `lorac` with arguments and optional standard input.
func lorac(_ arguments: [String], stdin: String? = nil) throws -> RunResult {
  let process = Process()
  process.executableURL = productsFolder().appendingPathComponent("lorac")
  process.arguments = arguments
  let output = Pipe()
  let errors = Pipe()
  let input = Pipe()
  process.standardOutput = output
  process.standardError = errors
  process.standardInput = input
  try process.run()
  // Drain stderr on another thread while stdout is read here: a child that fills one pipe while
  // the other is being waited on would block forever.
  let errorReader = ErrorReader(errors.fileHandleForReading)
  let thread = Thread { errorReader.read() }
  thread.start()
  if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
  try input.fileHandleForWriting.close()
  let out = output.fileHandleForReading.readDataToEndOfFile()
  let err = errorReader.wait()
  process.waitUntilExit()
  return RunResult(
    status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
    stderr: String(decoding: err, as: UTF8.self))
}

/// Reads a pipe to its end on another thread.
final class ErrorReader: @unchecked Sendable {
  private let handle: FileHandle
  private var data = Data()
  private let done = DispatchSemaphore(value: 0)

  init(_ handle: FileHandle) { self.handle = handle }

  func read() {
    data = handle.readDataToEndOfFile()
    done.signal()
  }

  func wait() -> Data {
    done.wait()
    return data
  }
}

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
  let products = try lorac(["dump-ir", "--example", "mlp", "--plan", "--isa", "avx2"]).stdout
  #expect(products.contains("# sgemm ") && !products.contains("f32_rows"))
  let bad = try lorac(["dump-ir", "--example", "mlp", "--isa", "avx2"])
  #expect(bad.status != 0 && bad.stderr.contains("--isa needs --plan"))
}

@Test func checkIRCanonicalisesAFile() throws {
  let file = FileManager.default.temporaryDirectory.appendingPathComponent("lorac-\(UUID()).ir")
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
