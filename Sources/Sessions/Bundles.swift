import Foundation
import IR
import Models
import Passes
import Runtime

extension CompiledBundle {
  /// Traces `model`, runs `pipeline` (after an adapter's `lora` pass), plans for `target` and
  /// makes the bundle: the IR, the pipeline, the memory and kernel plans, the parameters' values
  /// (the adapter's, or their initializers') and the model by path, size and fingerprint.
  ///
  /// `loss` traces the train graph, which `pipeline` must differentiate.
  public static func compiling(
    model path: String, pipeline: String, adapter: String?, batch: Int, sequence: Int, loss: Bool,
    target: Target = .host
  ) throws(SessionError) -> CompiledBundle {
    let model: LlamaModel
    let fingerprint: String
    let modelBytes: Int
    do {
      model = try LlamaModel(path: path)
      fingerprint = try Fingerprint.file(path)
      modelBytes = try Fingerprint.byteCount(ofModel: path)
    } catch let error as GGUFError {
      throw SessionError(error.message)
    } catch let error as FileError {
      throw SessionError(error.message)
    } catch {
      throw SessionError("\(path): \(error)")
    }
    if sequence > model.contextLength {
      throw SessionError(
        "--seq \(sequence) is more than the model's context of \(model.contextLength) tokens")
    }
    var parameters: [String: HostTensor] = [:]
    let graph = try wrapping {
      var graph = try model.trace(batch: batch, sequence: sequence, loss: loss)
      if let adapter {
        let peft = try PEFTAdapter.load(adapter, for: model)
        graph = try peft.loraPass().run(graph).compacted()
        parameters = peft.tensors
      }
      return try Pipeline(parsing: pipeline).run(graph)
    }
    if loss && graph.outputs.count < 2 {
      throw SessionError(
        "--pipeline '\(pipeline)' does not differentiate the loss (add autodiff{loss=loss})")
    }
    let executable = try wrapping {
      try Executable(graph, constants: try model.weights(for: graph), target: target)
    }
    // Parameters the adapter does not give keep the values their initializers make.
    for declaration in graph.declarations where declaration.kind == .parameter {
      if parameters[declaration.name] == nil {
        parameters[declaration.name] = try wrapping {
          try executable.value(named: declaration.name)
        }
      }
    }
    return CompiledBundle(
      graph: graph, pipeline: pipeline, kind: loss ? .loss : .logits,
      modelPath: URL(fileURLWithPath: path).standardizedFileURL.path, modelBytes: modelBytes,
      modelFingerprint: fingerprint, arenaBytes: executable.plan.arenaBytes,
      naiveBytes: executable.plan.naiveBytes,
      parameters: parameters.filter { name, _ in graph.declaration(named: name) != nil },
      plan: executable.kernelPlan.text(for: graph))
  }

  /// The kernel plan the bundle was compiled with, when it reads back for its graph and this CPU
  /// runs its tier (nil for bundles written before plans were stored: the caller plans again).
  public var storedPlan: KernelPlan? {
    guard let plan, let parsed = try? KernelPlan(parsing: plan),
      parsed.entries.count == graph.body.count, (try? parsed.target.checkHost()) != nil
    else { return nil }
    return parsed
  }
}

extension KernelPlan {
  /// The plan to show beside `graph`: a bundle's `stored` plan text when it reads back for the
  /// graph (whatever CPU it was made for), else a new plan for `isa` (default: this CPU's).
  public static func shown(for graph: Graph, stored: String?, isa: Target.ISA?) -> KernelPlan {
    if let stored, let parsed = try? KernelPlan(parsing: stored),
      parsed.entries.count == graph.body.count
    {
      return parsed
    }
    return KernelPlan(graph, target: Target(isa: isa ?? .host))
  }
}

/// A `.lorac` bundle bound to its base model, ready to run without tracing again.
public struct BundleSession {
  public let bundle: CompiledBundle
  /// The base model's file (checked to be the one the bundle was compiled for).
  public let modelPath: String
  public let batch: Int
  public let sequence: Int
  private let path: String

  /// What a run computed: logits (`[seq, vocab]` for one sequence, else `[batch, seq, vocab]`),
  /// or the loss and the gradients by `<parameter>.grad`.
  public enum Output {
    case logits(HostTensor)
    case loss(Float, gradients: [(name: String, tensor: HostTensor)])
  }

