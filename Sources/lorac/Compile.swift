import ArgumentParser
import Foundation
import IR
import Models
import Passes
import Runtime
import Sessions

/// `lorac compile`: trace, rewrite and plan a graph once, and store it as a `.lorac` bundle.
struct Compile: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compile a model graph ahead of time into a .lorac bundle.",
    discussion: """
      The bundle holds the IR after --pipeline, the pipeline, the memory plan, the adapter's \
      values (--adapter, or the pipeline's own initial values) and the base model's path, size \
      and fingerprint; the base weights stay in the model file. With --adapter the adapter's \
      lora pass runs first. --loss compiles the train graph (loss and adapter gradients; the \
      pipeline must differentiate it, e.g. 'lora{...},freeze,fuse,autodiff{loss=loss},dce'). \
      lorac run executes a bundle without tracing again; lorac dump-ir prints its IR.
      """)

  @Argument(help: "The GGUF model.")
  var model: String

  @Option(help: "The pass pipeline (default: fuse).")
  var pipeline = "fuse"

  @Option(help: "A PEFT adapter directory to compile in.")
  var adapter: String?

  @Option(parsing: .unconditional, help: "Sequences per run.")
  var batch = 1

  @Option(parsing: .unconditional, help: "Tokens per sequence.")
  var seq = 16

  @Flag(help: "Compile the train graph (next-token loss) instead of the logits.")
  var loss = false

  @Option(name: .shortAndLong, help: "The .lorac bundle to write.")
  var output: String

  func validate() throws {
    if batch < 1 { throw ValidationError("--batch must be at least 1, got \(batch)") }
    if seq < 1 { throw ValidationError("--seq must be at least 1, got \(seq)") }
  }

  func run() throws {
    let loaded: LlamaModel
    let fingerprint: String
    let modelBytes: Int
    do {
      loaded = try LlamaModel(path: model)
      fingerprint = try Fingerprint.file(model)
      modelBytes = try FileManager.default.attributesOfItem(atPath: model)[.size] as? Int ?? 0
    } catch let error as GGUFError {
      fail(error.message)
    } catch {
      fail("\(model): \(error)")
    }
    if seq > loaded.contextLength {
      fail("--seq \(seq) is more than the model's context of \(loaded.contextLength) tokens")
    }
    var graph: Graph
    var parameters: [String: HostTensor] = [:]
    do {
      graph = try loaded.trace(batch: batch, sequence: seq, loss: loss)
      if let adapter {
        let peft = try PEFTAdapter.load(adapter, for: loaded)
        graph = try peft.loraPass().run(graph).compacted()
        parameters = peft.tensors
      }
      graph = try Pipeline(parsing: pipeline).run(graph)
    } catch {
      fail("\(error)")
    }
    if loss && graph.outputs.count < 2 {
      fail("--pipeline '\(pipeline)' does not differentiate the loss (add autodiff{loss=loss})")
    }
    let executable: Executable
    do {
      executable = try Executable(graph, constants: try loaded.weights(for: graph))
      // Parameters the adapter does not give keep the values their initializers make.
      for declaration in graph.declarations where declaration.kind == .parameter {
        if parameters[declaration.name] == nil {
          parameters[declaration.name] = try executable.value(named: declaration.name)
        }
      }
    } catch {
      fail("\(error)")
    }
    let bundle = CompiledBundle(
      graph: graph, pipeline: pipeline, kind: loss ? .loss : .logits,
      modelPath: URL(fileURLWithPath: model).standardizedFileURL.path, modelBytes: modelBytes,
      modelFingerprint: fingerprint, arenaBytes: executable.plan.arenaBytes,
      naiveBytes: executable.plan.naiveBytes,
      parameters: parameters.filter { name, _ in graph.declaration(named: name) != nil },
      plan: executable.kernelPlan.text(for: graph))
    do {
      try bundle.write(to: output)
    } catch {
      fail(error.message)
    }
    FileHandle.standardError.write(
      Data(
        ("compiled \(graph.body.count) instructions, arena \(executable.plan.arenaBytes) bytes "
          + "(\(executable.plan.naiveBytes) without reuse) -> \(output)\n").utf8))
  }
}

