#!/usr/bin/env python3
"""Runs the benchmarks and prints the ratio tables of BENCHMARKS.md.

Every figure is a median (p50) of wall-clock time from one run of package-benchmark, and every ratio is taken
against a baseline measured in that same run, so the ratios hold even when the machine's absolute speed drifts.

Usage (from this folder):  python3 report.py [--target ExecutorHop|Spawn] [--input saved-output.txt]
"""
import argparse
import re
import subprocess
import sys

# (benchmark, baseline it is compared with, floor on the ratio or None)
COMPARISONS = {
    "Supervisor": [],
    "Worker": [
        ("register→exited: /bin/true (baseline)", None, None),
        ("register→exited: empty Swift main (baseline)", "register→exited: /bin/true (baseline)", None),
        ("register→exited: empty async Swift main (baseline)", "register→exited: empty Swift main (baseline)", None),
        # The floor (≤ 1.20× an empty main) is judged in the interleaved table: these separate cases run a minute
        # apart on a machine whose speed drifts by 10-20%.
        ("register→exited: Swift worker on the runtime, returning at once", "register→exited: empty Swift main (baseline)", None),
        ("register→ready: Swift worker on the runtime", "register→exited: empty Swift main (baseline)", None),
    ],
    "ExecutorHop": [
        ("hop: actor on a SwiftNIO EventLoop (baseline)", None, None),
        ("hop: actor on a UVEventLoop", "hop: actor on a SwiftNIO EventLoop (baseline)", 1.0),
        ("hop: actor on a UVEventLoop without spin", "hop: actor on a SwiftNIO EventLoop (baseline)", None),
        ("hop: actor on the default executor", "hop: actor on a SwiftNIO EventLoop (baseline)", None),
    ],
    "Spawn": [
        ("spawn→exit: C posix_spawn + waitpid (baseline)", None, None),
        ("spawn→exit: C uv_spawn + uv_run", "spawn→exit: C posix_spawn + waitpid (baseline)", None),
        ("spawn→exit: UVConcurrency posixSpawn, actor on the loop", "spawn→exit: C posix_spawn + waitpid (baseline)", 1.35),
        ("spawn→exit: UVConcurrency automatic, from a task (4 hops)", "spawn→exit: C posix_spawn + waitpid (baseline)", 1.35),
        ("spawn→exit: UVConcurrency libuv, actor on the loop", "spawn→exit: C posix_spawn + waitpid (baseline)", None),
    ],
}


def run(target):
    command = ["swift", "package", "--allow-writing-to-directory", ".benchmarkBaselines", "benchmark",
               "--no-progress", "--target", target]
    print("$ " + " ".join(command), file=sys.stderr)
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def medians(output):
    """Maps each benchmark name to {metric: p50}, times in µs, other values in their own unit."""
    result = {}
    name = None
    for line in output.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("│", "╒", "╞", "├", "╘", "=")) and "│" not in stripped:
            name = stripped
            continue
        cells = [cell.strip() for cell in stripped.strip("│").split("│")]
        if not name or len(cells) < 4 or not cells[0] or cells[0] == "Metric":
            continue
        try:
            value = float(cells[3].replace(",", ""))
        except ValueError:
            continue
        label = cells[0].rstrip(" *")
        scale = 1.0
        suffix = re.search(r" \((K|M)\)$", label)
        if suffix:
            scale = 1000.0 if suffix.group(1) == "K" else 1e6
            label = label[: suffix.start()]
        if label.startswith("Time (wall clock)"):
            unit = re.search(r"\((\w+)\)$", label)
            scale *= {"ns": 0.001, "μs": 1.0, "us": 1.0, "ms": 1000.0, "s": 1e6}.get(unit.group(1) if unit else "μs", 1.0)
            label = "time"
        elif label.startswith("Malloc (total)"):
            label = "mallocs"
        result.setdefault(name, {})[label] = value * scale
    return result


INTERLEAVED = {
    "ExecutorHop": ("hop interleaved: UVEventLoop vs SwiftNIO", "UVEventLoop hop (ns)", "SwiftNIO hop (ns)", "ratio UVEventLoop/SwiftNIO (‰)", "ns", 1.0),
    "Spawn": ("spawn→exit interleaved: UVConcurrency (actor on the loop) vs C posix_spawn", "UVConcurrency spawn→exit (µs)", "C posix_spawn spawn→exit (µs)", "ratio UVConcurrency/posix_spawn (‰)", "µs", 1.35),
}


def interleaved_table(target, figures):
    name, ours, base, ratio, unit, floor = INTERLEAVED[target]
    f = figures.get(name)
    if not f:
        return ""
    r = f.get(ratio, 0) / 1000
    return "\n".join([
        "", f"Interleaved in the same samples ({name}): medians of each side and of the per-sample ratio.", "",
        "| ours | baseline | median per-sample ratio | floor | met |", "|---:|---:|---:|---:|:---:|",
        f"| {f.get(ours, 0):,.0f} {unit} | {f.get(base, 0):,.0f} {unit} | {r:.2f}× | ≤ {floor:.2f}× | {'yes' if r <= floor else '**no**'} |",
    ])


WORKER_INTERLEAVED = "register→exited interleaved: empty main, empty async main, runtime worker"


