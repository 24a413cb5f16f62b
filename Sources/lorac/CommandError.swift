import ArgumentParser
import Foundation
import Models
import Runtime
import Sessions

/// Prints `error: message` to standard error and exits with status 1.
///
/// Commands report every failure through this (or by throwing, which `Lorac.main` turns into the
/// same line), so stdout carries only the requested output.
func fail(_ message: String) -> Never {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
  exit(1)
}

/// Writes a line (or, without `newline`, text that ends its own lines) to standard error.
func printError(_ line: String, newline: Bool = true) {
  FileHandle.standardError.write(Data((newline ? line + "\n" : line).utf8))
}

/// Reads a whole file as UTF-8 text, `-` meaning standard input.
func readText(_ path: String) -> String {
  let data: Data
  if path == "-" {
    data = FileHandle.standardInput.readDataToEndOfFile()
  } else {
    guard let contents = FileManager.default.contents(atPath: path) else {
      var isDirectory: ObjCBool = false
      if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
        fail(isDirectory.boolValue ? "\(path): is a directory" : "\(path): cannot read the file")
      }
      fail("\(path): cannot open: No such file or directory")
    }
    data = contents
  }
  guard let text = String(data: data, encoding: .utf8) else {
    fail("\(path == "-" ? "standard input" : path): is not UTF-8 text")
  }
  return text
}

/// `--threads`: at least 1 when given; left out, every core.
struct ThreadsOption: ParsableArguments {
  @Option(
    name: .customLong("threads"), parsing: .unconditional, help: "Threads (default: all cores).")
  var count: Int?

  /// The command's `validate()` calls this where `--threads` was always checked.
  func check() throws {
    if let count, count < 1 {
      throw ValidationError("--threads must be at least 1, got \(count)")
    }
  }

  /// Sets the thread count of the kernels (OpenMP and OpenBLAS) for this process.
  func apply() { Threads.set(count) }
}

/// Parses `1,2,3` into token ids; the message names `option`.
func parseIDs(_ text: String, option: String) throws(SessionError) -> [Int32] {
  let parts = text.split(separator: ",", omittingEmptySubsequences: false)
  var ids: [Int32] = []
  for part in parts {
    guard let id = Int32(part.trimmingCharacters(in: .whitespaces)) else {
      throw SessionError(
        "\(option): '\(part)' is not a token id (expected comma-separated integers like 1,2,3)")
    }
    ids.append(id)
  }
  if ids.isEmpty { throw SessionError("\(option): no token ids") }
  return ids
}

/// `--adapter-scale`: the factor on the adapter's branches, checked against `--adapter`.
struct AdapterScaleOption: ParsableArguments {
  @Option(
    name: .customLong("adapter-scale"), parsing: .unconditional,
    help:
      "The factor on the adapter's branches: 1 as trained, 0 the base model bit for bit (same compiled graph)."
  )
  var scale: Float = 1

  /// The command's `validate()` calls this once it knows whether an adapter was given.
  func check(adapters: [String]) throws {
    if !scale.isFinite { throw ValidationError("--adapter-scale must be finite, got \(scale)") }
    if scale != 1 && adapters.isEmpty {
      throw ValidationError("--adapter-scale needs --adapter")
    }
  }
}

/// The adapters of repeated `--adapter DIR[:WEIGHT]` options for `model`, as one adapter whose
/// branch is their weighted sum (nil when none is given).
///
/// A suffix `:WEIGHT` is read as a weight only when it is a number and the whole text is not an
/// existing path.
func loadAdapters(_ specs: [String], for model: LlamaModel) throws(SessionError) -> PEFTAdapter? {
  guard !specs.isEmpty else { return nil }
  var adapters: [(adapter: PEFTAdapter, weight: Double)] = []
  for spec in specs {
    var (path, weight) = (spec, 1.0)
    if let colon = spec.lastIndex(of: ":"), let value = Double(spec[spec.index(after: colon)...]),
      !FileManager.default.fileExists(atPath: spec)
    {
      guard value.isFinite else {
        throw SessionError("--adapter \(spec): the weight must be a finite number")
      }
      (path, weight) = (String(spec[..<colon]), value)
    }
    adapters.append((try PEFTAdapter.load(path, for: model), weight))
  }
  do {
    return try PEFTAdapter.combining(adapters)
  } catch {
    throw SessionError(error.message)
  }
}

extension WeightPrecision: ExpressibleByArgument {
  /// The `--precision` help; `fallback` is the default it names, when the option's value is
  /// optional.
  static func help(default fallback: WeightPrecision?) -> ArgumentHelp {
    ArgumentHelp(
      stringLiteral:
        "f32 or bf16: bf16 rounds the frozen weight matrices and the activations they multiply to "
        + "bf16 (avx512_bf16 dot products with f32 sums; adapters, gradients and AdamW stay f32). "
        + "On CPUs without avx512_bf16 it trains in f32 (faster there), with a note."
        + (fallback.map { " (default: \($0))" } ?? ""))
  }
}

/// Runs a step of a data-parallel command; an error on this rank is printed and stops every rank
/// (the others would wait for it in a collective), else it is thrown as usual.
func stoppingEveryRank<T>(_ parallel: DataParallel?, _ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch {
    if let parallel {
      let message = (error as? SessionError)?.message ?? String(describing: error)
      printError("error: rank \(parallel.rank): \(message)")
      parallel.abort(code: 1)
    }
    throw error
  }
}
