#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster (initdb in a temporary folder, Unix socket only, trust
# authentication; as `postgres` when run as root), with BGW_BENCH_PG_SOCKET_DIR, BGW_BENCH_PG_PORT and
# BGW_BENCH_PG_USER set, and always removes the cluster. Example, from this folder:
#   ./with-postgres.sh swift package --allow-writing-to-directory .benchmarkBaselines benchmark --target Database
set -euo pipefail
bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
dir=$(mktemp -d /tmp/bgw-bench-pg-XXXXXX)
port=$((20000 + RANDOM % 30000))
as=()
[ "$(id -u)" -eq 0 ] && { chown postgres: "$dir"; as=(runuser -u postgres --); }
cleanup() { "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
"${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync >/dev/null
printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = %d\nfsync = off\n" "$dir" "$port" >>"$dir/data/postgresql.conf"
"${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
BGW_BENCH_PG_SOCKET_DIR=$dir BGW_BENCH_PG_PORT=$port BGW_BENCH_PG_USER=postgres "$@"
