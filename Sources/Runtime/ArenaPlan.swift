import IR

/// Where every intermediate value of a graph lives in one arena, from liveness.
///
/// A `dynamic_update_slice` of a state value that nothing else reads writes into the state's own
/// buffer (the state then holds the updated value after the run).
///
/// Values are placed in schedule order: an instruction's results get the first free range large
/// enough (64-byte aligned) that does not overlap any value still live, its operands included
/// (kernels never write over their inputs); a value's range is freed after its last use. Outputs
/// stay live to the end. `reshape` results alias their operand and extend its life.
public struct ArenaPlan: Sendable {
  /// The arena's size in bytes.
  public var arenaBytes: Int
  /// The bytes at the start of the arena that hold `runsOnce` values (kept for the program's
  /// life); everything after them is workspace of a single run.
  public var persistentBytes: Int
  /// The sum of every intermediate's size: what allocating each separately would take.
  public var naiveBytes: Int
  /// The byte offset of each arena-resident value (indexed by value id; nil elsewhere).
  public var offsets: [Int?]
  /// Values that share storage with another value (reshape results), and that value.
  public var aliases: [Value: Value]
  /// Scratch space reserved for an instruction (by index): offset and bytes.
  public var scratch: [Int: (offset: Int, bytes: Int)]

  static let alignment = 64

  /// Plans `graph`; `scratchBytes(i)` is the temporary space instruction `i` needs.
  ///
  /// `runsOnce` values (results of instructions that run once, at load) get ranges of their own
  /// for the whole program.
  init(_ graph: Graph, scratchBytes: (Int) -> Int, runsOnce: Set<Value> = []) {
    let count = graph.types.count
    var definedBy = [Int?](repeating: nil, count: count)
    for (index, instruction) in graph.body.enumerated() {
      for result in instruction.results { definedBy[result.index] = index }
    }
    // Aliases: a reshape's result is its operand's storage.
    var aliases: [Value: Value] = [:]
    func root(_ value: Value) -> Value { aliases[value].map(root) ?? value }
    // A dynamic_update_slice of state that nothing else reads updates the state in place: its
    // result is the state's buffer, so the state holds the new value after the run (KV caches).
    let states = Set(graph.declarations.filter { $0.kind == .state }.map(\.value))
    var readers: [Value: Int] = [:]
    for instruction in graph.body {
      for operand in instruction.operands {
        if let value = operand.value { readers[value, default: 0] += 1 }
      }
    }
    for instruction in graph.body {
      if case .reshape = instruction.op, let operand = instruction.operands.first?.value {
        aliases[instruction.results[0]] = root(operand)
      }
      if case .dynamicUpdateSlice = instruction.op, let state = instruction.operands[0].value,
        states.contains(state), readers[state] == 1, !graph.outputs.contains(state)
      {
        aliases[instruction.results[0]] = state
      }
    }
    // Last use of each root value.
    var lastUse = [Int](repeating: -1, count: count)
    for (index, instruction) in graph.body.enumerated() {
      for operand in instruction.operands {
        if let value = operand.value { lastUse[root(value).index] = index }
      }
      for result in instruction.results {
        lastUse[root(result).index] = max(lastUse[root(result).index], index)
      }
    }
    for output in graph.outputs { lastUse[root(output).index] = graph.body.count }

    var free: [(offset: Int, bytes: Int)] = []
    var end = 0
    var offsets = [Int?](repeating: nil, count: count)
    var scratch: [Int: (offset: Int, bytes: Int)] = [:]
    var naive = 0
    var dying: [[Value]] = Array(repeating: [], count: graph.body.count + 1)

    func allocate(_ bytes: Int) -> Int {
      let size = (bytes + ArenaPlan.alignment - 1) / ArenaPlan.alignment * ArenaPlan.alignment
      if let slot = free.indices.filter({ free[$0].bytes >= size }).min(by: {
        free[$0].bytes < free[$1].bytes
      }) {
        let offset = free[slot].offset
        if free[slot].bytes == size {
          free.remove(at: slot)
        } else {
          free[slot] = (offset + size, free[slot].bytes - size)
        }
        return offset
      }
      // Grow: extend a free range that touches the end, if any.
      if let last = free.firstIndex(where: { $0.offset + $0.bytes == end }) {
        let offset = free[last].offset
        end = offset + size
        free.remove(at: last)
        return offset
      }
      defer { end += size }
      return end
    }
    func release(_ offset: Int, _ bytes: Int) {
      let size = (bytes + ArenaPlan.alignment - 1) / ArenaPlan.alignment * ArenaPlan.alignment
      free.append((offset, size))
      // Merge neighbours so large values can reuse space.
      free.sort { $0.offset < $1.offset }
      var merged: [(offset: Int, bytes: Int)] = []
      for range in free {
        if let last = merged.last, last.offset + last.bytes == range.offset {
          merged[merged.count - 1].bytes += range.bytes
        } else {
          merged.append(range)
        }
      }
      free = merged
    }

    for value in runsOnce.sorted(by: { $0.index < $1.index }) where aliases[value] == nil {
      let bytes = graph.type(of: value).byteCount
      naive += bytes
      offsets[value.index] = allocate(bytes)
    }
    let persistent = end
    for (index, instruction) in graph.body.enumerated() {
      for result in instruction.results where aliases[result] == nil && !runsOnce.contains(result) {
        let bytes = graph.type(of: result).byteCount
        naive += bytes
        offsets[result.index] = allocate(bytes)
        dying[max(lastUse[result.index], index)].append(result)
      }
      let scratchSize = scratchBytes(index)
      if scratchSize > 0 {
        let offset = allocate(scratchSize)
        scratch[index] = (offset, scratchSize)
        release(offset, scratchSize)
      }
      for value in dying[index] {
        if let offset = offsets[value.index] { release(offset, graph.type(of: value).byteCount) }
      }
    }
    for (value, target) in aliases { offsets[value.index] = offsets[root(target).index] }
    self.arenaBytes = end
    self.persistentBytes = persistent
    self.naiveBytes = naive
    self.offsets = offsets
    self.aliases = aliases
    self.scratch = scratch
  }
}
