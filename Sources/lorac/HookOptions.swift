import ArgumentParser
import Foundation
import IR
import Models
import Sessions

/// The hook flags of `logits` and `generate`: capture values to a safetensors file; patch, steer
/// or ablate values by name (`lorac names MODEL` lists them).
struct HookOptions: ParsableArguments {
  @Option(
    help:
      "Capture every value whose name matches this glob (repeatable), e.g. 'layers.*.residual.mlp'."
  )
  var capture: [String] = []

  @Option(
    name: .customLong("capture-out"),
    help: "The .safetensors file for the captured values, each [batch, positions, ...] by name.")
  var captureOut: String?

  @Option(
    help:
      "NAME=FILE.npy: replace the value by the array (its shape per token, or [n, ...] for positions 0..<n); repeatable."
  )
  var patch: [String] = []

  @Option(
    help:
      "NAME=FILE.npy[:SCALE]: add SCALE (default 1) times the array (shaped as for --patch), a steering vector; repeatable."
  )
  var add: [String] = []

  @Option(help: "NAME (or a glob): zero the value at every position; repeatable.")
  var ablate: [String] = []

  func check() throws {
    if !capture.isEmpty && captureOut == nil {
      throw ValidationError("--capture needs --capture-out FILE.safetensors")
    }
    if capture.isEmpty && captureOut != nil {
      throw ValidationError("--capture-out needs at least one --capture GLOB")
    }
    for spec in patch + add where !spec.contains("=") {
      throw ValidationError("'\(spec)': expected NAME=FILE.npy")
    }
  }

  /// The hooks the flags ask for, with the arrays read.
  func hooks() throws(SessionError) -> Hooks {
    var edits: [HookEdit] = []
    for spec in patch {
      let (name, file) = split(spec)
      edits.append(HookEdit(name: name, action: .patch(try read(file, flag: "--patch"))))
    }
    for spec in add {
      var (name, file) = split(spec)
      var scale: Float = 1
      if let colon = file.lastIndex(of: ":"), let value = Float(file[file.index(after: colon)...]),
        !FileManager.default.fileExists(atPath: file)
      {
        scale = value
        file = String(file[..<colon])
      }
      edits.append(HookEdit(name: name, action: .add(try read(file, flag: "--add"), scale: scale)))
    }
    edits += ablate.map { HookEdit(name: $0, action: .ablate) }
    return Hooks(captures: capture, edits: edits)
  }

  /// Writes the captured values (crash-safely) to `--capture-out`.
  func write(_ captures: [(name: String, tensor: HostTensor)]) throws(SessionError) {
    guard let captureOut else { return }
    try wrapping {
      try SafetensorsFile.write(
        captures, metadata: ["format": "pt"], to: URL(fileURLWithPath: captureOut))
    }
  }

  private func split(_ spec: String) -> (String, String) {
    let equals = spec.firstIndex(of: "=") ?? spec.endIndex
    return (String(spec[..<equals]), String(spec[spec.index(after: equals)...]))
  }

  private func read(_ path: String, flag: String) throws(SessionError) -> HostTensor {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch {
      throw SessionError("\(flag): cannot read \(path): \(error.localizedDescription)")
    }
    return try wrapping { try NumPy.decode(data, path: path) }
  }
}
