// swift-tools-version: 6.1

import PackageDescription

// Benchmarks for swift-background-workers, a package of their own so that the library does not depend on
// package-benchmark or SwiftNIO. Run from this folder:
//   swift package --allow-writing-to-directory .benchmarkBaselines benchmark
// or `./report.sh` for the ratio tables of BENCHMARKS.md.
let package = Package(
    name: "swift-background-workers-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-background-workers", path: "../"),
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Baselines in C: posix_spawn + waitpid, and libuv's uv_spawn used directly.
        .target(
            name: "CSpawnBaseline",
            linkerSettings: [.linkedLibrary("uv")]
        ),
        .executableTarget(
            name: "ExecutorHop",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "UVConcurrency", package: "swift-background-workers"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/ExecutorHop",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Spawn",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "UVConcurrency", package: "swift-background-workers"),
                "CSpawnBaseline",
            ],
            path: "Benchmarks/Spawn",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "Supervisor",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
                "CSpawnBaseline",
            ],
            path: "Benchmarks/Supervisor",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // Diagnostics: which threads a hop runs on.
        .executableTarget(
            name: "HopProbe",
            dependencies: [
                .product(name: "UVConcurrency", package: "swift-background-workers"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "SupervisorProbe",
            dependencies: [
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Diagnostics: a built-in worker forked or exec'd in a loop.
        .executableTarget(
            name: "ForkProbe",
            dependencies: [
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Small helpers the benchmark targets share.
        .target(name: "BenchmarkSupport", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "BenchEmptyMain"),
        .executableTarget(name: "BenchEmptyAsyncMain", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "BenchSwiftWorker",
            dependencies: [.product(name: "BackgroundWorkerRuntime", package: "swift-background-workers")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "Worker",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
                "BenchEmptyMain",
                "BenchEmptyAsyncMain",
                "BenchSwiftWorker",
            ],
            path: "Benchmarks/Worker",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // The fork server (issue 13): a built-in Swift worker forked, against exec'd, against /bin/true.
        .executableTarget(
            name: "ForkServer",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
                "BenchSwiftWorker",
            ],
            path: "Benchmarks/ForkServer",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // The control socket: a client in another process than the supervisor (bgworkerd), against in process.
        .executableTarget(
            name: "Control",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "bgworkerd", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Control",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // A database worker: connects, reports ready, returns.
        .executableTarget(
            name: "BenchDatabaseWorker",
            dependencies: [
                .product(name: "BackgroundWorkerRuntime", package: "swift-background-workers"),
                .product(name: "BackgroundWorkersPostgres", package: "swift-background-workers"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Needs a server: run through ./with-postgres.sh.
        .executableTarget(
            name: "Database",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                "BenchDatabaseWorker",
                "BenchSwiftWorker",
            ],
            path: "Benchmarks/Database",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
