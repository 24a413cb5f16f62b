import Foundation
import IR
import Models
import Passes
import Runtime

/// What a run reads and changes at the model's hook points (`lorac names` lists them): the
/// values to capture (globs) and the edits, applied in order, each where its value is computed.
public struct Hooks: Sendable {
  /// Globs of the values to capture; each must match at least one value.
  public var captures: [String]
  public var edits: [HookEdit]

  public init(captures: [String] = [], edits: [HookEdit] = []) {
    self.captures = captures
    self.edits = edits
  }

  public var isEmpty: Bool { captures.isEmpty && edits.isEmpty }
}

/// A change to one named value (or, for ablation, every value a glob matches).
public struct HookEdit: Sendable {
  public enum Action: Sendable {
    /// Replaces the value by the tensor: the value's shape per token (every position), or
    /// `[n, ...]` for positions `0..<n` (later positions are left alone).
    case patch(HostTensor)
    /// Adds `scale` times the tensor (shaped as for `patch`): a steering vector.
    case add(HostTensor, scale: Float)
    /// Zeroes the value at every position.
    case ablate
  }

  /// The value's name (a glob for `ablate`).
  public var name: String
  public var action: Action

  public init(name: String, action: Action) {
    self.name = name
    self.action = action
  }

  /// The command-line flag this edit comes from, for messages.
  var flag: String {
    switch action {
    case .patch: "--patch"
    case .add: "--add"
    case .ablate: "--ablate"
    }
  }
}

/// Hooks checked against a model's hook points: the passes that make them, the tensors to feed
/// the edits' inputs for any run of positions, and the captured outputs in `[batch, seq, ...]`.
struct BoundHooks {
  /// An edit with an input: the point it changes and its values as `[n, per-token...]` rows.
  struct Feed {
    var point: HookPoint
    var input: String
    var mask: String?
    var rows: [Float]
    /// Positions the rows cover (`nil`: the tensor is per token, so every position).
    var positions: Int?
    var rowSize: Int
    var scale: Float
  }

  let hooks: Hooks
  /// The hook passes, to run after `lora` and before `fuse`.
  let passes: [any Pass]
  let feeds: [Feed]
  /// Each captured value's point, in output order (after the logits).
  let captured: [HookPoint]

  /// Checks `hooks` against `points` and makes the passes.
  ///
  /// Every capture glob and edit name must name a value, every tensor have the value's shape per
  /// token or `[n, ...]` rows with `n <= positions`. `sequence` is the length of a run for values
  /// whose shape depends on it (attention's keys); nil when decoding with a KV cache, where such
  /// values are not formed and so refused.
  init(_ hooks: Hooks, points: [HookPoint], positions: Int, sequence: Int?) throws(SessionError) {
    self.hooks = hooks
    let names = points.map(\.name)
    func matching(_ pattern: String, flag: String) throws(SessionError) -> [HookPoint] {
      let selector: NameSelector
      do { selector = try NameSelector(parsing: pattern) } catch {
        throw SessionError("\(flag) \(pattern): \(error.message)")
      }
      let matched = points.filter { selector.matches($0.name) }
      if matched.isEmpty {
        let nearest = NameSelector.nearest(to: pattern, among: names).joined(separator: ", ")
        throw SessionError(
          "\(flag) \(pattern): no value of the model has that name (nearest: \(nearest); "
            + "`lorac names MODEL` lists them all)")
      }
      if sequence == nil, let keyed = matched.first(where: { $0.shape.contains(nil) }) {
        throw SessionError(
          "\(flag) \(keyed.name): its shape \(keyed.typeText) runs over the keys, which KV-cache "
            + "decoding does not form; capture or change it with `lorac logits`")
      }
      return matched
    }
    var passes: [any Pass] = []
    var feeds: [Feed] = []
    for edit in hooks.edits {
      let matched = try matching(edit.name, flag: edit.flag)
      let selector = NameSelector(stringLiteral: edit.name)
      switch edit.action {
      case .ablate:
        // The hook points the glob matched, by exact name: the graph also names values that
        // are not hook points (`*.base` of a LoRA target), which a glob must not reach.
        passes += matched.map { Ablate(names: NameSelector(stringLiteral: $0.name)) }
      case .patch(let tensor), .add(let tensor, _):
        let input = edit.name + (edit.flag == "--add" ? ".add" : ".patch")
        if feeds.contains(where: { $0.input == input }) {
          throw SessionError("\(edit.flag) \(edit.name) is given twice; give each value one")
        }
        guard matched.count == 1, matched[0].name == edit.name else {
          throw SessionError(
            "\(edit.flag) \(edit.name): name one value, not a pattern (it matches "
              + "\(matched.count): \(matched.prefix(3).map(\.name).joined(separator: ", ")))")
        }
        let point = matched[0]
        let perToken = point.shape.map { $0 ?? sequence ?? 0 }
        let (rows, rowsCovered) = try BoundHooks.rows(
          tensor, perToken: perToken, positions: positions, edit: edit, point: point)
        if case .add(_, let scale) = edit.action {
          guard scale.isFinite else {
            throw SessionError("--add \(edit.name): the scale must be finite, got \(scale)")
          }
          passes.append(Add(names: selector))
          feeds.append(
            Feed(
              point: point, input: input, mask: nil, rows: rows,
              positions: rowsCovered, rowSize: perToken.reduce(1, *), scale: scale))
        } else {
          passes.append(Patch(names: selector))
          feeds.append(
            Feed(
              point: point, input: input, mask: input + "_mask",
              rows: rows, positions: rowsCovered, rowSize: perToken.reduce(1, *), scale: 1))
        }
      }
    }
    var captured: [HookPoint] = []
    var seen = Set<String>()
    for pattern in hooks.captures {
      for point in try matching(pattern, flag: "--capture") where seen.insert(point.name).inserted {
        captured.append(point)
      }
    }
    if !captured.isEmpty {
      // One pass, so a value two globs match is returned once; in graph order.
      passes.append(Capture(names: captured.map { NameSelector(stringLiteral: $0.name) }))
      captured = points.filter { seen.contains($0.name) }
    }
    self.passes = passes
    self.feeds = feeds
    self.captured = captured
  }

