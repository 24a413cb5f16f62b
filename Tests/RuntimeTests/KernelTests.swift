import Foundation
import IR
import Runtime
import Testing

/// Awkward sizes: 1, odd, just over a power of two, larger than one parallel chunk.
let awkwardSizes = [1, 3, 7, 33, 129]

/// A graph with one instruction made by `body` from inputs of the given types.
func singleOp(
  _ types: [TensorType], _ body: (GraphBuilder, [Tensor]) throws(TraceError) -> Tensor
) throws -> Graph {
  let b = GraphBuilder(name: "op")
  var inputs: [Tensor] = []
  for (index, type) in types.enumerated() {
    inputs.append(try b.input(name: "in\(index)", shape: type.shape, dtype: type.dtype))
  }
  return try b.finish(outputs: [try body(b, inputs)])
}

func f32(_ shape: [Int]) -> TensorType { TensorType(.f32, shape) }
func i32(_ shape: [Int]) -> TensorType { TensorType(.i32, shape) }

// Error bounds, relative to 1 + |reference|: data movement and integer ops are exact; f32
// arithmetic rounds once like the interpreter; transcendental functions differ from the
// interpreter's double-then-round by a few ulps; products and sums accumulate in a different
// order than the interpreter's double accumulation.
let exact = 0.0
let elementwiseBound = 1e-6
let accumulationBound = 1e-5

extension RuntimeSuite {
  @Test(arguments: UnaryOp.allCases)
  func unaryMatchesInterpreter(_ function: UnaryOp) throws {
    for size in awkwardSizes + [40_000] {
      let graph = try singleOp([f32([size])]) { _, x throws(TraceError) in
        // log, sqrt and rsqrt need positive inputs.
        let input = [.log, .sqrt, .rsqrt].contains(function) ? try x[0].apply(.abs) + 0.5 : x[0]
        return try input.apply(function)
      }
      #expect(try compareWithInterpreter(graph) <= elementwiseBound, "\(function) size \(size)")
    }
  }

  @Test func integerUnaryIsExact() throws {
    for function in [UnaryOp.neg, .abs, .relu] {
      let graph = try singleOp([i32([33])]) { _, x throws(TraceError) in
        try (x[0] - 2).apply(function)
      }
      #expect(try compareWithInterpreter(graph, intLimit: 5) == exact)
    }
  }

  @Test(arguments: BinaryOp.allCases)
  func binaryBroadcastsLikeInterpreter(_ function: BinaryOp) throws {
    let cases: [([Int], [Int])] = [
      ([7], [7]), ([3, 33], [33]), ([3, 1], [1, 129]), ([2, 3, 7], [3, 1]), ([1], [129, 3]),
      ([40_000], [1]), ([200, 300], [200, 1]),
    ]
    for (left, right) in cases {
      let graph = try singleOp([f32(left), f32(right)]) { _, x throws(TraceError) in
        function == .pow ? try x[0].apply(.abs).apply(.pow, x[1]) : try x[0].apply(function, x[1])
      }
      #expect(try compareWithInterpreter(graph) <= elementwiseBound, "\(function) \(left) \(right)")
    }
    let scalar = try singleOp([f32([33])]) { _, x throws(TraceError) in
      try (2.5 - x[0]).apply(function == .pow ? .max : function, 0.75)
    }
    #expect(try compareWithInterpreter(scalar) <= elementwiseBound)
  }

  @Test func integerBinaryAndComparisonsAreExact() throws {
    for function in BinaryOp.allCases where function != .pow {
      let graph = try singleOp([i32([3, 7]), i32([7])]) { _, x throws(TraceError) in
        try (x[0] - 3).apply(function, x[1])
      }
      #expect(try compareWithInterpreter(graph, intLimit: 6) == exact, "\(function)")
    }
    for comparison in Comparison.allCases {
      let floats = try singleOp([f32([7, 3]), f32([3])]) { _, x throws(TraceError) in
        try x[0].compare(comparison, x[1])
      }
      #expect(try compareWithInterpreter(floats) == exact)
      let ints = try singleOp([i32([7, 3]), i32([1])]) { _, x throws(TraceError) in
        try x[0].compare(comparison, x[1])
      }
      #expect(try compareWithInterpreter(ints, intLimit: 3) == exact)
    }
  }

