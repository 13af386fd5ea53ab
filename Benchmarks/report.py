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
    """Maps each benchmark name to (p50 wall clock in µs, p50 mallocs)."""
    result = {}
    name = None
    for line in output.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("│", "╒", "╞", "├", "╘", "=")) and "│" not in stripped:
            name = stripped
            continue
        cells = [cell.strip() for cell in stripped.strip("│").split("│")]
        if name and len(cells) >= 4 and cells[0].startswith(("Time (wall clock)", "Malloc (total)")):
            value = float(cells[3].replace(",", ""))
            wall, mallocs = result.get(name, (None, None))
            if cells[0].startswith("Time"):
                unit = re.search(r"\((\w+)\) \*?$", cells[0])
                scale = {"ns": 0.001, "μs": 1.0, "us": 1.0, "ms": 1000.0, "s": 1e6}.get(unit.group(1) if unit else "μs", 1.0)
                wall = value * scale
            else:
                mallocs = value
            result[name] = (wall, mallocs)
    return result


def table(target, figures):
    lines = [f"### {target}", "", "| benchmark | median | mallocs | ratio | floor | met |", "|---|---:|---:|---:|---:|:---:|"]
    for name, baseline, floor in COMPARISONS[target]:
        if name not in figures:
            lines.append(f"| {name} | missing | | | | |")
            continue
        wall, mallocs = figures[name]
        ratio = "" if baseline is None else f"{wall / figures[baseline][0]:.2f}×"
        met = "" if floor is None else ("yes" if wall / figures[baseline][0] <= floor else "**no**")
        floor_text = "" if floor is None else f"≤ {floor:.2f}×"
        lines.append(f"| {name} | {wall:,.1f} µs | {mallocs:.0f} | {ratio} | {floor_text} | {met} |")
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
