import IR

/// Turns every parameter not selected as trainable into a constant of the same name and type
/// (its data is then bound by name, like a weight's).
public struct Freeze: Pass {
  public static let mnemonic = "freeze"
  public static let optionNames = ["trainable"]

  public var trainable: NameSelector

  public init(options: PassOptions) throws(PassError) {
    trainable = try options.selector("trainable", default: "*.lora_{a,b}")
  }

  public init(trainable: NameSelector = "*.lora_{a,b}") { self.trainable = trainable }

  public func run(_ graph: Graph) throws(PassError) -> Graph {
    var result = graph
    for index in result.declarations.indices
    where result.declarations[index].kind == .parameter
      && !trainable.matches(result.declarations[index].name)
    {
      result.declarations[index].kind = .constant
      result.declarations[index].initializer = nil
      result.declarations[index].seed = nil
    }
    return result
  }
}
