import Foundation
import TestSupport
import Testing

// Data-parallel training under Open MPI's mpirun: N ranks with --batch B against one process with
// --batch B --accumulate N, a resume with another number of ranks, a rank killed mid-run, ranks
// that disagree, and a plain binary that does not link MPI.

/// Open MPI's launcher, or nil (with the reason printed) where it is not installed.
private let mpirun: URL? = {
  for folder in ["/usr/bin", "/usr/local/bin"] {
    let url = URL(fileURLWithPath: folder).appendingPathComponent("mpirun")
    if FileManager.default.isExecutableFile(atPath: url.path) { return url }
  }
  print("DataParallelTests: mpirun is not installed (scripts/setup installs openmpi-bin); skipped")
  return nil
}()

/// What mpirun needs here: root is allowed (CI runs as root), and no cross-memory attach, which
/// containers forbid.
private let mpiEnvironment = [
  "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
  "OMPI_MCA_btl_vader_single_copy_mechanism": "none", "OMPI_MCA_rmaps_base_oversubscribe": "1",
]

/// `mpirun -np ranks lorac arguments`, with `environment` added to mpirun's.
private func mpi(_ ranks: Int, _ arguments: [String], environment: [String: String] = [:]) throws
  -> RunResult
{
  try run(
    try #require(mpirun),
    ["-np", "\(ranks)", "--bind-to", "none", loracExecutable().path] + arguments,
    environment: mpiEnvironment.merging(environment) { $1 })
}

private func train(_ model: String, out: URL, steps: Int = 20) -> [String] {
  [
    "train", model, "--task", "mystery_function", "--examples", "48", "--out", out.path,
    "--steps", "\(steps)", "--batch", "2", "--seq", "24", "--rank", "4",
    "--targets", "layers.*.attn.{q,v}", "--lr", "0.005", "--warmup", "2", "--save-every", "5",
    "--seed", "3", "--threads", "1",
  ]
}

private func losses(_ folder: URL) throws -> [Double] {
  try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    .split(separator: "\n").map { line in
      let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
      return try #require(object?["loss"] as? Double)
    }
}

@Test(.enabled(if: mpirun != nil))
func twoRanksTrainAsOneProcessAccumulatingTwoMicroBatches() throws {
  let model = try modelPath()
  let (single, parallel, again) = (
    try temporaryFolder(), try temporaryFolder(), try temporaryFolder()
  )
  defer { for url in [single, parallel, again] { try? FileManager.default.removeItem(at: url) } }
  let one = try lorac(train(model, out: single) + ["--accumulate", "2"])
  #expect(one.status == 0, "\(one.stderr)")
  let two = try mpi(2, train(model, out: parallel))
  #expect(two.status == 0, "\(two.stderr)")
  let (a, b) = (try losses(single), try losses(parallel))
  #expect(a.count == 20 && b.count == 20)
  for (step, (x, y)) in zip(a, b).enumerated() {
    #expect(abs(x - y) <= 1e-6 * abs(x), "step \(step + 1): \(x) against \(y)")
  }
  // Rank 0 alone printed progress and wrote the checkpoint; the adapter is the same bits.
  #expect(two.stderr.components(separatedBy: "step 20/20").count == 2, "\(two.stderr)")
  #expect(
    try Data(contentsOf: parallel.appendingPathComponent("adapter_model.safetensors"))
      == Data(contentsOf: single.appendingPathComponent("adapter_model.safetensors")))
  // The summation order is fixed: a rerun gives the same bits.
  let rerun = try mpi(2, train(model, out: again))
  #expect(rerun.status == 0, "\(rerun.stderr)")
  #expect(try losses(again) == b)
  #expect(
    try Data(contentsOf: again.appendingPathComponent("adapter_model.safetensors"))
      == Data(contentsOf: parallel.appendingPathComponent("adapter_model.safetensors")))
}

