import IR
import Runtime

extension DecodeSession {
  /// Samples `generated` tokens after `prefix` for `batch` rows decoded together.
  ///
  /// One batched prefill over the KV caches, then one-token steps, each row's token drawn by
  /// `sampler` (in row order, from one stream), never stopping at end-of-sequence. Returns the
  /// sampled tokens of each row, the prefix excluded.
  func sample(
    prefix: [Int32], batch: Int, generated: Int, sampler: inout RolloutSampler
  ) throws(SessionError) -> [[Int32]] {
    let vocabulary = model.config.vocabularySize
    return try sample(prefix: prefix, batch: batch, generated: generated) { _, logits in
      sampler.next(logits, count: vocabulary)
    }
  }

  /// Samples as above with one sampler per row (`samplers[row]` draws row `row`'s tokens), so a
  /// row's tokens do not depend on the other rows sampled with it.
  func sample(
    prefix: [Int32], generated: Int, samplers: inout [RolloutSampler]
  ) throws(SessionError) -> [[Int32]] {
    let vocabulary = model.config.vocabularySize
    return try sample(prefix: prefix, batch: samplers.count, generated: generated) { row, logits in
      samplers[row].next(logits, count: vocabulary)
    }
  }

  /// The batched decoding of both `sample`s; `draw(row, logits)` picks row `row`'s next token.
  private func sample(
    prefix: [Int32], batch: Int, generated: Int,
    draw: (Int, UnsafePointer<Float>) -> Int32
  ) throws(SessionError) -> [[Int32]] {
    let (length, vocabulary) = (prefix.count, model.config.vocabularySize)
    guard length + generated <= context, length > 0, generated > 0, batch > 0 else {
      throw SessionError(
        "sampling \(generated) tokens after \(length) for \(batch) rows does not fit a context "
          + "of \(context)")
    }
    var rows = [[Int32]](repeating: [], count: batch)
    try wrapping {
      let prefill = try compile(tokens: length, batch: batch, last: true)
      var mask = [Int32](repeating: 0, count: batch * length * context)
      for row in 0..<batch {
        for t in 0..<length { for s in 0...t { mask[(row * length + t) * context + s] = 1 } }
      }
      try prefill.set(
        "tokens",
        HostTensor(shape: [batch, length], ints: Array((0..<batch).map { _ in prefix }.joined())))
      try prefill.set(
        "positions",
        HostTensor(
          shape: [batch, length],
          ints: Array((0..<batch).map { _ in (0..<length).map { Int32($0) } }.joined())))
      try prefill.set("cache_start", HostTensor(shape: [4], ints: [0, 0, 0, 0]))
      try prefill.set("key_mask", HostTensor(shape: [batch, length, context], ints: mask))
      try prefill.execute()
      var logits = prefill.outputAddress(0).assumingMemoryBound(to: Float.self)
      var next = (0..<batch).map { draw($0, logits + $0 * vocabulary) }
      guard generated > 1 else {
        for row in 0..<batch { rows[row] = [next[row]] }
        return
      }
      let step = try compile(tokens: 1, batch: batch)
      try step.copyState(from: prefill)
      var stepMask = [Int32](repeating: 0, count: batch * context)
      for k in 0..<generated {
        for row in 0..<batch { rows[row].append(next[row]) }
        if k == generated - 1 { break }
        let slot = length + k
        for row in 0..<batch { for s in 0...slot { stepMask[row * context + s] = 1 } }
        try step.set("tokens", HostTensor(shape: [batch, 1], ints: next))
        try step.set(
          "positions",
          HostTensor(shape: [batch, 1], ints: [Int32](repeating: Int32(slot), count: batch)))
        try step.set("cache_start", HostTensor(shape: [4], ints: [0, 0, Int32(slot), 0]))
        try step.set("key_mask", HostTensor(shape: [batch, 1, context], ints: stepMask))
        try step.execute()
        logits = step.outputAddress(0).assumingMemoryBound(to: Float.self)
        next = (0..<batch).map { draw($0, logits + $0 * vocabulary) }
      }
    }
    return rows
  }
}
