// swift-tools-version: 6.2

import PackageDescription

/// One list of settings for every Swift target of this package.
///
/// Warnings are errors in our own targets (SwiftPM applies warning control only to root packages, so
/// packages that depend on this one are not affected).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "swift-background-workers",
    products: [
        .library(name: "BackgroundWorkers", targets: ["BackgroundWorkers"]),
        .library(name: "BackgroundWorkerContract", targets: ["BackgroundWorkerContract"]),
        .library(name: "BackgroundWorkerRuntime", targets: ["BackgroundWorkerRuntime"]),
        .library(name: "UVConcurrency", targets: ["UVConcurrency"]),
        .executable(name: "supervisor-demo", targets: ["SupervisorDemo"]),
        .executable(name: "task-group-example", targets: ["TaskGroupExample"]),
        .executable(name: "loop-demo", targets: ["LoopDemo"]),
        .executable(name: "swift-worker", targets: ["SwiftWorker"]),
        .executable(name: "bgworker-host", targets: ["bgworker-host"]),
        .library(name: "ExampleLibraryWorker", type: .dynamic, targets: ["ExampleLibraryWorker"]),
        .library(name: "BackgroundWorkerControl", targets: ["BackgroundWorkerControl"]),
        // Database workers: a separate product, so that users of the others never build SwiftNIO.
        .library(name: "BackgroundWorkersPostgres", targets: ["BackgroundWorkersPostgres"]),
        .executable(name: "worker-spi", targets: ["WorkerSPI"]),
        .executable(name: "bgworkerd", targets: ["bgworkerd"]),
        .executable(name: "bgworkerctl", targets: ["bgworkerctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        // BackgroundWorkersPostgres only.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // bgworkerd's configuration file (YAML; JSON is YAML too).
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        // bgworkerd's and bgworkerctl's command lines.
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        // Tests only: randomized event sequences for the supervisor's rules.
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // The machine's libuv (Debian: libuv1-dev), seen through a module map and `shim.h`.
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        // Out-of-line C helpers that Swift cannot express safely (thread identity, signal masks, descriptors).
        .target(
            name: "CWorkerSupport",
            // The worker runtime's main thread drains Dispatch's main queue (MainThread.c).
            linkerSettings: [.linkedLibrary("dispatch")]
        ),
        // The one AsyncSequence wrapper of the package's event, signal and reload sequences.
        .target(
            name: "StreamSequences",
            swiftSettings: swiftSettings
        ),
        // The libuv event loop as a Swift executor, with timers, signals, processes and pipes.
        .target(
            name: "UVConcurrency",
            dependencies: ["CLibUV", "CWorkerSupport", "StreamSequences"],
            swiftSettings: swiftSettings
        ),
        // The registration record, its validation, and the worker process contract: shared by the supervisor and
        // the worker runtime, knowing nothing of processes or libuv.
        .target(
            name: "BackgroundWorkerContract",
            swiftSettings: swiftSettings
        ),
        // The bgworker semantics: slots, generations, start phases, restart and crash rules, notification,
        // handles, events, shutdown modes, and the WorkerSupervisor actor on a UVEventLoop.
        .target(
            name: "BackgroundWorkers",
            dependencies: [
                "BackgroundWorkerContract",
                "BackgroundWorkerControl",
                "StreamSequences",
                "UVConcurrency",
                "CWorkerSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The worker side: a worker's own registration, readiness, SIGTERM as cancellation, SIGHUP as reloads,
        // supervisor-death detection. Knows nothing of the supervisor's internals.
        .target(
            name: "BackgroundWorkerRuntime",
            dependencies: ["BackgroundWorkerContract", "CWorkerSupport", "StreamSequences"],
            swiftSettings: swiftSettings
        ),
        // The control socket's wire protocol (JSON-RPC 2.0, one message per line): messages, codes, codec.
        .target(
            name: "BackgroundWorkerControl",
            dependencies: ["BackgroundWorkerContract"],
            swiftSettings: swiftSettings
        ),
        // Database workers: `initializeConnection` on a real PostgreSQL server (postgres-nio), and the startup
        // step that waits for the server. Depends on the worker runtime, never on the supervisor.
        .target(
            name: "BackgroundWorkersPostgres",
            dependencies: [
                "BackgroundWorkerRuntime",
                "BackgroundWorkerContract",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // PostgreSQL's worker_spi, ported: a supervisor with N static counter workers and a launcher.
        .executableTarget(
            name: "WorkerSPI",
            dependencies: [
                "BackgroundWorkers", "BackgroundWorkerRuntime", "BackgroundWorkersPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/worker-spi",
            swiftSettings: swiftSettings
        ),
        // The daemon's parts: its configuration file, the socket folder and pid file, signals and reloads.
        .target(
            name: "BackgroundWorkersDaemon",
            dependencies: [
                "BackgroundWorkers", "BackgroundWorkerRuntime", "UVConcurrency", "CWorkerSupport",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The daemon: a WorkerSupervisor with a configuration file, serving its control socket.
        .executableTarget(
            name: "bgworkerd",
            dependencies: [
                "BackgroundWorkersDaemon", "BackgroundWorkerRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The operators' command line for a running bgworkerd.
        .executableTarget(
            name: "bgworkerctl",
            dependencies: [
                "BackgroundWorkers", "BackgroundWorkerControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // A database worker for tests, one mode per case (not a product).
        .executableTarget(
            name: "FixtureDatabaseWorker",
            dependencies: [
                "BackgroundWorkerRuntime", "BackgroundWorkersPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            path: "Tests/Fixtures/FixtureDatabaseWorker",
            swiftSettings: swiftSettings
        ),
        // Runs library entry points: dlopen + dlsym + call, inside the worker runtime.
        .executableTarget(
            name: "bgworker-host",
            dependencies: ["BackgroundWorkerRuntime"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ExampleLibraryWorker",
            dependencies: ["BackgroundWorkerRuntime"],
            path: "Examples/library-worker",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SwiftWorker",
            // CWorkerSupport: cws_gettid, for the test mode that checks the body runs on the main thread.
            dependencies: ["BackgroundWorkerRuntime", "CWorkerSupport"],
            path: "Examples/swift-worker",
            swiftSettings: swiftSettings
        ),
        // A control client in a process of its own, for the daemon's end-to-end tests (not a product).
        .executableTarget(
            name: "FixtureControlClient",
            dependencies: ["BackgroundWorkers"],
            path: "Tests/Fixtures/FixtureControlClient",
            swiftSettings: swiftSettings
        ),
        // A supervisor process for tests that kill one (not a product).
        .executableTarget(
            name: "FixtureSupervisor",
            dependencies: ["BackgroundWorkers", "BackgroundWorkerRuntime", "CWorkerSupport", "UVConcurrency", "TestSupport"],
            path: "Tests/Fixtures/FixtureSupervisor",
            swiftSettings: swiftSettings
        ),
        // The reliability suite (not a product): `swift run -c release ReliabilitySuite`, or `--short`.
        .executableTarget(
            name: "ReliabilitySuite",
            dependencies: [
                "BackgroundWorkers", "UVConcurrency", "CWorkerSupport", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/Reliability",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "SupervisorDemo",
            dependencies: [
                "BackgroundWorkers", "BackgroundWorkerRuntime", "UVConcurrency", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/supervisor-demo",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "TaskGroupExample",
            dependencies: ["BackgroundWorkers"],
            path: "Examples/task-group",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "LoopDemo",
            dependencies: ["UVConcurrency"],
            path: "Examples/loop-demo",
            swiftSettings: swiftSettings
        ),
        // Helpers shared by the test targets (reading a child's output, /proc checks, a collector).
        .target(
            name: "TestSupport",
            dependencies: ["UVConcurrency", "CWorkerSupport", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BackgroundWorkerControlTests",
            dependencies: ["BackgroundWorkerControl", "BackgroundWorkerContract"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BackgroundWorkersDaemonTests",
            dependencies: [
                "BackgroundWorkersDaemon", "BackgroundWorkers", "BackgroundWorkerControl", "UVConcurrency", "CWorkerSupport",
                "TestSupport", "bgworkerd", "bgworkerctl", "FixtureControlClient",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BackgroundWorkerContractTests",
            dependencies: ["BackgroundWorkerContract"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BackgroundWorkersTests",
            dependencies: [
                "BackgroundWorkers",
                "BackgroundWorkerContract",
                "UVConcurrency",
                "CWorkerSupport",
                "SwiftWorker",
                "FixtureSupervisor",
                "ReliabilitySuite",
                "bgworker-host",
                "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BackgroundWorkersPostgresTests",
            dependencies: [
                "BackgroundWorkers",
                "BackgroundWorkersPostgres",
                "TestSupport",
                "UVConcurrency",
                "CWorkerSupport",
                "WorkerSPI",
                "FixtureDatabaseWorker",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UVConcurrencyTests",
            dependencies: ["UVConcurrency", "CWorkerSupport", "TestSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