@Test(.enabled(if: mpirun != nil))
func aResumeMayUseAnotherNumberOfRanks() throws {
  let model = try modelPath()
  let (whole, split) = (try temporaryFolder(), try temporaryFolder())
  defer { for url in [whole, split] { try? FileManager.default.removeItem(at: url) } }
  #expect(try lorac(train(model, out: whole, steps: 10) + ["--accumulate", "2"]).status == 0)
  // Two ranks for 5 steps, then one process takes both micro-batches of every step.
  let first = try mpi(2, train(model, out: split, steps: 10) + ["--stop-after", "5"])
  #expect(first.status == 0, "\(first.stderr)")
  let second = try lorac(train(model, out: split, steps: 10) + ["--resume"])
  #expect(second.status == 0, "\(second.stderr)")
  let (a, b) = (try losses(whole), try losses(split))
  #expect(a.count == 10 && b.count == 10)
  for (step, (x, y)) in zip(a, b).enumerated() {
    #expect(abs(x - y) <= 1e-6 * abs(x), "step \(step + 1): \(x) against \(y)")
  }
  // Three ranks cannot share two micro-batches a step.
  let three = try mpi(3, train(model, out: split, steps: 12) + ["--resume"])
  #expect(three.status != 0)
  #expect(
    three.stderr.contains(
      "the training state takes 2 micro-batches per step, which 3 ranks cannot share evenly"),
    "\(three.stderr)")
}

@Test(.enabled(if: mpirun != nil))
func ranksThatDisagreeRefuseToStart() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  // Two commands in one job (Open MPI's colon syntax): the second has another learning rate.
  let arguments = train(model, out: folder, steps: 4)
  var other = arguments
  other[other.firstIndex(of: "--lr")! + 1] = "0.01"
  let result = try run(
    try #require(mpirun),
    ["-np", "1", "--bind-to", "none", loracExecutable().path] + arguments
      + [":", "-np", "1", "--bind-to", "none", loracExecutable().path] + other,
    environment: mpiEnvironment)
  #expect(result.status != 0)
  #expect(
    result.stderr.contains("rank 1 disagrees with rank 0 on its settings"),
    "\(result.stderr)")
  #expect(
    !FileManager.default.fileExists(atPath: folder.appendingPathComponent("metrics.jsonl").path))
}

@Test(.enabled(if: mpirun != nil))
func aKilledRankStopsTheJobAndTheCheckpointResumes() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let process = Process()
  process.executableURL = try #require(mpirun)
  process.arguments =
    ["-np", "2", "--bind-to", "none", loracExecutable().path]
    + train(model, out: folder, steps: 400)
  process.environment = ProcessInfo.processInfo.environment.merging(mpiEnvironment) { $1 }
  process.standardOutput = FileHandle.nullDevice
  process.standardError = FileHandle.nullDevice
  try process.run()
  // Wait for the first checkpoint (step 5), then kill rank 1 with SIGKILL.
  let state = folder.appendingPathComponent("training_state.safetensors")
  let deadline = Date().addingTimeInterval(240)
  while !FileManager.default.fileExists(atPath: state.path) && Date() < deadline {
    Thread.sleep(forTimeInterval: 0.2)
  }
  try #require(FileManager.default.fileExists(atPath: state.path), "no checkpoint in 240 s")
  let rank1 = try #require(rankProcess(1, under: process.processIdentifier), "rank 1 not found")
  kill(rank1, SIGKILL)
  let killed = Date()
  while process.isRunning && Date().timeIntervalSince(killed) < 60 {
    Thread.sleep(forTimeInterval: 0.2)
  }
  let stopped = !process.isRunning
  if !stopped { process.terminate() }
  #expect(stopped, "the job still ran 60 s after a rank was killed")
  process.waitUntilExit()
  #expect(process.terminationStatus != 0)
  // The last checkpoint is whole: the run resumes from it, on two ranks, to a later step.
  let resumed = try mpi(
    2, train(model, out: folder, steps: 400) + ["--resume", "--stop-after", "12"])
  #expect(resumed.status == 0, "\(resumed.stderr)")
  #expect(try losses(folder).count == 12)
}

