import Foundation

/// The output of one run of the built `lorac` executable.
public struct RunResult: Sendable {
  public var status: Int32
  public var stdout: String
  public var stderr: String
}

/// The built `lorac` executable, which SwiftPM puts beside the test bundle.
public func loracExecutable() -> URL { productExecutable("lorac") }

/// A built executable product of the package (`lorac`, the examples), which SwiftPM puts beside
/// the test bundle.
public func productExecutable(_ name: String) -> URL {
  var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
  if let first = CommandLine.arguments.first {
    candidates.append(URL(fileURLWithPath: first).deletingLastPathComponent())
  }
  for folder in candidates
  where FileManager.default.isExecutableFile(atPath: folder.appendingPathComponent(name).path) {
    return folder.appendingPathComponent(name)
  }
  return Bundle.main.bundleURL.appendingPathComponent(name)
}

/// Runs `lorac` with arguments and optional standard input, and waits for it.
public func lorac(_ arguments: [String], stdin: String? = nil) throws -> RunResult {
  try run(loracExecutable(), arguments, stdin: stdin)
}

/// Runs an executable with arguments, optional standard input and extra environment variables,
/// and waits for it.
public func run(
  _ executable: URL, _ arguments: [String], stdin: String? = nil,
  environment: [String: String] = [:]
) throws -> RunResult {
  let process = Process()
  process.executableURL = executable
  process.arguments = arguments
  if !environment.isEmpty {
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  }
  let output = Pipe()
  let errors = Pipe()
  let input = Pipe()
  process.standardOutput = output
  process.standardError = errors
  process.standardInput = input
  try process.run()
  // Drain stderr on another thread while stdout is read here: a child that fills one pipe while
  // the other is being waited on would block forever.
  let errorReader = ErrorReader(errors.fileHandleForReading)
  let thread = Thread { errorReader.read() }
  thread.start()
  if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
  try input.fileHandleForWriting.close()
  let out = output.fileHandleForReading.readDataToEndOfFile()
  let err = errorReader.wait()
  process.waitUntilExit()
  return RunResult(
    status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
    stderr: String(decoding: err, as: UTF8.self))
}

/// Reads a pipe to its end on another thread.
private final class ErrorReader: @unchecked Sendable {
  private let handle: FileHandle
  private var data = Data()
  private let done = DispatchSemaphore(value: 0)

  init(_ handle: FileHandle) { self.handle = handle }

  func read() {
    data = handle.readDataToEndOfFile()
    done.signal()
  }

  func wait() -> Data {
    done.wait()
    return data
  }
}
