/// An op without its attributes: one case per `Op` case, and one row of the op table each.
///
/// `facts` is the op table: every fact the text format, the type rules' operand count and the
/// coverage tests need about an op kind comes from its one exhaustive `switch`. A new `Op` case
/// does not compile until `Op.kind` names its kind, and a new kind does not compile until it has
/// a row; the parser, `Op.mnemonic`, `Op.allMnemonics`, `Op.arity` and `Op.isFused` read the
/// table, and the round-trip and gradient coverage tests loop over it. (The C kernels' codes of
/// the function families live in Runtime's `KernelCodes.swift`: this target cannot see the C
/// header.)
public enum OpKind: Int, Hashable, Sendable, CaseIterable {
  case unary, binary, compare, select, reduce, matmul, reshape, transpose, broadcast, slice
  case concat, gather, scatterAdd, cast, iota, fill, softmax, logSoftmax, rope, dynamicSlice
  case dynamicUpdateSlice, rmsNorm, rmsNormGrad, swiglu, swigluGrad, crossEntropy
  case crossEntropyGrad, loraLinear, attention, attentionGrad, elementwise

  /// The kind's row of the op table (computed once per kind).
  public var facts: OpFacts { Self.rows[rawValue] }

  /// The rows by raw value (the cases' order), made once.
  private static let rows = allCases.map(\.row)

  /// The operand counts by raw value: type inference reads them for every instruction it makes,
  /// so they are kept apart from the rows (no copy of a row's strings and arrays per read).
  static let operandCounts = rows.map(\.operands)

  /// Whether `fuse` makes the kind, by raw value (read by the fuse pass per instruction).
  static let fusedKinds = rows.map(\.isFused)

  /// The mnemonics (a family's prefix) by raw value, read whenever an op is printed.
  static let mnemonicPrefixes = rows.map(\.mnemonic)

  /// The op table: one row per kind, no `default`.
  private var row: OpFacts {
    switch self {
    case .unary: .family(UnaryOp.self, operands: 1)
    case .binary: .family(BinaryOp.self, operands: 2)
    case .compare: .family(Comparison.self, operands: 2)
    case .select: .op("select", operands: 3)
    case .reduce:
      .family(
        ReduceOp.self, prefix: "reduce_", operands: 1, [.integers("axes"), .flag("keep_dims")])
    case .matmul: .op("matmul", operands: 2, [.flag("transpose_a"), .flag("transpose_b")])
    case .reshape: .op("reshape", operands: 1)
    case .transpose: .op("transpose", operands: 1, [.integers("perm")])
    case .broadcast: .op("broadcast", operands: 1)
    case .slice: .op("slice", operands: 1, [.integers("start"), .integers("end")])
    case .concat: .op("concat", operands: nil, [.integer("axis")])
    case .gather: .op("gather", operands: 2, [.integer("axis")])
    case .scatterAdd: .op("scatter_add", operands: 3, [.integer("axis")])
    case .cast: .op("cast", operands: 1)
    case .iota: .op("iota", operands: 0, [.integer("axis")])
    case .fill: .op("fill", operands: 0, [.number("value")])
    case .softmax: .op("softmax", operands: 1, [.integer("axis")])
    case .logSoftmax: .op("log_softmax", operands: 1, [.integer("axis")])
    case .rope: .op("rope", operands: 2, [.number("theta"), .flag("interleaved")])
    case .dynamicSlice: .op("dynamic_slice", operands: 2)
    case .dynamicUpdateSlice: .op("dynamic_update_slice", operands: 3)
    case .rmsNorm: .op("rms_norm", operands: 2, [.number("eps")], fused: true)
    case .rmsNormGrad: .op("rms_norm_grad", operands: 3, [.number("eps")], fused: true)
    case .swiglu: .op("swiglu", operands: 2, fused: true)
    case .swigluGrad: .op("swiglu_grad", operands: 3, results: 2, fused: true)
    case .crossEntropy: .op("cross_entropy", operands: 2, fused: true)
    case .crossEntropyGrad: .op("cross_entropy_grad", operands: 3, fused: true)
    case .loraLinear:
      .op(
        "lora_linear", operands: 4, results: 2, [.number("scale"), .flag("transpose_w")],
        fused: true)
    case .attention: .op("attention", operands: 4, [.number("scale")], fused: true)
    case .attentionGrad:
      .op("attention_grad", operands: 5, results: 3, [.number("scale")], fused: true)
    case .elementwise: .op("elementwise", operands: nil, [.text("expr")], fused: true)
    }
  }

  /// The mnemonics of the kind: one, or one per member of a family (`exp`, `reduce_sum`).
  public var mnemonics: [String] {
    let facts = facts
    guard let members = facts.members else { return [facts.mnemonic] }
    return members.map { facts.mnemonic + $0 }
  }

