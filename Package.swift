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
        .library(name: "UVConcurrency", targets: ["UVConcurrency"]),
        .executable(name: "loop-demo", targets: ["LoopDemo"]),
    ],
    targets: [
        // The machine's libuv (Debian: libuv1-dev), seen through a module map and `shim.h`.
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        // Out-of-line C helpers that Swift cannot express safely (thread identity, signal masks, descriptors).
        .target(name: "CWorkerSupport"),
        // The libuv event loop as a Swift executor, with timers, signals, processes and pipes.
        .target(
            name: "UVConcurrency",
            dependencies: ["CLibUV", "CWorkerSupport"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "LoopDemo",
            dependencies: ["UVConcurrency"],
            path: "Examples/loop-demo",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "UVConcurrencyTests",
            dependencies: ["UVConcurrency", "CWorkerSupport"],
            swiftSettings: swiftSettings
        ),
    ]
)
