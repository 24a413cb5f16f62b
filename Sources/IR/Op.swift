/// Elementwise functions of one operand.
public enum UnaryOp: String, Hashable, Sendable, CaseIterable {
  case neg, abs, exp, log, sqrt, rsqrt, reciprocal, tanh, sigmoid, relu, silu, sin, cos

  /// Whether the function is defined on `i32` as well as `f32`.
  public var acceptsIntegers: Bool { self == .neg || self == .abs || self == .relu }
}

/// Elementwise functions of two operands, broadcast numpy-style.
public enum BinaryOp: String, Hashable, Sendable, CaseIterable {
  case add, sub, mul, div, max, min, pow
}

/// Elementwise comparisons; the result is `i32` holding 1 where the comparison holds, else 0.
public enum Comparison: String, Hashable, Sendable, CaseIterable {
  case eq, ne, lt, le, gt, ge
}

/// Reductions over a set of axes.
public enum ReduceOp: String, Hashable, Sendable, CaseIterable {
  case sum, max, mean
}

/// An operation: its kind and its attributes, nothing else.
///
/// The exhaustive `switch` over `Op` is the checklist: adding a case breaks the type rules, the
/// printer, the parser and the interpreter until each handles it. Axes are stored non-negative.
public enum Op: Hashable, Sendable {
  /// `y = f(x)` elementwise.
  case unary(UnaryOp)
  /// `z = f(x, y)` elementwise with broadcasting; either side may be a scalar literal.
  case binary(BinaryOp)
  /// `z = (x <op> y) ? 1 : 0` as `i32`, with broadcasting.
  case compare(Comparison)
  /// `select(c, a, b) = c != 0 ? a : b` with broadcasting; `c` is `i32`.
  case select
  /// Reduces the given axes; `keepDims` keeps them as size-1 dimensions.
  case reduce(ReduceOp, axes: [Int], keepDims: Bool)
  /// `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dimensions broadcast; the flags transpose
  /// the two innermost dimensions of an operand first. The right operand may be a storage type.
  case matmul(transposeA: Bool, transposeB: Bool)
  /// Reinterprets the row-major elements with another shape of the same element count.
  case reshape(to: [Int])
  /// `y[i_p0, i_p1, ...] = x[i_0, i_1, ...]`: result dimension `k` is operand dimension `permutation[k]`.
  case transpose(permutation: [Int])
  /// Broadcasts numpy-style (aligned on the right, size-1 dimensions stretch) to a shape.
  case broadcast(to: [Int])
  /// The box `start[k] ..< end[k]` of every dimension.
  case slice(start: [Int], end: [Int])
  /// Joins operands of equal shape except along `axis`.
  case concat(axis: Int)
  /// `take(table, indices, axis)`: the result shape is `table[..<axis] + indices + table[axis+1...]`.
  case gather(axis: Int)
  /// `scatter_add(target, indices, updates)`: target with `updates` added at `indices` along `axis`
  /// (the transpose of `gather`).
  case scatterAdd(axis: Int)
  /// Converts elements to another dtype (`f32 <-> i32`, or any storage type to `f32`).
  case cast(to: DType)
  /// A tensor whose elements are their index along `axis`.
  case iota(axis: Int, type: TensorType)
  /// A tensor with every element equal to `value`.
  case fill(value: Double, type: TensorType)
  /// `exp(x - max) / sum(exp(x - max))` along `axis`.
  case softmax(axis: Int)
  /// `x - max - log(sum(exp(x - max)))` along `axis`.
  case logSoftmax(axis: Int)
  /// Rotary position embedding of `x: f32[..., H, D]` at `positions: i32[...]` (the dimensions of
  /// `x` before `H`): the pair `(x_i, x_j)` rotates by `position * theta^(-2k/D)`, where the pairs
  /// are `(k, k + D/2)` (Hugging Face's rotate-half) or `(2k, 2k + 1)` when `interleaved`.
  case rope(theta: Double, interleaved: Bool)
  /// The box of the given sizes at `starts: i32[rank]`, starts clamped so the box fits.
  case dynamicSlice(sizes: [Int])
  /// `x` with the box at `starts: i32[rank]` (clamped) replaced by `update`.
  case dynamicUpdateSlice

  // Fused ops: made by the `fuse` pass from their primitive patterns, run by dedicated kernels,
  // and still defined here (and in the interpreter) on their own.

  /// `rms_norm(x, w) = x * (mean(x^2) + epsilon)^(-1/2) * w` over the last axis of `x: f32[..., D]`,
  /// with `w: f32[D]`.
  case rmsNorm(epsilon: Double)
  /// `rms_norm_grad(x, w, g)`: the gradient of `rms_norm(x, w)` with respect to `x` for the result
  /// gradient `g`.
  case rmsNormGrad(epsilon: Double)
  /// `swiglu(gate, up) = silu(gate) * up` elementwise, both of one type.
  case swiglu
  /// `swiglu_grad(gate, up, g) = (d gate, d up)`: the gradients of `swiglu` for `g`.
  case swigluGrad
  /// `cross_entropy(logits: f32[..., V], targets: i32[...]) = logsumexp(row) - row[target]` per
  /// row; 0 where the target is outside `0..<V` (an ignore index such as -100).
  case crossEntropy
  /// `cross_entropy_grad(logits, targets, g) = g * (softmax(row) - onehot(target))` per row, and 0
  /// on rows whose target is ignored.
  case crossEntropyGrad
  /// `lora_linear(x, W, A, B) = (xa, y)` with `xa = x A` and `y = x op(W) + scale * xa B`, where
  /// `op(W)` is `W^T` with `transposeW` (W stored `[out, in]`, possibly a storage type). The
  /// product `A B` is never formed; `xa` is a result because the backward pass reads it.
  case loraLinear(scale: Double, transposeW: Bool)
  /// `attention(q, k, v, mask)`: for `q: f32[B, H, S, D]`, `k, v: f32[B, G, T, D]` (query head
  /// `h` reads key/value head `h / (H / G)`: grouped-query attention) and `mask: i32` broadcast
  /// to `[B, H, S, T]`, `softmax_t(mask ? scale q.k : -inf) v`. A row with no visible key gives 0.
  case attention(scale: Double)
  /// `attention_grad(q, k, v, mask, g) = (dq, dk, dv)`: the gradients of `attention` for `g`.
  case attentionGrad(scale: Double)
  /// A chain of unary and binary functions computed per element in one pass: operands `$i` of
  /// one `f32` type (the result's), number literals, no broadcasting. Made by `fuse{elementwise}`
  /// after `autodiff`; it has no gradient of its own.
  case elementwise(ElementwiseExpression)
}