  /// The tensor's values as rows of one position each, and how many positions they cover (nil
  /// for a per-token tensor); a shape that is neither is an error with both shapes.
  private static func rows(
    _ tensor: HostTensor, perToken: [Int], positions: Int, edit: HookEdit, point: HookPoint
  ) throws(SessionError) -> ([Float], Int?) {
    let shape = tensor.type.shape
    let expected = "f32[\(perToken.map(String.init).joined(separator: ", "))]"
    let given = "\(tensor.type.dtype)[\(shape.map(String.init).joined(separator: ", "))]"
    guard tensor.type.dtype == .f32 else {
      throw SessionError(
        "\(edit.flag) \(edit.name): the tensor is \(given); expected \(expected) or "
          + "f32[positions, \(expected.dropFirst(4))")
    }
    if shape == perToken { return (tensor.floats(), nil) }
    guard shape.count == perToken.count + 1, Array(shape.dropFirst()) == perToken, shape[0] >= 1
    else {
      throw SessionError(
        "\(edit.flag) \(edit.name): the tensor is \(given); \(point.name) is \(expected) per "
          + "token, so expected \(expected) or f32[positions, \(expected.dropFirst(4))")
    }
    guard shape[0] <= positions else {
      throw SessionError(
        "\(edit.flag) \(edit.name): the tensor has \(shape[0]) positions; the run computes "
          + "\(positions)")
    }
    return (tensor.floats(), shape[0])
  }

  /// Sets every edit's inputs of `executable` for a run of `count` positions from `start` in each
  /// of `batch` rows.
  func feed(_ executable: Executable, start: Int, count: Int) throws(SessionError) {
    for feed in feeds {
      let graphInput = executable.graph.inputs.first { $0.name == feed.input }
      guard let graphInput else {
        throw SessionError("internal: the graph has no input '\(feed.input)'")
      }
      let type = executable.graph.type(of: graphInput.value)
      var values = [Float](repeating: 0, count: type.elementCount)
      var mask = [Int32](repeating: 0, count: feed.mask == nil ? 0 : type.elementCount)
      let layout = PositionLayout(type.shape, positionAxis: feed.point.positionAxis)
      for batchRow in 0..<layout.batch {
        for t in 0..<count {
          let position = start + t
          let row: Int
          if let covered = feed.positions {
            guard position < covered else { continue }
            row = position
          } else {
            row = 0
          }
          layout.forEachElement(batch: batchRow, position: t) { k, index in
            values[index] = feed.scale * feed.rows[row * feed.rowSize + k]
            if !mask.isEmpty { mask[index] = 1 }
          }
        }
      }
      try wrapping {
        try executable.set(feed.input, HostTensor(shape: type.shape, floats: values))
        if let name = feed.mask {
          try executable.set(name, HostTensor(shape: type.shape, ints: mask))
        }
      }
    }
  }

  /// The captured outputs of a run, each as `[batch, count, ...]`.
  ///
  /// They are outputs 1... of `executable` (output 0 is the logits).
  func captures(of executable: Executable) -> [HostTensor] {
    captured.enumerated().map { offset, point in
      let output = executable.output(offset + 1)
      let layout = PositionLayout(output.type.shape, positionAxis: point.positionAxis)
      let source = output.floats()
      var moved = [Float](repeating: 0, count: source.count)
      var next = 0
      for batchRow in 0..<layout.batch {
        for t in 0..<layout.positions {
          layout.forEachElement(batch: batchRow, position: t) { _, index in
            moved[next] = source[index]
            next += 1
          }
        }
      }
      return HostTensor(shape: layout.canonicalShape, floats: moved)
    }
  }
}

/// Where the elements of one batch row and position lie in a row-major tensor whose positions
/// run along `positionAxis`: the canonical order is `[batch, position, rest...]`.
struct PositionLayout {
  let shape: [Int]
  let positionAxis: Int
  var batch: Int { shape[0] }
  var positions: Int { shape[positionAxis] }
  var canonicalShape: [Int] {
    var result = shape
    result.remove(at: positionAxis)
    result.insert(shape[positionAxis], at: 1)
    return result
  }

  init(_ shape: [Int], positionAxis: Int) {
    self.shape = shape
    self.positionAxis = positionAxis
  }

  /// Calls `body(k, index)` for the k-th element (row-major over the other axes) of batch row
  /// `batch` at position `position`, with its flat index in the tensor.
  func forEachElement(batch: Int, position: Int, _ body: (Int, Int) -> Void) {
    // Axes 1..<positionAxis are "outer", the rest "inner": index = ((b*O + o)*P + p)*I + i.
    let outer = shape[1..<positionAxis].reduce(1, *)
    let inner = shape[(positionAxis + 1)...].reduce(1, *)
    var k = 0
    for o in 0..<outer {
      let base = ((batch * outer + o) * positions + position) * inner
      for i in 0..<inner {
        body(k, base + i)
        k += 1
      }
    }
  }
}
