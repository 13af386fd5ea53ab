#!/usr/bin/env bash
# Installs what building this package needs when it is missing: libuv's headers and pkg-config (Debian:
# libuv1-dev, pkg-config). Sourced by the quick-start scripts; safe to run again.
set -euo pipefail

missing=()
pkg-config --exists libuv 2>/dev/null || missing+=(libuv1-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH (expected at /opt/swift/usr/bin)" >&2; exit 1; }
