import IR

/// Inserts a LoRA branch at every selected matmul: `y = xW` becomes
/// `y = xW + s * (xA)B` with `A: f32[in, rank]` (kaiming-uniform, a = sqrt 5) and
/// `B: f32[rank, out]` (zeros), evaluated `(xA)B` so `A·B` is never formed.
///
/// `s = alpha / rank`, or `alpha / sqrt(rank)` with `rslora=true`. Parameters are named after the
/// target (`layers.3.attn.q.lora_a`, `.lora_b`); the base product becomes `<name>.base` and the
/// sum keeps the target's name. Each target's A is seeded `seed + k` for the k-th target.
public struct Lora: Pass {
  public static let mnemonic = "lora"
  public static let optionNames = ["rank", "alpha", "targets", "rslora", "seed"]

  public var rank: Int
  public var alpha: Double
  public var targets: NameSelector
  public var rsLoRA: Bool
  public var seed: UInt64

  public init(options: PassOptions) throws(PassError) {
    rank = try options.integer("rank", default: 8, in: 1...65536)
    alpha = try options.number("alpha", default: Double(rank))
    targets = try options.selector("targets", default: "*")
    rsLoRA = try options.flag("rslora", default: false)
    seed = UInt64(try options.integer("seed", default: 0, in: 0...Int.max))
  }

  public init(
    rank: Int, alpha: Double, targets: NameSelector, rsLoRA: Bool = false, seed: UInt64 = 0
  ) {
    self.rank = rank
    self.alpha = alpha
    self.targets = targets
    self.rsLoRA = rsLoRA
    self.seed = seed
  }

  /// The factor the branch is scaled by.
  public var scale: Double { rsLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var emitter = Emitter(graph)
    emitter.graph.body = []
    var matched = 0
    for instruction in graph.body {
      guard case .matmul(let transposeA, let transposeB) = instruction.op,
        let name = instruction.name, targets.matches(name),
        case .value(let x) = instruction.operands[0]
      else {
        emitter.graph.body.append(instruction)
        continue
      }
      let weight = graph.type(of: instruction.operands[1].value ?? x)
      guard !transposeA, weight.rank == 2 else {
        throw PassError(
          message: "lora: '\(name)' is not a linear layer (it needs x [..., in] times a 2-D weight)"
        )
      }
      let inputs = graph.type(of: x).shape.last ?? 0
      let outputs = transposeB ? weight.shape[0] : weight.shape[1]
      let a = emitter.graph.newValue(TensorType(.f32, [inputs, rank]))
      let b = emitter.graph.newValue(TensorType(.f32, [rank, outputs]))
      for declaration in emitter.graph.declarations
      where declaration.name == name + ".lora_a" || declaration.name == name + ".lora_b" {
        throw PassError(message: "lora: '\(declaration.name)' already exists")
      }
      emitter.graph.declarations += [
        Declaration(
          kind: .parameter, name: name + ".lora_a", value: a,
          initializer: .kaimingUniformDefault, seed: seed &+ UInt64(matched)),
        Declaration(kind: .parameter, name: name + ".lora_b", value: b, initializer: .zeros),
      ]
      var base = instruction
      base.results = [emitter.graph.newValue(graph.type(of: instruction.results[0]))]
      base.name = name + ".base"
      emitter.graph.body.append(base)
      let xa = try emitter.emit(
        .matmul(transposeA: false, transposeB: false), [.value(x), .value(a)])
      let xab = try emitter.emit(
        .matmul(transposeA: false, transposeB: false), [.value(xa), .value(b)])
      let scaled = try emitter.binary(.mul, xab, scale)
      // The sum keeps the original result, so later uses need no renaming.
      emitter.graph.body.append(
        Instruction(
          results: instruction.results, op: .binary(.add),
          operands: [.value(base.results[0]), .value(scaled)], name: name))
      matched += 1
    }
    if matched == 0 {
      throw PassError(message: "lora: no matmul named like '\(targets.pattern)'")
    }
    return emitter.graph
  }
}
