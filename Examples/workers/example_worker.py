#!/usr/bin/env python3
"""A background worker in Python, following the worker process contract (no Swift involved).

It reads its registration from the BGW_* variables, maps the shared-memory segment when it has one, reports
readiness on descriptor 4, then works until one of three things happens:
  - SIGTERM (terminate, fast shutdown): it exits 1, as PostgreSQL's bgworker_die does;
  - end of file on descriptor 3 (the supervisor died): it exits 1 at once, leaving no orphan;
  - with --once: it exits 0 after its first unit of work (done: never restarted).
SIGUSR1 is a notification ("something changed: look again"), never a reason to stop: it handles it, then says
so with NOTIFY=1, so that other registrations may name it as their notify pid.

Usage: example_worker.py [--expect-main-arg N] [--once]
With --expect-main-arg, it refuses to report readiness (exits 3) unless BGW_MAIN_ARG is N.
"""
import mmap
import os
import select
import signal
import sys


def main() -> int:
    env = os.environ
    name = env["BGW_NAME"]
    main_arg = int(env["BGW_MAIN_ARG"])
    extra = bytes.fromhex(env["BGW_EXTRA"])
    alive_fd = int(env["BGW_ALIVE_FD"])
    ready_fd = int(env["BGW_READY_FD"]) if "BGW_READY_FD" in env else None

    if "--expect-main-arg" in sys.argv:
        expected = int(sys.argv[sys.argv.index("--expect-main-arg") + 1])
        if main_arg != expected:
            print(f"{name}: main argument {main_arg}, expected {expected}", file=sys.stderr)
            return 3

    segment = None
    if "BGW_SHM_FD" in env:
        segment = mmap.mmap(int(env["BGW_SHM_FD"]), int(env["BGW_SHM_SIZE"]), mmap.MAP_SHARED)

    # SIGTERM: finish the current unit of work, then exit 1 (restart per policy unless terminated).
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # SIGUSR1: a wake-up; its default action would end the process. Handled first, then announced.
    notifications = []
    signal.signal(signal.SIGUSR1, lambda *_: notifications.append(True))

    if ready_fd is not None:
        os.write(ready_fd, b"NOTIFY=1\n")
        os.write(ready_fd, b"READY=1\n")

    units = 0
    while not stopping:
        # One unit of work: count in shared memory when there is some, else locally.
        units += 1
        if segment is not None:
            segment[0:8] = units.to_bytes(8, "little")
        if "--once" in sys.argv:
            return 0
        # Wait up to a second, waking at once when the supervisor dies (end of file on descriptor 3).
        try:
            readable, _, _ = select.select([alive_fd], [], [], 1.0)
        except InterruptedError:
            continue
        if readable and os.read(alive_fd, 1) == b"":
            print(f"{name}: supervisor gone, exiting", file=sys.stderr)
            return 1
    _ = extra
    return 1


if __name__ == "__main__":
    sys.exit(main())
