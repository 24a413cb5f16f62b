import CKernels
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
    /// bf16 packed for the avx512_bf16 products (`lc_bf16_pack`), for `x W^T` or `x W`.
    case bf16(transposeB: Bool)
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
  /// Forms are cut from slabs on huge pages, packed one after the other: a huge page is faulted
  /// in whole on first touch, so a 69 KB form alone in one would hold 2 MB.
  private var slabs: [UnsafeMutableRawPointer] = []
  private var next: UnsafeMutableRawPointer?
  private var left = 0
  static let slabBytes = 32 << 20

  public init() {}

  deinit { for slab in slabs { free(slab) } }

  /// Bytes of every form made so far.
  public var bytes: Int {
    forms.keys.reduce(0) { total, key in total + PackedForms.bytes(key.type, key.kind) }
  }

  /// The `kind` form of the matrix at `address`, and whether this call made it.
  ///
  /// `tensor`, the source's storage, is kept for as long as the store: a store shared by
  /// executables needs it (else a freed source's address could come back with other bytes); one
  /// executable's own store may do without, its sources outliving it.
  func form(
    _ kind: Kind, of tensor: HostTensor?, at address: UnsafeRawPointer, type: TensorType
  ) throws(RuntimeError) -> (UnsafeMutableRawPointer, made: Bool) {
    let key = Key(address: UInt(bitPattern: address), type: type, kind: kind)
    if let form = forms[key] { return (form, false) }
    let bytes = PackedForms.bytes(type, kind)
    let form = try allocate(bytes, for: type)
    switch kind {
    case .bf16(let transposeB):
      let (n, k) = PackedForms.bf16Shape(type, transposeB)
      lc_bf16_pack(
        address.assumingMemoryBound(to: UInt16.self), n, k, transposeB ? 1 : 0,
        form.assumingMemoryBound(to: UInt16.self))
    case .interleaved:
      let code = type.dtype.kernelCode
      lc_interleave(code, address, Int64(type.shape[0]), Int64(type.shape[1]), form)
    case .hugePages:
      form.copyMemory(from: address, byteCount: bytes)
    }
    // The source is read again only by products of more rows: a mapped file's pages can go.
    // (bf16 sources are heap copies rounded at load, which the executable releases instead.)
    if case .bf16 = kind {} else { lc_page_out(address, Int64(type.byteCount)) }
    forms[key] = form
    sources[key] = tensor
    return (form, true)
  }

  /// 64-byte aligned bytes from the current slab, or from a new one.
  private func allocate(_ bytes: Int, for type: TensorType) throws(RuntimeError)
    -> UnsafeMutableRawPointer
  {
    let size = (bytes + 63) / 64 * 64
    if size > left {
      let slab = max(PackedForms.slabBytes, size)
      guard let memory = lc_alloc_large(Int64(slab)) else {
        throw RuntimeError(message: "out of memory packing a \(type) weight (\(bytes) bytes)")
      }
      slabs.append(memory)
      (next, left) = (memory, slab)
    }
    guard let start = next else {
      throw RuntimeError(message: "no slab for a \(type) weight")
    }
    (next, left) = (start + size, left - size)
    return start
  }

  static func bytes(_ type: TensorType, _ kind: Kind) -> Int {
    switch kind {
    case .bf16(let transposeB):
      Int(lc_bf16_packed_bytes(bf16Shape(type, transposeB).n, bf16Shape(type, transposeB).k))
    case .interleaved:
      Int(
        lc_interleaved_bytes(type.dtype.kernelCode, Int64(type.shape[0]), Int64(type.shape[1])))
    case .hugePages: type.byteCount
    }
  }

  /// The product's n and k for a bf16 weight as stored ([n, k] when transposed, else [k, n]).
  private static func bf16Shape(_ type: TensorType, _ transposeB: Bool) -> (n: Int64, k: Int64) {
    let (rows, columns) = (Int64(type.shape[0]), Int64(type.shape[1]))
    return transposeB ? (rows, columns) : (columns, rows)
  }
}
