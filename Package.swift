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
    .executableTarget(
      name: "lorac",
      dependencies: [
        "IR", "Passes", "Runtime", "Models", "KernelBench",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]
    ),
    .executableTarget(
      name: "LoracBench",
      dependencies: ["IR", "Models", "Runtime", "KernelBench"],
      path: "Benchmarks/LoracBench"
    ),
    // Kernel and fused-op benchmarks (they build IR, which the runtime never does).
    .target(
      name: "KernelBench", dependencies: ["IR", "Runtime", "CKernels"], path: "Benchmarks/KernelBench"),
    .testTarget(name: "IRTests", dependencies: ["IR"], exclude: ["Invalid"]),
    .testTarget(name: "PassesTests", dependencies: ["Passes", "IR", "Models", "Runtime", "CKernels"]),
    .testTarget(name: "RuntimeTests", dependencies: ["Runtime", "IR", "CKernels", "Models", "Passes"]),
    .testTarget(
      name: "ModelsTests", dependencies: ["Models", "IR", "Runtime", "CKernels"], exclude: ["Golden"]),
    .testTarget(name: "LoracTests", dependencies: ["lorac", "IR", "Models", "Runtime"]),
  ]
)
