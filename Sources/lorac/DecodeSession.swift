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
  /// The weights' packed forms, made once for every graph of the session.
  private let forms = PackedForms()
  /// The CPU the graphs are planned for (int8 activations, ISA tier).
  let target: Target

  /// Compiled decoding graphs by batch, token count and head form, reused across generations.
  private final class CompiledGraphs {
    var byShape: [[Int]: Executable] = [:]
  }

  /// Loads the model (and adapter) for prompts of up to `context` tokens in all.
  init(modelPath: String, context: Int, adapter adapterPath: String?, target: Target = .host) {
    let loaded: LlamaModel
    do {
      loaded = try LlamaModel(path: modelPath)
    } catch {
      fail(error.message)
    }
    model = loaded
    self.context = context
    self.target = target
    adapter = adapterPath.map { PEFTAdapter.load($0, for: loaded) }
  }

  /// A compiled decoding graph for `tokens` new tokens, with the adapter applied (compiled once).
  ///
  /// With `last`, only the last new token's logits (`[batch, vocab]`); otherwise every new
  /// token's (`[batch, tokens, vocab]`).
  func compile(tokens: Int, batch: Int = 1, last: Bool = true) throws -> Executable {
    let key = [batch, tokens, last ? 1 : 0]
    if let executable = compiled.byShape[key] { return executable }
    let executable = try compileNew(tokens: tokens, batch: batch, last: last)
    compiled.byShape[key] = executable
    return executable
  }

  private func compileNew(tokens: Int, batch: Int, last: Bool) throws -> Executable {
    // The forward graph, adapted and fused, then turned into a decoding graph over KV caches.
    try compileAdapted(
      try model.trace(batch: batch, sequence: tokens), model: model, adapter: adapter,
      packedForms: forms, target: target
    ) { graph in try Decode(context: context, last: last).run(graph).compacted() }
  }

  /// Sets a decoding graph's inputs for `tokens` new tokens of one sequence written at cache slots
  /// `slot...`: positions count from `slot`, and each token sees the slots up to its own.
  func setInputs(_ executable: Executable, tokens: [Int32], slot: Int) throws {
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
      try setInputs(executable, tokens: tokens, slot: slot)
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

  /// Greedy continuations of several prompts decoded together, one batch row each.
  ///
  /// Prompts of different lengths share one prefill: shorter rows are padded at the end and the
  /// padded cache slots stay masked for good; every row then takes one token per step at its own
  /// positions. A row ends when `stop` holds for its tokens or at `maxTokens[row]`; the batch ends
  /// when every row has.
  func greedyBatch(prompts: [[Int32]], maxTokens: [Int], stop: ([Int32]) -> Bool) throws
    -> [[Int32]]
  {
    let batch = prompts.count
    let lengths = prompts.map(\.count)
    let longest = lengths.max() ?? 1
    let steps = maxTokens.max() ?? 0
    guard batch > 0, lengths.allSatisfy({ $0 > 0 }), longest + steps <= context else {
      throw RuntimeError(
        message: "prompts of up to \(longest) tokens and \(steps) new ones do not fit \(context)")
    }
    let vocabulary = model.config.vocabularySize
    let prefill = try compile(tokens: longest, batch: batch, last: false)
    let step = try compile(tokens: 1, batch: batch)
    var mask = [Int32](repeating: 0, count: batch * longest * context)
    var positions = [Int32](repeating: 0, count: batch * longest)
    for row in 0..<batch {
      for t in 0..<longest {
        positions[row * longest + t] = Int32(min(t, lengths[row] - 1))
        for slot in 0...min(t, lengths[row] - 1) { mask[(row * longest + t) * context + slot] = 1 }
      }
    }
    let padded = prompts.flatMap { $0 + [Int32](repeating: 0, count: longest - $0.count) }
    try prefill.set("tokens", HostTensor(shape: [batch, longest], ints: padded))
    try prefill.set("positions", HostTensor(shape: [batch, longest], ints: positions))
    try prefill.set("cache_start", HostTensor(shape: [4], ints: [0, 0, 0, 0]))
    try prefill.set("key_mask", HostTensor(shape: [batch, longest, context], ints: mask))
    try prefill.execute()
    try step.copyState(from: prefill)
    // The sampler's greedy rule (no penalty, so no history): the same tie-break as `generate`.
    var sampler = Sampler(SamplingOptions())
    func argmax(_ pointer: UnsafePointer<Float>) -> Int32 {
      sampler.next(UnsafeBufferPointer(start: pointer, count: vocabulary), history: [])
    }
    let first = prefill.outputAddress(0).assumingMemoryBound(to: Float.self)
    var next = (0..<batch).map { argmax(first + ($0 * longest + lengths[$0] - 1) * vocabulary) }
    var generated = [[Int32]](repeating: [], count: batch)
    var done = [Bool](repeating: false, count: batch)
    // Each row sees its prompt (slots 0..<length) and the generated tokens (slots from longest).
    var stepMask = [Int32](repeating: 0, count: batch * context)
    for row in 0..<batch { for slot in 0..<lengths[row] { stepMask[row * context + slot] = 1 } }
    for k in 0..<steps {
      for row in 0..<batch where !done[row] {
        generated[row].append(next[row])
        done[row] = generated[row].count >= maxTokens[row] || stop(generated[row])
      }
      if done.allSatisfy({ $0 }) || k == steps - 1 { break }
      let slot = longest + k
      for row in 0..<batch { stepMask[row * context + slot] = 1 }
      try step.set("tokens", HostTensor(shape: [batch, 1], ints: next))
      try step.set(
        "positions",
        HostTensor(shape: [batch, 1], ints: (0..<batch).map { Int32(lengths[$0] + k) }))
      try step.set("cache_start", HostTensor(shape: [4], ints: [0, 0, Int32(slot), 0]))
      try step.set("key_mask", HostTensor(shape: [batch, 1, context], ints: stepMask))
      try step.execute()
      let logits = step.outputAddress(0).assumingMemoryBound(to: Float.self)
      next = (0..<batch).map { argmax(logits + $0 * vocabulary) }
    }
    return generated
  }
}
