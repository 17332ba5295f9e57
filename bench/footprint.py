"""Idle footprint of `forewarn run` on the built-in default config.

    python bench/footprint.py [--warmup 15] [--window 120]

Starts the daemon with no config file (the built-in default: cpu, load, memory, swap, disk and
sensors probes with their rules) and a throw-away state directory, waits for the warm-up, then
measures its CPU time over the window and its RSS at the end. Prints one `name value unit` line
per figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured")
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="forewarn-bench-")
    env = {k: v for k, v in os.environ.items() if k != "FOREWARN_CONFIG"}
    env["STATE_DIRECTORY"] = state
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        print(f"warming up {args.warmup:g}s, then measuring {args.window:g}s ...", file=sys.stderr)
        time.sleep(args.warmup)
        daemon = psutil.Process(proc.pid)
        before = daemon.cpu_times()
        time.sleep(args.window)
        after = daemon.cpu_times()
        rss = daemon.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(state, ignore_errors=True)
    cpu = (after.user + after.system - before.user - before.system) / args.window
    print(f"idle_rss {rss / 2**20:.1f} MiB")
    print(f"idle_cpu {100 * cpu:.2f} %")


if __name__ == "__main__":
    main()