def worker_interleaved_table(figures):
    f = figures.get(WORKER_INTERLEAVED)
    if not f:
        return ""
    empty, asynchronous, runtime = (f.get(k, 0) for k in ("empty Swift main (µs)", "empty async Swift main (µs)", "runtime worker (µs)"))
    versus_empty = f.get("ratio runtime/empty main (‰)", 0) / 1000
    versus_async = f.get("ratio runtime/empty async main (‰)", 0) / 1000
    return "\n".join([
        "", f"Interleaved in the same samples ({WORKER_INTERLEAVED}): medians of each side and of the per-sample ratios.", "",
        "| empty main | empty async main | runtime worker | runtime / empty main | floor | met | runtime / empty async main |",
        "|---:|---:|---:|---:|---:|:---:|---:|",
        f"| {empty:,.0f} µs | {asynchronous:,.0f} µs | {runtime:,.0f} µs | {versus_empty:.2f}× | ≤ 1.20× | {'yes' if versus_empty <= 1.2 else '**no**'} | {versus_async:.2f}× |",
    ])


def table(target, figures):
    if target == "Supervisor":
        return supervisor_table(figures)
    if target == "Worker":
        return plain_table(target, figures) + worker_interleaved_table(figures)
    return plain_table(target, figures) + (interleaved_table(target, figures) if target in INTERLEAVED else "")


def plain_table(target, figures):
    lines = [f"### {target}", "", "| benchmark | median | mallocs | ratio | floor | met |", "|---|---:|---:|---:|---:|:---:|"]
    for name, baseline, floor in COMPARISONS[target]:
        if name not in figures:
            lines.append(f"| {name} | missing | | | | |")
            continue
        wall, mallocs = figures[name]["time"], figures[name].get("mallocs", 0)
        ratio = "" if baseline is None else f"{wall / figures[baseline]['time']:.2f}×"
        met = "" if floor is None else ("yes" if wall / figures[baseline]["time"] <= floor else "**no**")
        floor_text = "" if floor is None else f"≤ {floor:.2f}×"
        lines.append(f"| {name} | {wall:,.1f} µs | {mallocs:.0f} | {ratio} | {floor_text} | {met} |")
    return "\n".join(lines)


def supervisor_table(f):
    def get(name, metric="time"):
        return f.get(name, {}).get(metric)

    call = get("C uv_spawn call→pid (baseline)")
    posix_call = get("C posix_spawn call→pid (baseline)")
    reaped = get("C uv_spawn spawn→reaped (baseline)")
    c_batch = get("C uv_spawn 640 children, ≤ 64 alive (baseline)")
    rows = [
        ("register → waitForStartup()", get("register→waitForStartup: WorkerSupervisor"), "C uv_spawn call→pid", call, "≤ 1.25×", lambda r: r <= 1.25),
        ("register → waitForStartup()", get("register→waitForStartup: WorkerSupervisor"), "C posix_spawn call→pid", posix_call, "≤ 2.50×", lambda r: r <= 2.5),
        ("register → waitForShutdown(), /bin/true", get("register→waitForShutdown, /bin/true: WorkerSupervisor"), "C uv_spawn spawn→reaped", reaped, "≤ 1.20×", lambda r: r <= 1.2),
        ("exit → restarted pid, interval 0", (get("exit→restarted pid, interval 0: WorkerSupervisor", "restart latency (ns)") or 0) / 1000, "C uv_spawn call→pid", call, "≤ 1.50×", lambda r: r <= 1.5),
    ]
    lines = ["### Supervisor", "", "| measure | supervisor (median) | baseline | baseline (median) | ratio | floor | met |", "|---|---:|---|---:|---:|---:|:---:|"]
    for label, ours, base_label, base, floor, check in rows:
        if ours is None or base is None:
            lines.append(f"| {label} | missing | {base_label} | | | {floor} | |")
            continue
        ratio = ours / base
        lines.append(f"| {label} | {ours:,.0f} µs | {base_label} | {base:,.0f} µs | {ratio:.2f}× | {floor} | {'yes' if check(ratio) else '**no**'} |")
    both = f.get("register→waitForStartup vs C posix_spawn call→pid, interleaved", {})
    if both:
        ratio = both.get("ratio supervisor/C (‰)", 0) / 1000
        lines.append(
            f"| register → waitForStartup(), interleaved | {both.get('register→waitForStartup (ns)', 0) / 1000:,.0f} µs | C posix_spawn call→pid, same samples "
            f"| {both.get('C posix_spawn call→pid (ns)', 0) / 1000:,.0f} µs | {ratio:.2f}× (median per-sample) | ≤ 2.50× | {'yes' if ratio <= 2.5 else '**no**'} |"
        )
    ours_batch = get("640 children, ≤ 64 alive: WorkerSupervisor")
    if ours_batch and c_batch:
        ours_rate, c_rate = 640 / (ours_batch / 1e6), 640 / (c_batch / 1e6)
        ratio = ours_rate / c_rate
        lines.append(f"| throughput, ≤ 64 alive | {ours_rate:,.0f} children/s | C uv_spawn | {c_rate:,.0f} children/s | {ratio:.2f}× | ≥ 0.90× | {'yes' if ratio >= 0.9 else '**no**'} |")
    big = f.get("1,000 sleeping workers: start all, resident memory, fast-stop all", {})
    lines += ["", "| 1,000 sleeping workers | median |", "|---|---:|"]
    for metric, unit in [("start all (ms)", "ms"), ("fast-stop all (ms)", "ms"), ("resident memory per worker (bytes)", "bytes"), ("resident memory before (KiB)", "KiB")]:
        value = big.get(metric)
        lines.append(f"| {metric.split(' (')[0]} | {'missing' if value is None else f'{value:,.0f} {unit}'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=sorted(COMPARISONS), action="append")
    parser.add_argument("--input", help="parse saved benchmark output instead of running")
    arguments = parser.parse_args()
    targets = arguments.target or sorted(COMPARISONS)
    for target in targets:
        output = open(arguments.input).read() if arguments.input else run(target)
        print(table(target, medians(output)))
        print()


if __name__ == "__main__":
    main()
