import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A file mapped read-only into memory; tensors are zero-copy slices that keep it alive.
///
/// `init(copying:path:)` holds bytes already in memory the same way, so readers that take a
/// mapping also parse in-memory bytes (fuzzing, tests) without a file.
public final class FileMapping: @unchecked Sendable {
  public let path: String
  public let bytes: UnsafeRawBufferPointer
  /// The memory `init(copying:path:)` allocated (nil for a mapped file).
  private let allocation: UnsafeMutableRawBufferPointer?

  /// Maps `path`; missing, unreadable, directory and empty files are errors naming the path.
  public init(path: String) throws(FileError) {
    self.path = path
    let descriptor = open(path, O_RDONLY)
    guard descriptor >= 0 else {
      let reason = String(cString: strerror(errno))
      throw FileError(message: "\(path): cannot open: \(reason)")
    }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0 else {
      throw FileError(message: "\(path): cannot read its size")
    }
    if (status.st_mode & S_IFMT) == S_IFDIR { throw FileError(message: "\(path): is a directory") }
    let size = Int(status.st_size)
    guard size > 0 else { throw FileError(message: "\(path): the file is empty") }
    guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0),
      address != MAP_FAILED
    else {
      throw FileError(message: "\(path): cannot map: \(String(cString: strerror(errno)))")
    }
    bytes = UnsafeRawBufferPointer(start: address, count: size)
    allocation = nil
  }

  /// Holds a copy of `contents` as if it were the file `path` (which is only used in messages).
  public init(copying contents: some Collection<UInt8>, path: String) {
    self.path = path
    let buffer = UnsafeMutableRawBufferPointer.allocate(
      byteCount: max(contents.count, 1), alignment: 64)
    _ = buffer.initializeMemory(as: UInt8.self, from: contents)
    bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<contents.count])
    allocation = buffer
  }

  deinit {
    if let allocation {
      allocation.deallocate()
    } else if let base = bytes.baseAddress {
      munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
    }
  }

  /// The bytes `offset ..< offset + count` as Data that shares the mapping and keeps it alive.
  public func data(offset: Int, count: Int) -> Data {
    guard count > 0, let base = bytes.baseAddress else { return Data() }
    let start = UnsafeMutableRawPointer(mutating: base + offset)
    return Data(bytesNoCopy: start, count: count, deallocator: .custom { _, _ in _ = self })
  }
}

/// A file that cannot be opened or read; the message names the path.
public struct FileError: Error, Hashable, Sendable, CustomStringConvertible {
  public var message: String
  public init(message: String) { self.message = message }
  public var description: String { message }
}