  /// Reads the bundle at `path` and checks its base model (`model`, else the path it names) by
  /// size and fingerprint.
  public init(path: String, model: String?) throws(SessionError) {
    do {
      bundle = try CompiledBundle(path: path)
    } catch {
      throw SessionError(error.message)
    }
    self.path = path
    modelPath = model ?? bundle.modelPath
    guard let size = try? Fingerprint.byteCount(ofModel: modelPath) else {
      throw SessionError("no such file '\(modelPath)' (the bundle's base model)")
    }
    let fingerprint: String
    do {
      fingerprint = try Fingerprint.file(modelPath)
    } catch {
      throw SessionError(error.message)
    }
    if size != bundle.modelBytes || fingerprint != bundle.modelFingerprint {
      throw SessionError(
        "\(modelPath) is not the model \(path) was compiled for (size \(size), fingerprint "
          + "\(fingerprint); expected \(bundle.modelBytes), \(bundle.modelFingerprint))")
    }
    let graph = bundle.graph
    guard let tokens = graph.inputs.first(where: { $0.name == "tokens" }),
      graph.type(of: tokens.value).rank == 2, graph.type(of: tokens.value).dtype == .i32
    else {
      throw SessionError("\(path): the graph has no tokens input of type i32[batch, seq]")
    }
    let shape = graph.type(of: tokens.value).shape
    (batch, sequence) = (shape[0], shape[1])
  }

  /// Token ids a run takes per row: `sequence`, and one more (the last target) for a loss bundle.
  public var idsPerRow: Int { bundle.kind == .loss ? sequence + 1 : sequence }

  /// Binds the base weights, runs the graph on `ids` and returns what it computes.
  ///
  /// `ids` are `batch` rows of `idsPerRow` (every position weighted in a loss); `option` names
  /// them in messages.
  public func run(ids: [Int32], option: String = "--ids") throws(SessionError) -> Output {
    let perRow = idsPerRow
    guard ids.count == batch * perRow else {
      throw SessionError(
        "\(option): the bundle takes \(batch) x \(perRow) = \(batch * perRow) ids, got \(ids.count)"
      )
    }
    let model = try LlamaModel.open(modelPath)
    let vocabulary = model.config.vocabularySize
    if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
      throw SessionError("\(option): token \(bad) is out of range 0..<\(vocabulary)")
    }
    let (graph, batch, seq) = (bundle.graph, batch, sequence)
    let outputs = try wrapping {
      let executable = try Executable(
        graph, plan: bundle.storedPlan ?? KernelPlan(graph, target: .host),
        constants: try model.weights(for: graph))
      for (name, tensor) in bundle.parameters { try executable.set(name, tensor) }
      var inputs: [String: HostTensor] = [
        "positions": HostTensor(
          shape: [batch, seq], ints: (0..<(batch * seq)).map { Int32($0 % seq) })
      ]
      let rows = (0..<batch).map { Array(ids[($0 * perRow)..<(($0 + 1) * perRow)]) }
      inputs["tokens"] = HostTensor(shape: [batch, seq], ints: rows.flatMap { $0.prefix(seq) })
      if bundle.kind == .loss {
        inputs["targets"] = HostTensor(shape: [batch, seq], ints: rows.flatMap { $0.dropFirst() })
        inputs["weights"] = HostTensor(
          shape: [batch, seq], floats: [Float](repeating: 1, count: batch * seq))
      }
      return try executable.run(inputs: inputs)
    }
    if bundle.kind == .logits {
      // One sequence is [seq, vocab], as lorac logits writes it.
      guard batch == 1 else { return .logits(outputs[0]) }
      return .logits(
        try wrapping {
          try HostTensor(
            type: TensorType(.f32, Array(outputs[0].type.shape.dropFirst())), data: outputs[0].data)
        })
    }
    guard let loss = outputs.first?.floats().first, outputs[0].type.elementCount == 1 else {
      throw SessionError("\(path): its first output is not the scalar loss")
    }
    let parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
    return .loss(
      loss, gradients: zip(parameters, outputs.dropFirst()).map { ($0 + ".grad", $1) })
  }
}
