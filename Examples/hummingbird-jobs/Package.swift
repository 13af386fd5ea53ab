// swift-tools-version: 6.1

import PackageDescription

// An async Swift server awaiting workers: a Hummingbird service that runs a worker per job through an
// in-process WorkerSupervisor or, with --socket, through bgworkerd's control socket (SupervisorClient).
// A package of its own, so that the root build stays lean. From this folder: swift run hummingbird-jobs
let package = Package(
    name: "hummingbird-jobs",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-background-workers", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    ],
    targets: [
        .target(
            name: "JobsService",
            dependencies: [
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "hummingbird-jobs",
            dependencies: ["JobsService", .product(name: "Hummingbird", package: "hummingbird")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "JobsServiceTests",
            dependencies: [
                "JobsService",
                .product(name: "BackgroundWorkers", package: "swift-background-workers"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