/// The pid of the process of `rank` among the descendants of `root` (Open MPI gives each rank
/// `OMPI_COMM_WORLD_RANK` in its environment).
private func rankProcess(_ rank: Int, under root: Int32) -> Int32? {
  guard let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
  for name in pids {
    guard let pid = Int32(name),
      let environment = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")),
      let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
      status.contains("Name:\tlorac")
    else { continue }
    let variables = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") && isDescendant(pid, of: root) {
      return pid
    }
  }
  return nil
}

private func isDescendant(_ pid: Int32, of root: Int32) -> Bool {
  var current = pid
  for _ in 0..<16 {
    guard let status = try? String(contentsOfFile: "/proc/\(current)/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("PPid:") }),
      let parent = Int32(line.dropFirst(5).trimmingCharacters(in: .whitespaces))
    else { return false }
    if parent == root { return true }
    if parent <= 1 { return false }
    current = parent
  }
  return false
}

@Test func thePlainBinaryDoesNotLinkMPI() throws {
  let result = try run(URL(fileURLWithPath: "/usr/bin/ldd"), [loracExecutable().path])
  #expect(result.status == 0)
  #expect(!result.stdout.contains("libmpi"), "\(result.stdout)")
  // And a plain run starts without MPI's environment: one process, as before.
  #expect(try lorac(["train", "--help"]).status == 0)
}

@Test(.enabled(if: mpirun != nil))
func dpoOnTwoRanksTrainsAsOneProcessWithTwiceThePairs() throws {
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let data = folder.appendingPathComponent("pairs.jsonl")
  try """
  {"prompt": "The capital of France is", "chosen": " Paris.", "rejected": " a cheese."}
  {"prompt": "Two plus two is", "chosen": " four.", "rejected": " seven."}
  {"prompt": "The sky is", "chosen": " blue.", "rejected": " made of soup."}
  {"prompt": "Water is", "chosen": " wet.", "rejected": " a kind of rock."}
  """.write(to: data, atomically: true, encoding: .utf8)
  let model = try modelPath()
  func dpo(_ out: URL, batch: Int) -> [String] {
    [
      "dpo", model, "--data", data.path, "--out", out.path, "--batch", "\(batch)",
      "--steps", "6", "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}", "--warmup", "1",
      "--lr", "0.002", "--threads", "1",
    ]
  }
  let (one, two) = (folder.appendingPathComponent("one"), folder.appendingPathComponent("two"))
  let single = try lorac(dpo(one, batch: 2))
  #expect(single.status == 0, "\(single.stderr)")
  let parallel = try mpi(2, dpo(two, batch: 1))
  #expect(parallel.status == 0, "\(parallel.stderr)")
  // The same pairs per step; the mean over two pairs is taken in the graph by one process and
  // across the ranks by two, so the sums round differently: measured 1.2e-6 relative at most.
  let (a, b) = (try losses(one), try losses(two))
  #expect(a.count == 6 && b.count == 6)
  for (step, (x, y)) in zip(a, b).enumerated() {
    #expect(abs(x - y) <= 1e-5 * abs(x), "step \(step + 1): \(x) against \(y)")
  }
  // And it learns: the loss leaves ln 2 (the policy starts equal to the reference).
  #expect(a.last.map { $0 < 0.6 } == true, "\(a)")
  // Rank 0 alone wrote: one metrics line per step.
  #expect(parallel.stderr.components(separatedBy: "step 6/6").count == 2, "\(parallel.stderr)")
}

@Test(.enabled(if: mpirun != nil))
func aRankThatFailsAloneStopsEveryRank() throws {
  // Rank 1 cannot read its data; rank 0 would otherwise wait for it in the first collective.
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let good = train(model, out: folder, steps: 4)
  let missing = folder.appendingPathComponent("missing.jsonl").path
  var bad = good
  bad.replaceSubrange(2..<4, with: ["--data", missing])
  let started = Date()
  let result = try run(
    try #require(mpirun),
    ["-np", "1", "--bind-to", "none", loracExecutable().path] + good
      + [":", "-np", "1", "--bind-to", "none", loracExecutable().path] + bad,
    environment: mpiEnvironment)
  #expect(result.status != 0)
  #expect(Date().timeIntervalSince(started) < 60)
  #expect(
    result.stderr.contains("error: rank 1: \(missing): cannot open"), "\(result.stderr)")
  // Ranks with other thread counts would drift apart: refused before the first step.
  var twoThreads = good
  twoThreads[twoThreads.firstIndex(of: "--threads")! + 1] = "2"
  let threads = try run(
    try #require(mpirun),
    ["-np", "1", "--bind-to", "none", loracExecutable().path] + good
      + [":", "-np", "1", "--bind-to", "none", loracExecutable().path] + twoThreads,
    environment: mpiEnvironment)
  #expect(threads.status != 0)
  #expect(
    threads.stderr.contains("rank 1 disagrees with rank 0 on its threads"), "\(threads.stderr)")
}

