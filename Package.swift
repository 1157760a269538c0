// swift-tools-version:6.0
// reelql — a native Swift video-understanding pipeline (Qwen2-VL family) for Linux CPUs.
import PackageDescription

let package = Package(
    name: "reelql",
    products: [
        .executable(name: "reelql", targets: ["reelql"]),
        .library(name: "Media", targets: ["Media"]),
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "VLM", targets: ["VLM"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
        .library(name: "Pipeline", targets: ["Pipeline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // System libraries (see Sources/C*/module.modulemap). Debian packages named in `providers`.
        .systemLibrary(
            name: "CFFmpeg",
            pkgConfig: "libavformat",
            providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavutil-dev", "libswscale-dev"])]
        ),
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),

        .systemLibrary(
            name: "CDNNL",
            providers: [.apt(["libdnnl-dev"])]
        ),
        // SIMD kernels in C: AVX-512 / AVX2 / portable versions chosen at run time.
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])]
        ),

        // Tensor storage, safetensors checkpoints, GEMM/GEMV, norms, activations, attention.
        .target(name: "Tensors", dependencies: ["COpenBLAS", "CDNNL", "CKernels"]),

        // Byte-level BPE tokenizers from tokenizer.json.
        .target(name: "Tokenizers"),

        // Qwen2-VL: configuration, processor, vision tower (and later the language model).
        .target(name: "VLM", dependencies: ["Tensors", "Tokenizers", "Media"]),

        // The overnight pipeline: specs, directory scan, runner, SQLite store, shards, merge.
        .target(name: "Pipeline", dependencies: [
            "VLM", "Media", "Tokenizers", "Tensors",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Yams", package: "Yams"),
        ]),

        // Video ingestion: probe, frame index, sampling, decoding, resizing, clip segmentation.
        .target(name: "Media", dependencies: ["CFFmpeg"]),

        // The command-line tool: thin commands over the libraries.
        .executableTarget(
            name: "reelql",
            dependencies: [
                "Media",
                "Tensors",
                "VLM",
                "Tokenizers",
                "Pipeline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "MediaTests", dependencies: ["Media"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "CKernels"]),
        .testTarget(name: "VLMTests", dependencies: ["VLM", "Tensors", "Media"]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline", "Media", "VLM", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "ReelqlCLITests", dependencies: ["reelql", "Media", "VLM", "Tokenizers", "Tensors", "Pipeline",
                                                          .product(name: "GRDB", package: "GRDB.swift")]),
    ]
)
