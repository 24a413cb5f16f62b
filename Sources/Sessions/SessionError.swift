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

/// The checks of numeric settings, with messages that name the command's flags; the training
/// request (before anything is read) and the schedule (before a run) share them.
enum SettingChecks {
  /// `NAME must be at least MINIMUM, got V` for the first value given that is below its minimum.
  static func atLeast(_ minimum: Int, _ values: [(name: String, value: Int?)]) throws(SessionError)
  {
    for (name, value) in values {
      if let value, value < minimum {
        throw SessionError("\(name) must be at least \(minimum), got \(value)")
      }
    }
  }

  /// `NAME must be positive, got V` unless the value is finite and above 0.
  static func positive(_ name: String, _ value: Double?) throws(SessionError) {
    if let value, !(value > 0 && value.isFinite) {
      throw SessionError("\(name) must be positive, got \(value)")
    }
  }

  /// `NAME must be at least 0, got V` unless the value is finite and not negative.
  static func notNegative(_ name: String, _ value: Double?) throws(SessionError) {
    if let value, !(value >= 0 && value.isFinite) {
      throw SessionError("\(name) must be at least 0, got \(value)")
    }
  }
}
