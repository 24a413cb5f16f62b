import Dispatch
import Foundation
import IR
import Models
import Passes
import Runtime

/// KV-cache decoding: a prefill graph for the prompt and a one-token step graph that share the
/// caches, compiled for a fixed context (and once per shape, then reused across generations).
public struct DecodeSession {
  public let model: LlamaModel
  public let context: Int
  private let compiled = CompiledGraphs()
  /// The weights' packed forms, made once for every graph of the session.
  private let forms = PackedForms()
  /// The kernels' target: ISA tier, int8 activations, bf16 products.
  public let target: Target
  /// Captures and edits applied in every graph (nil: none).
  private let hooks: BoundHooks?

  /// Compiled decoding graphs by batch, token count and head form, reused across generations,
  /// and the adapter scale they all run with.
  private final class CompiledGraphs {
    var byShape: [[Int]: Executable] = [:]
    var adapterScale: Float = 1
    var adapter: PEFTAdapter?
  }

  /// The adapter the graphs run (nil: the base model).
  public var adapter: PEFTAdapter? { compiled.adapter }

  /// Swaps in another adapter with the same targets, rank and scale: its values are copied into
  /// every graph compiled so far and bound by those compiled later; nothing is recompiled.
  public func setAdapter(_ replacement: PEFTAdapter) throws(SessionError) {
    guard let current = compiled.adapter else {
      throw SessionError("the session was made without an adapter; make one with it")
    }
    guard replacement.targets.sorted() == current.targets.sorted(),
      replacement.rank == current.rank, replacement.scale == current.scale
    else {
      throw SessionError(
        "a swapped adapter needs the session's targets, rank and scale: it adapts "
          + "\(replacement.targets.count) layers at rank \(replacement.rank), scale "
          + "\(replacement.scale); the session's \(current.targets.count) at rank \(current.rank), "
          + "scale \(current.scale)")
    }
    try wrapping {
      for executable in compiled.byShape.values {
        for (name, tensor) in replacement.tensors { try executable.set(name, tensor) }
      }
    }
    compiled.adapter = replacement
  }

  /// The factor on the adapter's branches in every graph of the session (1 by default; 0 decodes
  /// the base model bit for bit); changing it recompiles nothing.
  public var adapterScale: Float { compiled.adapterScale }

  /// Sets `adapterScale` for the graphs compiled so far and those compiled later.
  public func setAdapterScale(_ scale: Float) throws(SessionError) {
    try checkAdapterScale(scale)
    if scale != 1 && adapter == nil {
      throw SessionError("--adapter-scale: the session has no adapter to scale")
    }
    for executable in compiled.byShape.values {
      try Sessions.setAdapterScale(scale, of: executable)
    }
    compiled.adapterScale = scale
  }

  /// Gives the compiled graphs' workspaces back to the system (the KV caches stay).
  ///
  /// For a session that takes turns with other executables (RLHF's rollouts); see
  /// `Executable.releaseWorkspace()`.
  public func releaseWorkspace() {
    for executable in compiled.byShape.values { executable.releaseWorkspace() }
  }

  /// Decodes `model` (through `adapter`'s LoRA branches) for up to `context` tokens in all, with
  /// kernels planned for `target`.
  public init(model: LlamaModel, context: Int, adapter: PEFTAdapter?, target: Target = .host) {
    self.model = model
    self.context = context
    self.target = target
    hooks = nil
    compiled.adapter = adapter
  }

  /// A session whose graphs also capture and edit values at hook points.
  ///
  /// An edit applies when its position is computed (in the prompt's prefill or in the step that
  /// decodes it), and `generate` returns the captured values of every position. Values that run
  /// over the keys (attention's probabilities) are not formed under KV-cache decoding and are
  /// refused.
  public init(
    model: LlamaModel, context: Int, adapter: PEFTAdapter?, hooks: Hooks, target: Target = .host
  ) throws(SessionError) {
    self.model = model
    self.context = context
    self.target = target
    self.hooks =
      hooks.isEmpty
      ? nil
      : try BoundHooks(hooks, points: try model.hookPoints(), positions: context, sequence: nil)
    compiled.adapter = adapter
  }

