import CKernels
import Dispatch
import Foundation
import IR

/// Packed forms of constant weights, shared by the executables made with one store.
///
/// A model's decoding graphs for several prompt lengths read the same mapped weights: with one
/// store, each weight is interleaved once, not once per graph. Forms are keyed by the address and
/// size of the bytes they were made from, and the store keeps those bytes (their `HostTensor`)
/// alive, so an address cannot come back with other contents while a form made from it exists.
public final class PackedForms {
  private struct Key: Hashable {
    var address: UInt
    var bytes: Int
    var type: TensorType
  }

  private var forms: [Key: UnsafeMutableRawPointer] = [:]
  private var sources: [Key: HostTensor] = [:]

  public init() {}

  deinit { for form in forms.values { free(form) } }

  /// Bytes of every form made so far.
  public var bytes: Int {
    forms.keys.reduce(0) { total, key in total + PackedForms.interleavedBytes(key.type) }
  }

  /// The interleaved form of `tensor` (whose bytes are at `address`), and whether it was made by
  /// this call.
  func interleaved(_ tensor: HostTensor, at address: UnsafeRawPointer, type: TensorType)
    throws(RuntimeError) -> (UnsafeMutableRawPointer, made: Bool)
  {
    let key = Key(address: UInt(bitPattern: address), bytes: type.byteCount, type: type)
    if let form = forms[key] { return (form, false) }
    let form = try PackedForms.interleave(address, type: type)
    forms[key] = form
    sources[key] = tensor
    return (form, true)
  }

  static func interleavedBytes(_ type: TensorType) -> Int {
    Int(lc_interleaved_bytes(kernelDType(type.dtype), Int64(type.shape[0]), Int64(type.shape[1])))
  }

  /// A new interleaved copy of a q4_1 or q8_0 matrix (the caller frees it); the source's pages are
  /// then paged out: only products of more rows read them again.
  static func interleave(_ source: UnsafeRawPointer, type: TensorType) throws(RuntimeError)
    -> UnsafeMutableRawPointer
  {
    let bytes = interleavedBytes(type)
    var memory: UnsafeMutableRawPointer?
    guard posix_memalign(&memory, 64, max(bytes, 64)) == 0, let memory else {
      throw RuntimeError(message: "out of memory interleaving a \(type) weight (\(bytes) bytes)")
    }
    let code = kernelDType(type.dtype)
    lc_interleave(code, source, Int64(type.shape[0]), Int64(type.shape[1]), memory)
    lc_page_out(source, Int64(type.byteCount))
    return memory
  }
}