  @Test func selectBroadcastsAllThreeOperands() throws {
    let graph = try singleOp([i32([3, 1]), f32([33]), f32([3, 33])]) { _, x throws(TraceError) in
      try select(x[0], x[1], x[2])
    }
    #expect(try compareWithInterpreter(graph, intLimit: 2) == exact)
    let scalar = try singleOp([i32([7]), f32([7])]) { b, x throws(TraceError) in
      try b.emit(.select, [.value(x[0].value), .value(x[1].value), .scalar(-.infinity)])[0]
    }
    #expect(try compareWithInterpreter(scalar, intLimit: 2) == exact)
  }

  @Test func reductionsOverEveryAxisSet() throws {
    let shape = [3, 7, 33]
    let axisSets: [[Int]] = [[0], [1], [2], [0, 1], [1, 2], [0, 2], [0, 1, 2]]
    for function in ReduceOp.allCases {
      for axes in axisSets {
        for keepDims in [false, true] {
          let graph = try singleOp([f32(shape)]) { _, x throws(TraceError) in
            switch function {
            case .sum: try x[0].sum(axes: axes, keepDims: keepDims)
            case .max: try x[0].max(axes: axes, keepDims: keepDims)
            case .mean: try x[0].mean(axes: axes, keepDims: keepDims)
            }
          }
          let bound = function == .max ? exact : accumulationBound
          #expect(try compareWithInterpreter(graph, scale: .tensor) <= bound, "\(function) \(axes)")
        }
      }
      if function != .mean {
        let ints = try singleOp([i32(shape)]) { _, x throws(TraceError) in
          function == .sum ? try x[0].sum(axes: [0, 2]) : try x[0].max(axes: [1])
        }
        #expect(try compareWithInterpreter(ints, intLimit: 100) == exact)
      }
    }
    let large = try singleOp([f32([129, 1000])]) { _, x throws(TraceError) in
      try x[0].sum(axes: [0])
    }
    #expect(try compareWithInterpreter(large, scale: .tensor) <= accumulationBound)
  }

