import IR
import Models

/// A value of the model that hooks can read or change: its dotted name (the IR's), its element
/// type and its shape for one token, where `nil` marks a dimension as long as the sequence
/// (attention's keys).
public struct HookPoint: Sendable, Hashable {
  public var name: String
  public var dtype: DType
  public var shape: [Int?]
  /// The axis of the traced value (`[batch, ...]`) that runs over positions: 1 for most values,
  /// 2 for attention's `[batch, heads, queries, keys]`.
  public var positionAxis: Int

  /// `f32[576]`, `f32[9, seq]`.
  public var typeText: String {
    "\(dtype)[" + shape.map { $0.map(String.init) ?? "seq" }.joined(separator: ", ") + "]"
  }
}

extension LlamaModel {
  /// Every named value of the forward graph, in graph order, with its shape for one token.
  ///
  /// The graph is traced for one sequence of 2 and of 3 tokens: the dimensions that follow the
  /// length are the token's position (the first, dropped) and the keys a token attends to.
  public func hookPoints() throws(SessionError) -> [HookPoint] {
    let (short, long) = try wrapping {
      (try trace(batch: 1, sequence: 2), try trace(batch: 1, sequence: 3))
    }
    func named(_ graph: Graph) -> [(name: String, type: TensorType)] {
      graph.body.compactMap { instruction in
        instruction.name.map { ($0, graph.type(of: instruction.results[0])) }
      }
    }
    var points: [HookPoint] = []
    var seen = Set<String>()
    for ((name, a), (_, b)) in zip(named(short), named(long)) where seen.insert(name).inserted {
      var shape: [Int?] = []
      var positionAxis: Int?
      // The batch dimension first; then the position; then what remains, by token.
      for (axis, (x, y)) in zip(a.shape, b.shape).enumerated().dropFirst() {
        if x == y {
          shape.append(x)
        } else if positionAxis != nil {
          shape.append(nil)
        } else {
          positionAxis = axis
        }
      }
      guard let positionAxis else { continue }
      points.append(
        HookPoint(name: name, dtype: a.dtype, shape: shape, positionAxis: positionAxis))
    }
    return points
  }
}
