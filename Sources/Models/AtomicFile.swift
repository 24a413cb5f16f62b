import Foundation

/// Writes `data` to `url` crash-safely: into a temporary file in the same folder, flushed to disk,
/// then renamed over the target (and the folder flushed), so readers see the old file or the new
/// one, never a part.
///
/// A process killed mid-write leaves its temporary file (`.NAME.UUID.tmp`) behind;
/// `removeStaleTemporaryFiles(in:for:)` clears those.
public func writeAtomically(_ data: Data, to url: URL) throws(FileError) {
  let folder = url.deletingLastPathComponent()
  // Said before anything is written: the rename below would only fail after a full write.
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory),
    isDirectory.boolValue
  {
    throw FileError(message: "\(url.path): is a directory")
  }
  let temporary = temporaryURL(for: url)
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
  synchronizeFolder(folder)
}

/// A fresh temporary file name beside `url`: hidden, `.NAME.UUID.tmp`.
func temporaryURL(for url: URL) -> URL {
  url.deletingLastPathComponent().appendingPathComponent(
    ".\(url.lastPathComponent).\(UUID().uuidString).tmp")
}

/// Flushes a folder's entries (a rename lives in the folder), so a new name survives a power loss.
func synchronizeFolder(_ folder: URL) {
  let directory = open(folder.path, O_RDONLY)
  if directory >= 0 {
    _ = fsync(directory)
    close(directory)
  }
}

/// Removes the temporary files an interrupted `writeAtomically` of one of `names` left in
/// `folder`, and returns their names.
///
/// Only `.NAME.UUID.tmp` with NAME in `names` is touched, so other programs' files stay; call it
/// only while no other process writes those names into `folder`.
@discardableResult
public func removeStaleTemporaryFiles(in folder: URL, for names: [String]) -> [String] {
  guard let entries = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else {
    return []
  }
  var removed: [String] = []
  for entry in entries.sorted() where entry.hasPrefix(".") && entry.hasSuffix(".tmp") {
    let middle = entry.dropFirst().dropLast(".tmp".count)
    guard let dot = middle.lastIndex(of: "."),
      names.contains(String(middle[..<dot])),
      UUID(uuidString: String(middle[middle.index(after: dot)...])) != nil
    else { continue }
    if (try? FileManager.default.removeItem(at: folder.appendingPathComponent(entry))) != nil {
      removed.append(entry)
    }
  }
  return removed
}