  /// A compiled decoding graph for `tokens` new tokens, with the adapter applied (compiled once).
  ///
  /// With `last`, only the last new token's logits (`[batch, vocab]`); otherwise every new
  /// token's (`[batch, tokens, vocab]`).
  public func compile(tokens: Int, batch: Int = 1, last: Bool = true) throws(SessionError)
    -> Executable
  {
    let key = [batch, tokens, last ? 1 : 0]
    if let executable = compiled.byShape[key] { return executable }
    let executable = try compileNew(tokens: tokens, batch: batch, last: last)
    try Sessions.setAdapterScale(compiled.adapterScale, of: executable)
    compiled.byShape[key] = executable
    return executable
  }

  private func compileNew(tokens: Int, batch: Int, last: Bool) throws(SessionError) -> Executable {
    // The forward graph, adapted and fused, then turned into a decoding graph over KV caches.
    try compileAdapted(
      try wrapping { try model.trace(batch: batch, sequence: tokens) }, model: model,
      adapter: adapter, hooks: hooks?.passes ?? [], packedForms: forms, target: target
    ) { graph in try Decode(context: context, last: last).run(graph).compacted() }
  }

  /// Sets a decoding graph's inputs for `tokens` new tokens of one sequence written at cache slots
  /// `slot...`: positions count from `slot`, and each token sees the slots up to its own.
  public func setInputs(_ executable: Executable, tokens: [Int32], slot: Int) throws(RuntimeError) {
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

  /// Sets the hooks' inputs of a decoding graph for `count` new positions from `slot`.
  private func setHookInputs(_ executable: Executable, slot: Int, count: Int) throws(SessionError) {
    try hooks?.feed(executable, start: slot, count: count)
  }

  /// What a generation produced, with its speeds.
  public struct Result: Sendable {
    public var ids: [Int32]
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    /// How many one-token steps ran in `decodeSeconds` (the first token comes from the prefill).
    public var decodeSteps: Int
    /// Each captured value as `[1, positions, ...]` under its name, in graph order: the prompt's
    /// positions and every generated token's (the last one is run through the model for this).
    public var captures: [(name: String, tensor: HostTensor)] = []
    /// Each new token's log-probability under the model (log-softmax of its logits, before the
    /// sampler's temperature and penalties).
    public var logprobs: [Double] = []
  }

  /// Generates up to `maxTokens` tokens after `prompt`, calling `emit` with each new token; stops
  /// early when `stop` returns true for the tokens so far.
  public func generate(
    prompt: [Int32], maxTokens: Int, sampling: SamplingOptions,
    stop: ([Int32]) -> Bool, emit: (Int32) -> Void
  ) throws(SessionError) -> Result {
    let vocabulary = model.config.vocabularySize
    var sampler = Sampler(sampling)
    if let hooks, let covered = hooks.feeds.compactMap(\.positions).max(),
      covered > prompt.count + maxTokens
    {
      throw SessionError(
        "a patch or steering tensor has \(covered) positions; the prompt and --max-tokens "
          + "make \(prompt.count + maxTokens)")
    }
    let prefill = try compile(tokens: prompt.count)
    let step = try compile(tokens: 1)
    var captured: [[Float]] = hooks.map { [[Float]](repeating: [], count: $0.captured.count) } ?? []
    var capturedShapes: [[Int]] = []
    var steps = 0
    func run(_ executable: Executable, tokens: [Int32], slot: Int) throws(SessionError)
      -> UnsafeBufferPointer<Float>
    {
      try setHookInputs(executable, slot: slot, count: tokens.count)
      try wrapping {
        try setInputs(executable, tokens: tokens, slot: slot)
        try executable.execute()
      }
      if let hooks, !hooks.captured.isEmpty {
        let tensors = hooks.captures(of: executable)
        for (k, tensor) in tensors.enumerated() { captured[k] += tensor.floats() }
        if capturedShapes.isEmpty { capturedShapes = tensors.map(\.type.shape) }
      }
      return UnsafeBufferPointer(
        start: executable.outputAddress(0).assumingMemoryBound(to: Float.self), count: vocabulary)
    }
    var history = prompt
    var generated: [Int32] = []
    var logprobs: [Double] = []
    let start = DispatchTime.now().uptimeNanoseconds
    var logits = try run(prefill, tokens: prompt, slot: 0)
    try wrapping { try step.copyState(from: prefill) }
    let prefillDone = DispatchTime.now().uptimeNanoseconds
    while generated.count < maxTokens {
      let next = sampler.next(logits, history: history)
      logprobs.append(logProbability(of: next, in: logits))
      generated.append(next)
      history.append(next)
      emit(next)
      // The last token is not run through the model: nothing samples after it.
      if stop(generated) || history.count >= context || generated.count >= maxTokens { break }
      logits = try run(step, tokens: [next], slot: history.count - 1)
      steps += 1
    }
    // Unless its values are captured, so the captures cover every position.
    if !captured.isEmpty, let last = generated.last {
      _ = try run(step, tokens: [last], slot: history.count - 1)
      steps += 1
    }
    let end = DispatchTime.now().uptimeNanoseconds
    var result = Result(
      ids: generated, prefillSeconds: Double(prefillDone - start) / 1e9,
      decodeSeconds: Double(end - prefillDone) / 1e9, decodeSteps: steps, logprobs: logprobs)
    for (k, point) in (hooks?.captured ?? []).enumerated() {
      var shape = capturedShapes[k]
      shape[1] = captured[k].count / shape.dropFirst(2).reduce(shape[0], *)
      result.captures.append((point.name, HostTensor(shape: shape, floats: captured[k])))
    }
    return result
  }

  /// Greedy continuations of several prompts decoded together, one batch row each.
  ///
  /// Prompts of different lengths share one prefill: shorter rows are padded at the end and the
  /// padded cache slots stay masked for good; every row then takes one token per step at its own
  /// positions. A row ends when `stop` holds for its tokens or at `maxTokens[row]`; the batch ends
  /// when every row has.
  public func greedyBatch(prompts: [[Int32]], maxTokens: [Int], stop: ([Int32]) -> Bool)
    throws(SessionError) -> [[Int32]]
  {
    if hooks != nil {
      throw SessionError("hooks apply to one sequence at a time, not to batched decoding")
    }
    return try wrapping { try decodeGreedily(prompts: prompts, maxTokens: maxTokens, stop: stop) }
  }

  private func decodeGreedily(prompts: [[Int32]], maxTokens: [Int], stop: ([Int32]) -> Bool)
    throws -> [[Int32]]
  {
    let batch = prompts.count
    let lengths = prompts.map(\.count)
    let longest = lengths.max() ?? 1
    let steps = maxTokens.max() ?? 0
    guard batch > 0, lengths.allSatisfy({ $0 > 0 }), longest + steps <= context else {
      throw SessionError(
        "prompts of up to \(longest) tokens and \(steps) new ones do not fit \(context)")
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

/// Text generation on a decode session: a tokenized prompt in, text out, stopping at
/// end-of-sequence tokens or stop strings, streamed as it becomes certain.
public struct TextGenerator {
  public let session: DecodeSession
  public let tokenizer: Tokenizer
  /// Strings that end the generation; the text stops before the first one.
  public var stopStrings: [String]
  /// Tokens that end the generation (end-of-sequence and padding, unless ignored).
  public var endTokens: Set<Int32>

  public init(
    session: DecodeSession, tokenizer: Tokenizer, stopStrings: [String] = [],
    ignoreEndOfSequence: Bool = false
  ) {
    self.session = session
    self.tokenizer = tokenizer
    self.stopStrings = stopStrings
    endTokens = ignoreEndOfSequence ? [] : Set([tokenizer.endOfSequence, 0].compactMap { $0 })
  }

  /// What a generation produced: the new ids (the end token included when one ended it), the
  /// text (without the end token, cut before a stop string) and the speeds.
  public struct Output: Sendable {
    public var ids: [Int32]
    public var text: String
    public var prefillSeconds: Double
    public var decodeSeconds: Double
    /// One-token steps run in `decodeSeconds`.
    public var decodeSteps: Int
    /// The captured values (see `DecodeSession.Result.captures`).
    public var captures: [(name: String, tensor: HostTensor)]
    /// The log-probability of each of `ids` under the model.
    public var logprobs: [Double] = []
  }

  /// Generates up to `maxTokens` tokens after `prompt`, calling `stream` with each piece of text
  /// once it is certain: whole UTF-8 characters that can no longer become part of a stop string.
  public func generate(
    prompt: [Int32], maxTokens: Int, sampling: SamplingOptions,
    stream: ((String) -> Void)? = nil
  ) throws(SessionError) -> Output {
    try sampling.check()
    let holdBack = max(0, (stopStrings.map(\.count).max() ?? 0) - 1)
    var streamed: [Int32] = []
    var printed = 0
    func flush(final: Bool) {
      guard let stream else { return }
      var text = tokenizer.decode(streamed.filter { !endTokens.contains($0) })
      if let cut = stopStrings.compactMap({ text.range(of: $0)?.lowerBound }).min() {
        text = String(text[..<cut])
      } else if !final {
        if text.hasSuffix("\u{FFFD}") { text.removeLast() }
        text = String(text.dropLast(holdBack))
      }
      guard text.count > printed else { return }
      stream(String(text.dropFirst(printed)))
      printed = text.count
    }
    let result = try session.generate(
      prompt: prompt, maxTokens: maxTokens, sampling: sampling,
      stop: { generated in
        if let last = generated.last, endTokens.contains(last) { return true }
        let text = tokenizer.decode(generated)
        return stopStrings.contains { text.contains($0) }
      },
      emit: { token in
        guard stream != nil else { return }
        streamed.append(token)
        flush(final: false)
      })
    flush(final: true)
    var generated = result.ids
    if let last = generated.last, endTokens.contains(last) { generated.removeLast() }
    var text = tokenizer.decode(generated)
    for marker in stopStrings {
      if let range = text.range(of: marker) { text = String(text[..<range.lowerBound]) }
    }
    return Output(
      ids: result.ids, text: text, prefillSeconds: result.prefillSeconds,
      decodeSeconds: result.decodeSeconds, decodeSteps: result.decodeSteps,
      captures: result.captures, logprobs: result.logprobs)
  }
}

extension Tokenizer {
  /// The ids of a prompt: `text` as is, or with `chat` as a user message in the model's chat
  /// template (control tokens parsed); BOS first when the tokenizer metadata asks for it and the
  /// template did not write it.
  public func prompt(_ text: String, chat: Bool) throws(SessionError) -> [Int32] {
    var text = text
    if chat {
      do throws(ChatTemplateError) {
        guard let template = try chatFormat() else {
          throw ChatTemplateError(message: "the model has no chat template")
        }
        text = try template.render(
          [ChatMessage(role: "user", content: text)], addGenerationPrompt: true)
      } catch {
        throw SessionError("--chat: \(error.message)")
      }
    }
    var ids = encode(text, parseSpecial: chat)
    if addsBeginOfSequence, let bos = beginOfSequence, !(chat && ids.first == bos) {
      ids.insert(bos, at: 0)
    }
    return ids
  }
}

extension LlamaModel {
  /// Checks a prompt to generate after: at least one token, every id in the vocabulary (the
  /// message names `option`), and room left in the context for one more token.
  public func checkPrompt(_ ids: [Int32], vocabulary: Int, option: String) throws(SessionError) {
    if ids.isEmpty { throw SessionError("the prompt has no tokens") }
    if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
      throw SessionError("\(option): token \(bad) is out of range 0..<\(vocabulary)")
    }
    if ids.count >= contextLength {
      throw SessionError(
        "the prompt has \(ids.count) tokens; the model's context of \(contextLength) leaves no "
          + "room to generate (at most \(contextLength - 1) prompt tokens)")
    }
  }
}

extension SamplingOptions {
  /// Checks the options: temperature at least 0, top-k at least 1, top-p in (0, 1], a positive
  /// repetition penalty (the messages name the command's flags).
  public func check() throws(SessionError) {
    if !(temperature >= 0 && temperature.isFinite) {
      throw SessionError("--temperature must not be negative, got \(temperature)")
    }
    if let topK, topK < 1 { throw SessionError("--top-k must be at least 1, got \(topK)") }
    if let topP, !(topP > 0 && topP <= 1) {
      throw SessionError("--top-p must be in (0, 1], got \(topP)")
    }
    if !(repetitionPenalty > 0) {
      throw SessionError("--repeat-penalty must be positive, got \(repetitionPenalty)")
    }
  }
}
