/// An SSA value: a dense index into `Graph.types`.
///
/// Printed as `%12` for an instruction result, `%name` for a graph input and `@name` for a
/// declaration.
public struct Value: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var id: Int32

  public init(_ id: Int32) { self.id = id }
  public init(_ id: Int) { self.id = Int32(id) }

  public var index: Int { Int(id) }
  public var description: String { "v\(id)" }
  public static func < (lhs: Value, rhs: Value) -> Bool { lhs.id < rhs.id }
}

/// What an instruction reads: a value, or a scalar literal that takes the other operand's dtype.
public enum Operand: Hashable, Sendable {
  case value(Value)
  /// A literal such as `2.0`, broadcast to the other operands' shape and dtype.
  case scalar(Double)

  /// The value, or nil for a scalar literal.
  public var value: Value? {
    if case .value(let value) = self { return value }
    return nil
  }
}
