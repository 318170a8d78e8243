"""One simulated trial: wall time and peak memory, and how the cost grows with the trace.

Targets (issue: sim): a 2048-request trial on `chat` near capacity, Llama-3-8B on H100, sarathi
(chunk 512): <= 0.25 s in process, <= 1.5 s for the whole `capsim simulate` command, <= 300 MB
peak RSS; cost linear in the number of requests (2k, 20k, 200k).
Targets (issue: decode stretches): the 2048-request `chat` trial of Llama-3.1-8B on H100 with
sarathi-512 <= 0.1 s at every load (1, 2, 4, 7.5, 12 QPS), with decode stretches against the
iteration-by-iteration path; 200k requests at 4 QPS, both ways.

    python bench/bench_simulate.py [--qps 5.5] [--skip-200k]

Each size runs in a fresh interpreter so that its peak RSS is its own; in-process time is the
best of three (the latency model is fitted once and cached beforehand). A result's batch table is
built on first use (writing files, a summary); a capacity search never uses it: its cost is
shown on its own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADS = """
import resource, sys, time
from capsim.sim import SystemSpec, simulate
from capsim.traces import WorkloadSpec
n, stretches = int(sys.argv[1]), sys.argv[2] == "1"
system = SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512)
system.latency_model()
for qps in map(float, sys.argv[3:]):
    workload = WorkloadSpec("chat", num_requests=n, seed=0).at_qps(qps)
    best = float("inf")
    for _ in range(3 if n <= 20000 else 1):
        start = time.perf_counter()
        result = simulate(system, workload, decode_stretches=stretches)
        best = min(best, time.perf_counter() - start)
    start = time.perf_counter()
    rows = result.batches.num_rows  # the batch table is built on first use (a search never uses it)
    print(qps, best, rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - start)
"""

CHILD = """
import resource, sys, time
from capsim.sim import SystemSpec, simulate
from capsim.traces import WorkloadSpec
n, qps = int(sys.argv[1]), float(sys.argv[2])
system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512)
system.latency_model()
workload = WorkloadSpec("chat", num_requests=n, seed=0).at_qps(qps)
best = float("inf")
for _ in range(3 if n <= 20000 else 1):
    start = time.perf_counter()
    result = simulate(system, workload)
    best = min(best, time.perf_counter() - start)
s = result.summary()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(best, rss, s["batches"]["count"], s["tbt_s"]["p99"], s["scheduling_delay_s"]["p50"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qps", type=float, default=5.5, help="near the capacity of this system on chat")
    parser.add_argument("--skip-200k", action="store_true")
    args = parser.parse_args()
    print("Llama-3.1-8B H100 sarathi-512, chat, 2048 requests: in-process s (best of 3)")
    print(
        f"{'QPS':>6}{'iterations':>12}{'per iteration':>15}{'decode stretches':>18}"
        f"{'speed-up':>10}{'batch table on use':>20}"
    )
    loads = ["1", "2", "4", "7.5", "12"]
    slow = subprocess.run(
        [sys.executable, "-c", LOADS, "2048", "0", *loads], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    fast = subprocess.run(
        [sys.executable, "-c", LOADS, "2048", "1", *loads], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for a, b in zip(slow, fast):
        if a:
            qps, t_slow, rows, _, _ = a.split()
            t_fast, t_table = float(b.split()[1]), float(b.split()[4])
            print(
                f"{qps:>6}{int(rows):>12}{float(t_slow):>15.3f}{t_fast:>18.3f}"
                f"{float(t_slow) / t_fast:>9.1f}x{t_table:>20.3f}"
            )
    if not args.skip_200k:
        for flag, words in (("0", "per iteration"), ("1", "decode stretches")):
            out = subprocess.run(
                [sys.executable, "-c", LOADS, "204800", flag, "4"], capture_output=True, text=True, check=True
            ).stdout.split()
            print(f"200k requests at 4 QPS, {words}: {float(out[1]):.1f} s, peak RSS {float(out[3]):.0f} MB")
    print()
    sizes = [2048, 20480] + ([204800] if not args.skip_200k else [])
    print(
        f"{'requests':>9}{'batches':>9}{'in-process s':>14}{'us/batch':>10}{'peak RSS MB':>13}"
        f"{'P99 TBT s':>11}{'P50 sched s':>12}"
    )
    for n in sizes:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(args.qps)], capture_output=True, text=True, check=True
        )
        seconds, rss, batches, tbt, delay = (float(x) for x in out.stdout.split())
        print(
            f"{n:>9}{int(batches):>9}{seconds:>14.3f}{seconds / batches * 1e6:>10.1f}{rss:>13.0f}"
            f"{tbt:>11.4f}{delay:>12.3f}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            str(Path(sys.executable).parent / "capsim"),
            "simulate",
            "--model",
            "Llama-3-8B",
            "--hardware",
            "H100-SXM",
            "--scheduler",
            "sarathi",
            "--chunk-size",
            "512",
            "--trace",
            "chat",
            "-n",
            "2048",
            "--qps",
            str(args.qps),
            "-o",
            tmp,
            "--overwrite",
        ]
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            runs.append(time.perf_counter() - start)
    print(f"whole command, interpreter start-up included (best of 3): {min(runs):.2f} s")
    pandas = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import pandas; print(time.perf_counter() - t)"],
        capture_output=True,
        text=True,
    )
    if pandas.returncode == 0:  # pyarrow imports pandas on its first array where it is installed
        print(
            f"  of which importing pandas: {float(pandas.stdout):.2f} s (installed here with the kernel-db extra; "
            "pyarrow loads it on first use; the default install has none)"
        )


if __name__ == "__main__":
    main()