/// `lorac run`: executes a `.lorac` bundle.
struct Run: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a .lorac bundle: logits to --out (.npy), or the loss and gradients.",
    discussion: """
      --ids gives batch x seq token ids for a logits bundle, and batch x (seq + 1) for a loss \
      bundle (inputs and next-token targets, every position weighted). The base model is read \
      from the path the bundle names (or --model) and must be the same file: its size and \
      fingerprint are checked.
      """)

  @Argument(help: "The .lorac bundle.")
  var bundle: String

  @Option(parsing: .unconditional, help: "Comma-separated token ids.")
  var ids: String

  @Option(help: "Where to write the logits (.npy) or the gradients (.safetensors).")
  var out: String?

  @Option(help: "The base model, when it moved since compiling.")
  var model: String?

  @Option(parsing: .unconditional, help: "Threads (default: all cores).")
  var threads: Int?

  func validate() throws { try validateThreads(threads) }

  func run() throws {
    Threads.set(threads)
    let loaded: CompiledBundle
    do {
      loaded = try CompiledBundle(path: bundle)
    } catch {
      fail(error.message)
    }
    let modelPath = model ?? loaded.modelPath
    let size = (try? FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int) ?? nil
    guard let size else { fail("no such file '\(modelPath)' (the bundle's base model)") }
    let fingerprint: String
    do {
      fingerprint = try Fingerprint.file(modelPath)
    } catch {
      fail(error.message)
    }
    if size != loaded.modelBytes || fingerprint != loaded.modelFingerprint {
      fail(
        "\(modelPath) is not the model \(bundle) was compiled for (size \(size), fingerprint "
          + "\(fingerprint); expected \(loaded.modelBytes), \(loaded.modelFingerprint))")
    }
    let graph = loaded.graph
    guard let tokens = graph.inputs.first(where: { $0.name == "tokens" }),
      graph.type(of: tokens.value).rank == 2, graph.type(of: tokens.value).dtype == .i32
    else {
      fail("\(bundle): the graph has no tokens input of type i32[batch, seq]")
    }
    let shape = graph.type(of: tokens.value).shape
    let (batch, seq) = (shape[0], shape[1])
    let values = try parseIDs(ids, option: "--ids")
    let perRow = loaded.kind == .loss ? seq + 1 : seq
    guard values.count == batch * perRow else {
      fail(
        "--ids: the bundle takes \(batch) x \(perRow) = \(batch * perRow) ids, got \(values.count)")
    }
    do {
      let model = try LlamaModel(path: modelPath)
      if let bad = values.first(where: { $0 < 0 || Int($0) >= model.config.vocabularySize }) {
        fail("--ids: token \(bad) is out of range 0..<\(model.config.vocabularySize)")
      }
      let executable = try Executable(
        graph, plan: storedPlan(loaded) ?? KernelPlan(graph, target: .host),
        constants: try model.weights(for: graph))
      for (name, tensor) in loaded.parameters { try executable.set(name, tensor) }
      var inputs: [String: HostTensor] = [
        "positions": HostTensor(
          shape: [batch, seq], ints: (0..<(batch * seq)).map { Int32($0 % seq) })
      ]
      let rows = (0..<batch).map { Array(values[($0 * perRow)..<(($0 + 1) * perRow)]) }
      inputs["tokens"] = HostTensor(shape: [batch, seq], ints: rows.flatMap { $0.prefix(seq) })
      if loaded.kind == .loss {
        inputs["targets"] = HostTensor(shape: [batch, seq], ints: rows.flatMap { $0.dropFirst() })
        inputs["weights"] = HostTensor(
          shape: [batch, seq], floats: [Float](repeating: 1, count: batch * seq))
      }
      let outputs = try executable.run(inputs: inputs)
      if loaded.kind == .logits {
        guard let out else { fail("--out: where to write the logits (.npy)") }
        // One sequence is written [seq, vocab], as lorac logits writes it.
        let logits =
          batch == 1
          ? try HostTensor(
            type: TensorType(.f32, Array(outputs[0].type.shape.dropFirst())), data: outputs[0].data)
          : outputs[0]
        try writeAtomically(NumPy.encode(logits), to: URL(fileURLWithPath: out))
        return
      }
      guard let loss = outputs.first?.floats().first, outputs[0].type.elementCount == 1 else {
        fail("\(bundle): its first output is not the scalar loss")
      }
      print("{\"loss\": \(loss)}")
      if let out {
        let parameters = graph.declarations.filter { $0.kind == .parameter }.map(\.name)
        let gradients = zip(parameters, outputs.dropFirst()).map { ($0 + ".grad", $1) }
        try SafetensorsFile.write(gradients, to: URL(fileURLWithPath: out))
      }
    } catch let error as FileError {
      fail(error.message)
    } catch {
      fail("\(error)")
    }
  }
}

/// The kernel plan a bundle was compiled with, when it reads back for its graph and this CPU runs
/// its tier (nil for bundles written before plans were stored: the caller plans again).
private func storedPlan(_ bundle: CompiledBundle) -> KernelPlan? {
  guard let text = bundle.plan, let plan = try? KernelPlan(parsing: text),
    plan.entries.count == bundle.graph.body.count, (try? plan.target.checkHost()) != nil
  else { return nil }
  return plan
}