@Test(.enabled(if: mpirun != nil))
func aChecksumMismatchStopsTheRunAndKeepsThePreviousCheckpoint() throws {
  let model = try modelPath()
  let (folder, reference) = (try temporaryFolder(), try temporaryFolder())
  defer { for url in [folder, reference] { try? FileManager.default.removeItem(at: url) } }
  // The test hook changes one adapter value on rank 1 before the checksum of step 10 (the second
  // checkpoint); the first checkpoint, at step 5, was written by agreeing ranks.
  let result = try mpi(
    2, train(model, out: folder, steps: 20),
    environment: ["LORAC_TEST_PERTURB_RANK": "1", "LORAC_TEST_PERTURB_FROM": "10"])
  #expect(result.status != 0)
  #expect(
    result.stderr.contains("the ranks' adapters differ after step 10 (rank 0 "),
    "\(result.stderr)")
  #expect(
    result.stderr.contains("; stopping before a checkpoint is written"), "\(result.stderr)")
  #expect(!result.stderr.contains("step 11/20"), "\(result.stderr)")
  // The checkpoint of step 5 is intact: its metrics, and the adapter one process writes after the
  // same 5 steps (two ranks train bit for bit as one process accumulating two micro-batches).
  #expect(try losses(folder).count == 5)
  let stopped = try lorac(
    train(model, out: reference, steps: 20) + ["--accumulate", "2", "--stop-after", "5"])
  #expect(stopped.status == 0, "\(stopped.stderr)")
  #expect(try losses(reference) == losses(folder))
  #expect(
    try Data(contentsOf: folder.appendingPathComponent("adapter_model.safetensors"))
      == Data(contentsOf: reference.appendingPathComponent("adapter_model.safetensors")))
  // Without the hook the same job passes the check (the hook, not the ranks, made the mismatch).
  let clean = try mpi(2, train(model, out: folder, steps: 10) + ["--resume"])
  #expect(clean.status == 0, "\(clean.stderr)")
  #expect(try losses(folder).count == 10)
}

// MARK: - RLHF

/// A small `lorac rlhf` run: 4 samples of 4 tokens, 2 minibatches of 2 rows, 1 thread a process.
private func rlhf(_ model: String, out: URL, phases: Int = 3) -> [String] {
  [
    "rlhf", model, "--out", out.path, "--reward", "char-count:e", "--phases", "\(phases)",
    "--batch", "4", "--gen-len", "4", "--minibatches", "2", "--batches-per-phase", "1",
    "--rank", "2", "--targets", "layers.{0,1}.attn.{q,v}", "--lr", "0.01", "--head-lr", "0.01",
    "--kl-coef", "0.2", "--seed", "7", "--threads", "1", "--show-every", "0", "--save-every", "1",
  ]
}

