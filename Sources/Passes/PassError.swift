import IR

/// A pass or pipeline failure: bad pipeline text, bad options, a pattern that matches nothing, an
/// op without a gradient rule, or a pass that broke the verifier.
public struct PassError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}