  /// Each mnemonic's kind and, for a family, its member's name (`reduce_sum`: `reduce`, `sum`).
  static let byMnemonic: [String: (kind: OpKind, member: String?)] = {
    var table: [String: (kind: OpKind, member: String?)] = [:]
    for kind in allCases {
      let facts = kind.facts
      guard let members = facts.members else {
        table[facts.mnemonic] = (kind, nil)
        continue
      }
      for member in members { table[facts.mnemonic + member] = (kind, member) }
    }
    return table
  }()
}

/// One row of the op table: how an op kind is spelled, what it takes and what it gives.
public struct OpFacts: Hashable, Sendable {
  /// The mnemonic, or for a family the prefix of its members' mnemonics (`reduce_`, or nothing).
  public var mnemonic: String
  /// A family's members in order (`UnaryOp`'s raw values), nil for a single op.
  public var members: [String]?
  /// The number of operands, or nil for "one or more" (`concat`, `elementwise`).
  public var operands: Int?
  /// The number of results.
  public var results: Int
  /// The attributes the text accepts, in the order they print; flags are optional.
  public var attributes: [AttributeSpec]
  /// Whether the `fuse` pass makes the op (it is still interpretable).
  public var isFused: Bool

  /// A row for one op.
  static func op(
    _ mnemonic: String, operands: Int?, results: Int = 1, _ attributes: [AttributeSpec] = [],
    fused: Bool = false
  ) -> OpFacts {
    OpFacts(
      mnemonic: mnemonic, members: nil, operands: operands, results: results,
      attributes: attributes, isFused: fused)
  }

  /// A row for a family of functions spelled `prefix + rawValue`.
  static func family<Function: CaseIterable & RawRepresentable>(
    _: Function.Type, prefix: String = "", operands: Int, _ attributes: [AttributeSpec] = []
  ) -> OpFacts where Function.RawValue == String {
    OpFacts(
      mnemonic: prefix, members: Function.allCases.map(\.rawValue), operands: operands, results: 1,
      attributes: attributes, isFused: false)
  }
}

/// An attribute an op accepts: its name in the text and what its value must be.
public struct AttributeSpec: Hashable, Sendable {
  /// What an attribute's value must be.
  public enum Kind: Hashable, Sendable {
    /// No value (`{transpose_b}`); absent means false, and false is not printed.
    case flag
    /// `{axis=1}`.
    case integer
    /// `{axes=[0,1]}`.
    case integers
    /// `{theta=10000.0}`; an integer is accepted.
    case number
    /// A quoted string: `{expr="add($0, $1)"}`.
    case text
  }

  public var name: String
  public var kind: Kind

  static func flag(_ name: String) -> AttributeSpec { AttributeSpec(name: name, kind: .flag) }
  static func integer(_ name: String) -> AttributeSpec { AttributeSpec(name: name, kind: .integer) }
  static func integers(_ name: String) -> AttributeSpec {
    AttributeSpec(name: name, kind: .integers)
  }
  static func number(_ name: String) -> AttributeSpec { AttributeSpec(name: name, kind: .number) }
  static func text(_ name: String) -> AttributeSpec { AttributeSpec(name: name, kind: .text) }
}

extension Op {
  /// The op's row in the op table.
  public var kind: OpKind {
    switch self {
    case .unary: .unary
    case .binary: .binary
    case .compare: .compare
    case .select: .select
    case .reduce: .reduce
    case .matmul: .matmul
    case .reshape: .reshape
    case .transpose: .transpose
    case .broadcast: .broadcast
    case .slice: .slice
    case .concat: .concat
    case .gather: .gather
    case .scatterAdd: .scatterAdd
    case .cast: .cast
    case .iota: .iota
    case .fill: .fill
    case .softmax: .softmax
    case .logSoftmax: .logSoftmax
    case .rope: .rope
    case .dynamicSlice: .dynamicSlice
    case .dynamicUpdateSlice: .dynamicUpdateSlice
    case .rmsNorm: .rmsNorm
    case .rmsNormGrad: .rmsNormGrad
    case .swiglu: .swiglu
    case .swigluGrad: .swigluGrad
    case .crossEntropy: .crossEntropy
    case .crossEntropyGrad: .crossEntropyGrad
    case .loraLinear: .loraLinear
    case .attention: .attention
    case .attentionGrad: .attentionGrad
    case .elementwise: .elementwise
    }
  }

