import Synchronization

/// A failure of a session: one line that names the file, line, flag or tensor at fault.
///
/// The command line prints `message` as `error: message` and exits with status 1, so the text is
/// the one docs/errors.md lists.
public struct SessionError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String

  public init(_ message: String) { self.message = message }

  /// Wraps an error of a lower layer, keeping its text.
  public init(_ error: any Error) {
    if let error = error as? SessionError {
      self = error
    } else {
      message = String(describing: error)
    }
  }

  public var description: String { message }
}

/// Runs `body`, turning any error it throws into a `SessionError` with the same text.
public func wrapping<T>(_ body: () throws -> T) throws(SessionError) -> T {
  do {
    return try body()
  } catch {
    throw SessionError(error)
  }
}

/// A request to stop, set by the caller (a signal handler, a UI, another task) and read by a
/// session between steps.
///
/// A training session that sees it saves a checkpoint after the step under way and returns
/// `.cancelled`; nothing is lost.
public final class Cancellation: Sendable {
  private let requests = Atomic<Int>(0)

  public init() {}

  /// Asks the session to stop; returns how many times stopping has been asked for so far.
  @discardableResult
  public func cancel() -> Int { requests.add(1, ordering: .relaxed).newValue }

  /// Whether `cancel()` has been called.
  public var isCancelled: Bool { requests.load(ordering: .relaxed) > 0 }
}
