#!/usr/bin/env bash
# Quick start, command 2: builds everything (warnings are errors in our targets) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
BGW_NEED_POSTGRES=1 source scripts/ensure-deps.sh
swift build --build-tests
# The examples must run, too.
swift run loop-demo >/dev/null
swift run supervisor-demo --seconds 2 >/dev/null
swift run task-group-example >/dev/null
# As users run it: Swift Testing's default parallelism. Tests that change process-wide state run in a fixture
# process of their own.
swift test "$@"
# The Hummingbird example is a package of its own (the root build stays free of Hummingbird): its tests run
# with the whole suite, not with a filtered one.
if [ "$#" -eq 0 ]; then
    (cd Examples/hummingbird-jobs && swift test)
fi
