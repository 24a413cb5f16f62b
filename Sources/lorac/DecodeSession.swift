import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// KV-cache decoding of one sequence: a prefill graph for the prompt and a one-token step graph
/// that share the caches, compiled for a fixed context.
struct DecodeSession {
  let model: LlamaModel
  let context: Int
  private let adapter: PEFTAdapter?
  private let compiled = CompiledGraphs()

  /// Compiled decoding graphs by token count, reused across generations.
  private final class CompiledGraphs {
    var byTokens: [Int: Executable] = [:]
  }

  /// Loads the model (and adapter) for prompts of up to `context` tokens in all.
  init(modelPath: String, context: Int, adapter adapterPath: String?) {
    do {
      model = try LlamaModel(path: modelPath)
    } catch {
      fail(error.message)
    }
    self.context = context
    if let adapterPath {
      do {
        adapter = try PEFTAdapter(directory: adapterPath, config: model.config)
      } catch {
        fail(error.message)
      }
    } else {
      adapter = nil
    }
  }

  /// A compiled decoding graph for `tokens` new tokens, with the adapter applied (compiled once).
  func compile(tokens: Int) throws -> Executable {
    if let executable = compiled.byTokens[tokens] { return executable }
    let executable = try compileNew(tokens: tokens)
    compiled.byTokens[tokens] = executable
    return executable
  }

  private func compileNew(tokens: Int) throws -> Executable {
    // The forward graph, adapted and fused, then turned into a decoding graph over KV caches.
    var graph = try model.trace(batch: 1, sequence: tokens)
    if let adapter {
      let selector = try NameSelector(parsing: "{" + adapter.targets.joined(separator: ",") + "}")
      graph = try Lora(
        rank: adapter.rank, alpha: adapter.alpha, targets: selector, rsLoRA: adapter.useRSLoRA
      )
      .run(graph).compacted()
    }
    graph = try Fuse().run(graph).compacted()
    graph = try Decode(context: context).run(graph).compacted()
    let executable = try Executable(graph, constants: try model.weights(for: graph))
    for (name, tensor) in adapter?.tensors ?? [:] { try executable.set(name, tensor) }
    return executable
  }

  /// What a generation produced, with its speeds.
  struct Result {
    var ids: [Int32]
    var prefillSeconds: Double
    var decodeSeconds: Double
  }

  /// Generates up to `maxTokens` tokens after `prompt`, calling `emit` with each new token; stops
  /// early when `stop` returns true for the tokens so far.
  func generate(
    prompt: [Int32], maxTokens: Int, sampling: SamplingOptions,
    stop: ([Int32]) -> Bool, emit: (Int32) -> Void
  ) throws -> Result {
    let vocabulary = model.config.vocabularySize
    var sampler = Sampler(sampling)
    let prefill = try compile(tokens: prompt.count)
    let step = try compile(tokens: 1)
    func run(_ executable: Executable, tokens: [Int32], slot: Int) throws -> UnsafeBufferPointer<
      Float
    > {
      let count = tokens.count
      var mask = [Int32](repeating: 0, count: count * context)
      for t in 0..<count {
        for s in 0...(slot + t) { mask[t * context + s] = 1 }
      }
      try executable.set("tokens", HostTensor(shape: [1, count], ints: tokens))
      try executable.set(
        "positions", HostTensor(shape: [1, count], ints: (0..<count).map { Int32(slot + $0) }))
      try executable.set("cache_start", HostTensor(shape: [4], ints: [0, 0, Int32(slot), 0]))
      try executable.set("key_mask", HostTensor(shape: [1, count, context], ints: mask))
      try executable.execute()
      return UnsafeBufferPointer(
        start: executable.outputAddress(0).assumingMemoryBound(to: Float.self), count: vocabulary)
    }
    var history = prompt
    var generated: [Int32] = []
    let start = DispatchTime.now().uptimeNanoseconds
    var logits = try run(prefill, tokens: prompt, slot: 0)
    try step.copyState(from: prefill)
    let prefillDone = DispatchTime.now().uptimeNanoseconds
    while generated.count < maxTokens {
      let next = sampler.next(logits, history: history)
      generated.append(next)
      history.append(next)
      emit(next)
      if stop(generated) || history.count >= context { break }
      logits = try run(step, tokens: [next], slot: history.count - 1)
    }
    let end = DispatchTime.now().uptimeNanoseconds
    return Result(
      ids: generated, prefillSeconds: Double(prefillDone - start) / 1e9,
      decodeSeconds: Double(end - prefillDone) / 1e9)
  }
}
