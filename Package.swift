// swift-tools-version:6.0
// lorac: an ahead-of-time compiler for LoRA fine-tuning and inference on CPUs.

import PackageDescription

let package = Package(
  name: "lorac",
  products: [
    .executable(name: "lorac", targets: ["lorac"]),
    .library(name: "IR", targets: ["IR"]),
    .library(name: "Passes", targets: ["Passes"]),
    .library(name: "Runtime", targets: ["Runtime"]),
    .library(name: "Models", targets: ["Models"]),
    .library(name: "Sessions", targets: ["Sessions"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
  ],
  targets: [
    // Libraries: no Swift package dependencies (DESIGN.md section 2).
    .target(name: "IR"),
    .target(name: "Passes", dependencies: ["IR"]),
    .target(name: "Runtime", dependencies: ["IR", "CKernels"], exclude: ["Kernels"]),
    // C kernels (OpenMP + OpenBLAS), always optimised: at -O0 they run about 10x slower.
    .target(
      name: "CKernels",
      path: "Sources/Runtime/Kernels",
      cSettings: [.unsafeFlags(["-O3", "-fopenmp", "-fno-math-errno"])],
      linkerSettings: [
        .linkedLibrary("openblas"), .linkedLibrary("omp5"), .linkedLibrary("m"),
      ]
    ),
    .target(name: "Models", dependencies: ["IR"]),
    // The application layer: training, decoding, evaluation; typed throwing APIs, no printing.
    .target(name: "Sessions", dependencies: ["IR", "Passes", "Runtime", "Models"]),
    .executableTarget(
      name: "lorac",
      dependencies: [
        "Sessions", "IR", "Passes", "Runtime", "Models", "KernelBench", "ModelBench",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    ),
    // Small programs on the public library API only; the tests build and run them.
    .executableTarget(name: "xor", dependencies: ["Sessions", "Models", "IR"], path: "Examples/xor"),
    .executableTarget(
      name: "finetune", dependencies: ["Sessions", "Models", "Runtime"], path: "Examples/finetune"),
    .executableTarget(
      name: "LoracBench",
      dependencies: ["IR", "Models", "Runtime", "KernelBench"],
      path: "Benchmarks/LoracBench"
    ),
    // Helpers every test target shares (paths, the model, temporary files, .npy, running lorac).
    .target(name: "TestSupport", dependencies: ["IR", "Models"], path: "Tests/TestSupport"),
    .testTarget(name: "IRTests", dependencies: ["IR", "TestSupport"], exclude: ["Invalid"]),
    // Kernel and fused-op benchmarks (they build IR, which the runtime never does).
    .target(
      name: "KernelBench", dependencies: ["IR", "Runtime", "CKernels"], path: "Benchmarks/KernelBench"),
    // Model benchmarks: train steps, prefill and decoding of a GGUF model through the sessions.
    .target(
      name: "ModelBench",
      dependencies: ["Sessions", "Models", "Runtime", "IR", "Passes", "KernelBench"],
      path: "Benchmarks/ModelBench"),
    .testTarget(
      name: "PassesTests",
      dependencies: ["Passes", "IR", "Models", "Runtime", "CKernels", "TestSupport"],
      exclude: ["Golden"]),
    .testTarget(
      name: "RuntimeTests",
      dependencies: ["Runtime", "IR", "CKernels", "Models", "Passes", "TestSupport"]),
    .testTarget(
      name: "ModelsTests", dependencies: ["Models", "IR", "Runtime", "CKernels", "TestSupport"],
      exclude: ["Golden"]),
    .testTarget(
      name: "LoracTests", dependencies: ["lorac", "IR", "Models", "Runtime", "TestSupport"]),
    // The examples are dependencies so that the tests that run them find them built.
    .testTarget(
      name: "SessionsTests",
      dependencies: ["Sessions", "Models", "Runtime", "IR", "TestSupport", "xor", "finetune"]),
  ]
)
