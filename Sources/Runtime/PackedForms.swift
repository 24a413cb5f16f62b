import CKernels
import Dispatch
import Foundation
import IR

/// Packed forms of constant weights, shared by the executables made with one store.
///
/// A model's decoding graphs for several prompt lengths read the same mapped weights: with one
/// store, each weight is packed once, not once per graph. Forms are keyed by the address and size
/// of the bytes they were made from, and the store keeps those bytes (their `HostTensor`) alive,
/// so an address cannot come back with other contents while a form made from it exists.
public final class PackedForms {
  /// How a form is laid out.
  public enum Kind: Hashable, Sendable {
    /// q4_1 or q8_0 interleaved by 16 rows (`lc_interleave`).
    case interleaved
    /// The bytes as they are, on transparent huge pages (f32/f16/bf16 rows read by decoding).
    case hugePages
  }

  private struct Key: Hashable {
    var address: UInt
    var type: TensorType
    var kind: Kind
  }

  private var forms: [Key: UnsafeMutableRawPointer] = [:]
  private var sources: [Key: HostTensor] = [:]

  public init() {}

  deinit { for form in forms.values { free(form) } }

  /// Bytes of every form made so far.
  public var bytes: Int {
    forms.keys.reduce(0) { total, key in total + PackedForms.bytes(key.type, key.kind) }
  }

  /// The `kind` form of `tensor` (whose bytes are at `address`), and whether this call made it.
  func form(
    _ kind: Kind, of tensor: HostTensor, at address: UnsafeRawPointer, type: TensorType
  ) throws(RuntimeError) -> (UnsafeMutableRawPointer, made: Bool) {
    let key = Key(address: UInt(bitPattern: address), type: type, kind: kind)
    if let form = forms[key] { return (form, false) }
    let form = try PackedForms.make(kind, from: address, type: type)
    forms[key] = form
    sources[key] = tensor
    return (form, true)
  }

  static func bytes(_ type: TensorType, _ kind: Kind) -> Int {
    switch kind {
    case .interleaved:
      Int(
        lc_interleaved_bytes(kernelDType(type.dtype), Int64(type.shape[0]), Int64(type.shape[1])))
    case .hugePages: type.byteCount
    }
  }

  /// A new `kind` copy of a matrix (the caller frees it); the source's pages are then paged out:
  /// only products of more rows read them again.
  static func make(_ kind: Kind, from source: UnsafeRawPointer, type: TensorType)
    throws(RuntimeError) -> UnsafeMutableRawPointer
  {
    let bytes = PackedForms.bytes(type, kind)
    guard let memory = lc_alloc_large(Int64(bytes)) else {
      throw RuntimeError(message: "out of memory packing a \(type) weight (\(bytes) bytes)")
    }
    switch kind {
    case .interleaved:
      let code = kernelDType(type.dtype)
      lc_interleave(code, source, Int64(type.shape[0]), Int64(type.shape[1]), memory)
    case .hugePages:
      memory.copyMemory(from: source, byteCount: bytes)
    }
    lc_page_out(source, Int64(type.byteCount))
    return memory
  }
}
