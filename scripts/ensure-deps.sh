#!/usr/bin/env bash
# Installs what building this package needs when it is missing: libuv's headers and pkg-config (Debian:
# libuv1-dev, pkg-config). Sourced by the quick-start scripts; safe to run again.
set -euo pipefail

missing=()
pkg-config --exists libuv 2>/dev/null || missing+=(libuv1-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# The tests (BGW_NEED_POSTGRES=1, set by scripts/test.sh) start throwaway PostgreSQL clusters: the server's
# programs (initdb, pg_ctl, postgres) and psql. Debian 12's `postgresql` is version 15.
if [ "${BGW_NEED_POSTGRES:-0}" = 1 ]; then
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
fi
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH (expected at /opt/swift/usr/bin)" >&2; exit 1; }