  /// The family member the op names (`exp` of `.unary(.exp)`, `sum` of a `reduce_sum`), nil for
  /// an op that is not in a family.
  var member: String? {
    switch self {
    case .unary(let function): function.rawValue
    case .binary(let function): function.rawValue
    case .compare(let comparison): comparison.rawValue
    case .reduce(let function, _, _): function.rawValue
    case .select, .matmul, .reshape, .transpose, .broadcast, .slice, .concat, .gather, .scatterAdd,
      .cast, .iota, .fill, .softmax, .logSoftmax, .rope, .dynamicSlice, .dynamicUpdateSlice,
      .rmsNorm, .rmsNormGrad, .swiglu, .swigluGrad, .crossEntropy, .crossEntropyGrad, .loraLinear,
      .attention, .attentionGrad, .elementwise:
      nil
    }
  }

  /// Builds the op of a kind from its family member, its attributes (already checked against the
  /// kind's row) and its annotated result types.
  static func make(
    _ kind: OpKind, member: String?, mnemonic: String, attributes: OpAttributes,
    resultTypes: [TensorType]
  ) throws(AttributeError) -> Op {
    func function<Function: RawRepresentable>(_: Function.Type) throws(AttributeError) -> Function
    where Function.RawValue == String {
      guard let member, let function = Function(rawValue: member) else {
        throw AttributeError(message: "unknown op '\(mnemonic)'")
      }
      return function
    }
    func single() throws(AttributeError) -> TensorType {
      guard resultTypes.count == 1, let type = resultTypes.first else {
        throw AttributeError(
          message: "\(mnemonic): expected 1 result type, got \(resultTypes.count)")
      }
      return type
    }
    let a = attributes
    switch kind {
    case .unary: return .unary(try function(UnaryOp.self))
    case .binary: return .binary(try function(BinaryOp.self))
    case .compare: return .compare(try function(Comparison.self))
    case .select: return .select
    case .reduce:
      return .reduce(
        try function(ReduceOp.self), axes: try a.integers("axes"), keepDims: a.flag("keep_dims"))
    case .matmul:
      return .matmul(transposeA: a.flag("transpose_a"), transposeB: a.flag("transpose_b"))
    case .reshape: return .reshape(to: try single().shape)
    case .transpose: return .transpose(permutation: try a.integers("perm"))
    case .broadcast: return .broadcast(to: try single().shape)
    case .slice: return .slice(start: try a.integers("start"), end: try a.integers("end"))
    case .concat: return .concat(axis: try a.integer("axis"))
    case .gather: return .gather(axis: try a.integer("axis"))
    case .scatterAdd: return .scatterAdd(axis: try a.integer("axis"))
    case .cast: return .cast(to: try single().dtype)
    case .iota: return .iota(axis: try a.integer("axis"), type: try single())
    case .fill: return .fill(value: try a.number("value"), type: try single())
    case .softmax: return .softmax(axis: try a.integer("axis"))
    case .logSoftmax: return .logSoftmax(axis: try a.integer("axis"))
    case .rope: return .rope(theta: try a.number("theta"), interleaved: a.flag("interleaved"))
    case .dynamicSlice: return .dynamicSlice(sizes: try single().shape)
    case .dynamicUpdateSlice: return .dynamicUpdateSlice
    case .rmsNorm: return .rmsNorm(epsilon: try a.number("eps"))
    case .rmsNormGrad: return .rmsNormGrad(epsilon: try a.number("eps"))
    case .swiglu: return .swiglu
    case .swigluGrad: return .swigluGrad
    case .crossEntropy: return .crossEntropy
    case .crossEntropyGrad: return .crossEntropyGrad
    case .loraLinear:
      return .loraLinear(scale: try a.number("scale"), transposeW: a.flag("transpose_w"))
    case .attention: return .attention(scale: try a.number("scale"))
    case .attentionGrad: return .attentionGrad(scale: try a.number("scale"))
    case .elementwise: return .elementwise(try ElementwiseExpression(parsing: try a.text("expr")))
    }
  }
}

/// An op's attribute values after `AttributeReader.read` checked them against the op's row: each
/// present attribute has the kind the row states (numbers as `.number`).
struct OpAttributes {
  let mnemonic: String
  var values: [String: AttributeValue]

  /// An attribute the row declares but the reader did not keep: a mismatch between a row and
  /// `Op.make`, reported like a missing attribute rather than trapping.
  private func missing(_ key: String) -> AttributeError {
    AttributeError(message: "\(mnemonic): missing attribute '\(key)'")
  }

  func flag(_ key: String) -> Bool { values[key] == .flag }

  func integer(_ key: String) throws(AttributeError) -> Int {
    guard case .integer(let value) = values[key] else { throw missing(key) }
    return value
  }

  func integers(_ key: String) throws(AttributeError) -> [Int] {
    guard case .integers(let value) = values[key] else { throw missing(key) }
    return value
  }

  func number(_ key: String) throws(AttributeError) -> Double {
    guard case .number(let value) = values[key] else { throw missing(key) }
    return value
  }

  func text(_ key: String) throws(AttributeError) -> String {
    guard case .text(let value) = values[key] else { throw missing(key) }
    return value
  }
}
