/// A graph the runtime cannot compile, a bad binding, or a failure while running.
public struct RuntimeError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(message: String) { self.message = message }
  public var description: String { message }
}
