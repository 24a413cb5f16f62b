import Foundation

/// Writes `data` to `url` crash-safely: into a temporary file in the same folder, flushed to disk,
/// then renamed over the target (and the folder flushed), so readers see the old file or the new
/// one, never a part.
public func writeAtomically(_ data: Data, to url: URL) throws(FileError) {
  let folder = url.deletingLastPathComponent()
  // Said before anything is written: the rename below would only fail after a full write.
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory),
    isDirectory.boolValue
  {
    throw FileError(message: "\(url.path): is a directory")
  }
  let temporary = folder.appendingPathComponent(
    ".\(url.lastPathComponent).\(UUID().uuidString).tmp")
  guard FileManager.default.createFile(atPath: temporary.path, contents: nil) else {
    throw FileError(message: "\(url.path): cannot create a file in \(folder.path)")
  }
  do {
    let handle = try FileHandle(forWritingTo: temporary)
    defer { try? handle.close() }
    try handle.write(contentsOf: data)
    try handle.synchronize()
  } catch {
    try? FileManager.default.removeItem(at: temporary)
    throw FileError(message: "\(url.path): write failed: \(error.localizedDescription)")
  }
  if rename(temporary.path, url.path) != 0 {
    let reason = String(cString: strerror(errno))
    try? FileManager.default.removeItem(at: temporary)
    throw FileError(message: "\(url.path): cannot rename into place: \(reason)")
  }
  // The rename lives in the folder: flush it too, so the new name survives a power loss.
  let directory = open(folder.path, O_RDONLY)
  if directory >= 0 {
    _ = fsync(directory)
    close(directory)
  }
}
