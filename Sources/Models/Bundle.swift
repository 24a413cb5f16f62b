import Foundation
import IR

/// A `.lorac` bundle: a graph compiled ahead of time, stored as one safetensors file.
///
/// The header's metadata holds the canonical IR text, the pipeline that made it, what the graph
/// computes, its memory plan, its kernel plan as text (`lorac.plan`, written by the command line;
/// bundles from before it have none) and the base model by path, size and fingerprint; the tensors are the
/// values of the graph's parameters (a trained or imported adapter). Base weights are not copied:
/// `lorac run` binds them by name from the model file after checking it is the same file.
public struct CompiledBundle: Sendable {
  /// The format tag the reader requires.
  public static let format = "lorac-bundle-1"

  /// What the graph computes: `logits` of every position, or the `loss` and adapter gradients.
  public enum Kind: String, Sendable, CaseIterable {
    case logits, loss
  }

  public var graph: Graph
  public var pipeline: String
  public var kind: Kind
  public var modelPath: String
  public var modelBytes: Int
  public var modelFingerprint: String
  public var arenaBytes: Int
  public var naiveBytes: Int
  /// Parameter values by declaration name.
  public var parameters: [String: HostTensor]
  /// The kernel plan the bundle was compiled with, as text (nil in bundles written before plans
  /// were stored: a reader plans again).
  public var plan: String?

  public init(
    graph: Graph, pipeline: String, kind: Kind, modelPath: String, modelBytes: Int,
    modelFingerprint: String, arenaBytes: Int, naiveBytes: Int, parameters: [String: HostTensor],
    plan: String? = nil
  ) {
    self.graph = graph
    self.pipeline = pipeline
    self.kind = kind
    self.modelPath = modelPath
    self.modelBytes = modelBytes
    self.modelFingerprint = modelFingerprint
    self.arenaBytes = arenaBytes
    self.naiveBytes = naiveBytes
    self.parameters = parameters
    self.plan = plan
  }

  /// Writes the bundle crash-safely (temporary file, flush, rename).
  public func write(to path: String) throws(FileError) {
    var metadata = [
      "lorac.format": CompiledBundle.format, "lorac.ir": Printer().print(graph),
      "lorac.pipeline": pipeline, "lorac.kind": kind.rawValue, "lorac.model_path": modelPath,
      "lorac.model_bytes": String(modelBytes), "lorac.model_fingerprint": modelFingerprint,
      "lorac.arena_bytes": String(arenaBytes), "lorac.naive_bytes": String(naiveBytes),
    ]
    if let plan { metadata["lorac.plan"] = plan }
    do {
      try SafetensorsFile.write(
        parameters.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, metadata: metadata,
        to: URL(fileURLWithPath: path))
    } catch {
      throw FileError(message: error.message)
    }
  }

  /// Reads and checks a bundle: the format tag, every field, the IR (parsed and verified), and
  /// that its tensors are exactly the graph's parameters with their types.
  public init(path: String) throws(FileError) {
    func fail(_ message: String) -> FileError { FileError(message: "\(path): \(message)") }
    let file: SafetensorsFile
    do {
      file = try SafetensorsFile(path: path)
    } catch {
      throw FileError(message: error.message + " (expected a .lorac bundle from lorac compile)")
    }
    let metadata = file.metadata
    guard metadata["lorac.format"] == CompiledBundle.format else {
      throw fail(
        "not a lorac bundle (format '\(metadata["lorac.format"] ?? "none")', expected '\(CompiledBundle.format)')"
      )
    }
    func field(_ key: String) throws(FileError) -> String {
      guard let value = metadata["lorac." + key] else { throw fail("missing lorac.\(key)") }
      return value
    }
    func number(_ key: String) throws(FileError) -> Int {
      guard let value = Int(try field(key)), value >= 0 else {
        throw fail("lorac.\(key) is not a non-negative integer")
      }
      return value
    }
    guard let kind = Kind(rawValue: try field("kind")) else {
      throw fail("lorac.kind must be one of \(Kind.allCases.map(\.rawValue))")
    }
    do {
      graph = try Parser.parse(try field("ir"))
      try Verifier.verify(graph)
    } catch let error as FileError {
      throw error
    } catch {
      throw fail("its IR does not parse: \(error)")
    }
    self.kind = kind
    pipeline = try field("pipeline")
    modelPath = try field("model_path")
    modelBytes = try number("model_bytes")
    modelFingerprint = try field("model_fingerprint")
    arenaBytes = try number("arena_bytes")
    naiveBytes = try number("naive_bytes")
    plan = metadata["lorac.plan"]
    var parameters: [String: HostTensor] = [:]
    let declared = graph.declarations.filter { $0.kind == .parameter }
    for declaration in declared {
      guard file.entry(declaration.name) != nil else {
        throw fail("no tensor for parameter @\(declaration.name)")
      }
      let tensor: HostTensor
      do {
        tensor = try file.tensor(named: declaration.name)
      } catch {
        throw FileError(message: error.message)
      }
      let type = graph.type(of: declaration.value)
      guard tensor.type == type else {
        throw fail("tensor '\(declaration.name)' is \(tensor.type), the graph declares \(type)")
      }
      parameters[declaration.name] = tensor
    }
    if let extra = file.entries.map(\.name).first(where: { parameters[$0] == nil }) {
      throw fail("tensor '\(extra)' is not a parameter of the graph")
    }
    self.parameters = parameters
  }
}