  @Test func matmulWithTransposesAndBatches() throws {
    let cases: [([Int], [Int], Bool, Bool)] = [
      ([1, 1], [1, 1], false, false), ([3, 7], [7, 33], false, false),
      ([7, 3], [7, 33], true, false),
      ([3, 7], [33, 7], false, true), ([7, 3], [33, 7], true, true),
      ([2, 3, 7], [7, 5], false, false),
      ([2, 3, 7], [2, 7, 5], false, false), ([4, 1, 3, 7], [1, 3, 5, 7], false, true),
      ([129, 33], [33, 129], false, false),
    ]
    for (left, right, transposeA, transposeB) in cases {
      let graph = try singleOp([f32(left), f32(right)]) { _, x throws(TraceError) in
        try matmul(x[0], x[1], transposeA: transposeA, transposeB: transposeB)
      }
      #expect(
        try compareWithInterpreter(graph, scale: .tensor) <= accumulationBound, "\(left) x \(right)"
      )
    }
  }

  @Test func dataMovementIsExact() throws {
    let graphs: [Graph] = [
      try singleOp([f32([3, 7, 33])]) { _, x throws(TraceError) in try x[0].transposed([2, 0, 1]) },
      try singleOp([f32([129, 33])]) { _, x throws(TraceError) in try x[0].transposed([1, 0]) },
      try singleOp([f32([7, 1])]) { _, x throws(TraceError) in try x[0].broadcast(to: [3, 7, 33]) },
      try singleOp([f32([3, 7, 33])]) { _, x throws(TraceError) in
        try x[0].slice(start: [1, 2, 3], end: [3, 7, 30])
      },
      try singleOp([f32([3, 7]), f32([3, 1]), f32([3, 33])]) { _, x throws(TraceError) in
        try concat(x, axis: 1)
      },
      try singleOp([f32([3, 7]), f32([1, 7])]) { _, x throws(TraceError) in try concat(x, axis: 0)
      },
      try singleOp([f32([3, 7])]) { _, x throws(TraceError) in
        try x[0].reshaped([7, 3]).transposed([1, 0])
      },
      try singleOp([f32([33, 7]), i32([3, 5])]) { _, x throws(TraceError) in
        try gather(x[0], x[1], axis: 0)
      },
      try singleOp([f32([3, 33, 7]), i32([5])]) { _, x throws(TraceError) in
        try gather(x[0], x[1], axis: 1)
      },
      try singleOp([f32([3, 7]), i32([3])]) { _, x throws(TraceError) in try x[0].cast(to: .i32) },
      try singleOp([i32([3, 7])]) { _, x throws(TraceError) in try x[0].cast(to: .f32) },
      try singleOp([]) { b, _ throws(TraceError) in try b.iota(shape: [3, 7, 5], axis: 1) },
      try singleOp([]) { b, _ throws(TraceError) in try b.iota(shape: [33], dtype: .f32, axis: 0) },
      try singleOp([]) { b, _ throws(TraceError) in try b.fill(-1.5, shape: [7, 3]) },
      try singleOp([]) { b, _ throws(TraceError) in try b.fill(3, shape: [40_000], dtype: .i32) },
    ]
    for graph in graphs {
      #expect(try compareWithInterpreter(graph, intLimit: 3) == exact, "\(Printer().print(graph))")
    }
  }

  @Test func scatterAddAccumulatesRepeatedIndices() throws {
    let graph = try singleOp([f32([7, 33]), i32([3, 5]), f32([3, 5, 33])]) {
      _, x throws(TraceError) in
      try scatterAdd(x[0], x[1], x[2], axis: 0)
    }
    #expect(try compareWithInterpreter(graph, intLimit: 7) <= elementwiseBound)
  }

  @Test func softmaxAlongEveryAxis() throws {
    for axis in 0..<3 {
      for logarithm in [false, true] {
        let graph = try singleOp([f32([3, 33, 7])]) { _, x throws(TraceError) in
          logarithm ? try logSoftmax(x[0] * 8, axis: axis) : try softmax(x[0] * 8, axis: axis)
        }
        #expect(try compareWithInterpreter(graph) <= elementwiseBound, "axis \(axis)")
      }
    }
  }

  @Test func ropeBothPairings() throws {
    for interleaved in [false, true] {
      let graph = try singleOp([f32([2, 7, 3, 8]), i32([2, 7])]) { _, x throws(TraceError) in
        try rope(x[0], positions: x[1], theta: 10000, interleaved: interleaved)
      }
      #expect(try compareWithInterpreter(graph, intLimit: 1000) <= elementwiseBound)
    }
  }

  @Test func dynamicSlicesClampLikeInterpreter() throws {
    // Starts drawn from 0..<40 overrun the 7x33 tensor, exercising the clamping.
    let slice = try singleOp([f32([7, 33]), i32([2])]) { _, x throws(TraceError) in
      try dynamicSlice(x[0], starts: x[1], sizes: [3, 5])
    }
    let update = try singleOp([f32([7, 33]), f32([3, 5]), i32([2])]) { _, x throws(TraceError) in
      try dynamicUpdateSlice(x[0], x[1], starts: x[2])
    }
    for seed in 1...20 {
      #expect(try compareWithInterpreter(slice, seed: UInt64(seed), intLimit: 40) == exact)
      #expect(try compareWithInterpreter(update, seed: UInt64(seed), intLimit: 40) == exact)
    }
  }

  @Test func outOfRangeIndicesAreErrorsNotCrashes() throws {
    let graph = try singleOp([f32([5, 3]), i32([4])]) { _, x throws(TraceError) in
      try gather(x[0], x[1], axis: 0)
    }
    let executable = try Executable(graph)
    try executable.set("in0", HostTensor(shape: [5, 3], floats: [Float](repeating: 1, count: 15)))
    try executable.set("in1", HostTensor(shape: [4], ints: [0, 4, 5, 1]))
    #expect(
      throws: RuntimeError(
        message: "instruction 0 (gather): index 5 at position 2 is out of range 0..<5")
    ) {
      try executable.execute()
    }
  }
}
