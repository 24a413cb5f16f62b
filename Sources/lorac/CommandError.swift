import ArgumentParser
import Foundation

/// Prints `error: message` to standard error and exits with status 1.
///
/// Commands report every failure through this, so stdout carries only the requested output.
func fail(_ message: String) -> Never {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
  exit(1)
}

/// Reads a whole file as UTF-8 text, `-` meaning standard input.
func readText(_ path: String) -> String {
  let data: Data
  if path == "-" {
    data = FileHandle.standardInput.readDataToEndOfFile()
  } else {
    guard let contents = FileManager.default.contents(atPath: path) else {
      var isDirectory: ObjCBool = false
      if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
        fail(isDirectory.boolValue ? "\(path): is a directory" : "\(path): cannot read the file")
      }
      fail("\(path): cannot open: No such file or directory")
    }
    data = contents
  }
  guard let text = String(data: data, encoding: .utf8) else {
    fail("\(path == "-" ? "standard input" : path): is not UTF-8 text")
  }
  return text
}

/// Checks a `--threads` value: at least 1 when given (leave it out for all cores).
func validateThreads(_ threads: Int?) throws {
  if let threads, threads < 1 {
    throw ValidationError("--threads must be at least 1, got \(threads)")
  }
}
