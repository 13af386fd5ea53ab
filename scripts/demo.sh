#!/usr/bin/env bash
# Quick start, command 1: runs the main job on its built-in default configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
exec swift run supervisor-demo "$@"
