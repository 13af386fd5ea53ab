#!/usr/bin/env bash
# Quick start, command 2: builds everything (warnings are errors in our targets) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
swift build --build-tests
# The examples must run, too.
swift run loop-demo >/dev/null
swift run supervisor-demo --seconds 2 >/dev/null
swift run task-group-example >/dev/null
# --no-parallel: the suites spawn real processes, send process-wide signals and count this process's
# descriptors and zombies; run one test at a time across test targets too.
exec swift test --disable-xctest --no-parallel "$@"