/// metrics.jsonl of an RLHF run: one dictionary per phase.
private func phases(_ folder: URL) throws -> [[String: Double]] {
  try String(contentsOf: folder.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    .split(separator: "\n").map { line in
      let object = try #require(
        JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      return object.compactMapValues { ($0 as? NSNumber)?.doubleValue }
    }
}

@Test(.enabled(if: mpirun != nil))
func rlhfOnTwoRanksMatchesOneProcess() throws {
  let model = try modelPath()
  let (single, parallel, again) = (
    try temporaryFolder(), try temporaryFolder(), try temporaryFolder()
  )
  defer { for url in [single, parallel, again] { try? FileManager.default.removeItem(at: url) } }
  // One process cutting every minibatch (and the rollout) in two runs, against two ranks taking
  // one run each.
  let one = try lorac(rlhf(model, out: single) + ["--accumulate", "2"])
  #expect(one.status == 0, "\(one.stderr)")
  let two = try mpi(2, rlhf(model, out: parallel))
  #expect(two.status == 0, "\(two.stderr)")
  // Rank 0 alone printed progress.
  #expect(two.stderr.components(separatedBy: "phase 3/3").count == 2, "\(two.stderr)")
  let (a, b) = (try phases(single), try phases(parallel))
  #expect(a.count == 3 && b.count == 3)
  // Every row samples from its own stream and the runs have the same shapes, so the rows, the
  // rewards and every figure are the same; the two runs' gradients are summed as a + b either
  // way (bound: 1e-6 relative; expected and measured: equal).
  for (phase, (x, y)) in zip(a, b).enumerated() {
    for field in [
      "reward_mean", "reward_std", "kl", "entropy", "clipfrac", "policy_loss", "value_loss", "lr",
    ] {
      let (p, q) = (try #require(x[field]), try #require(y[field]))
      #expect(abs(p - q) <= 1e-6 * abs(p), "phase \(phase + 1) \(field): \(p) vs \(q)")
      #expect(p == q, "phase \(phase + 1) \(field): \(p) vs \(q) (not bit for bit)")
    }
  }
  // The run learned something: the policy left the reference.
  #expect(a.last?["kl"].map { $0 > 0 } == true, "\(a)")
  for file in ["adapter_model.safetensors", "value_head.safetensors"] {
    #expect(
      try Data(contentsOf: single.appendingPathComponent(file))
        == Data(contentsOf: parallel.appendingPathComponent(file)), "\(file)")
  }
  // The summation order is fixed: a rerun of the two ranks gives the same bits.
  let rerun = try mpi(2, rlhf(model, out: again))
  #expect(rerun.status == 0, "\(rerun.stderr)")
  for file in ["adapter_model.safetensors", "value_head.safetensors"] {
    #expect(
      try Data(contentsOf: again.appendingPathComponent(file))
        == Data(contentsOf: parallel.appendingPathComponent(file)), "\(file)")
  }
  // Three ranks cannot share minibatches of 2 rows; two cannot share one run.
  let three = try mpi(3, rlhf(model, out: again))
  #expect(three.status != 0)
  #expect(
    three.stderr.contains(
      "--batch 4 with --minibatches 2 makes minibatches of 2 rows, which 3 ranks cannot share "
        + "equally"), "\(three.stderr)")
  let oneRun = try mpi(2, rlhf(model, out: again) + ["--accumulate", "1"])
  #expect(oneRun.status != 0)
  #expect(
    oneRun.stderr.contains("--accumulate 1 is not a multiple of the 2 ranks"), "\(oneRun.stderr)")
}

@Test(.enabled(if: mpirun != nil))
func rlhfRanksCompareAdapterAndValueHeadAtEveryCheckpoint() throws {
  let model = try modelPath()
  let folder = try temporaryFolder()
  defer { try? FileManager.default.removeItem(at: folder) }
  let result = try mpi(
    2, rlhf(model, out: folder),
    environment: ["LORAC_TEST_PERTURB_RANK": "1", "LORAC_TEST_PERTURB_FROM": "2"])
  #expect(result.status != 0)
  #expect(
    result.stderr.contains(
      "the ranks' adapters and value heads differ after phase 2 (rank 0 "), "\(result.stderr)")
  // Phase 1's checkpoint is intact, and one process (any number of ranks dividing the
  // minibatch) resumes it to the end.
  let first = try phases(folder)
  #expect(first.count == 1)
  let resumed = try lorac(rlhf(model, out: folder) + ["--resume"])
  #expect(resumed.status == 0, "\(resumed.stderr)")
  let all = try phases(folder)
  #expect(all.count == 3)
  #expect(all.first?["reward_mean"] == first.first?["reward_mean"])
}
