"""One simulated trial: wall time and peak memory, and how the cost grows with the trace.

Targets (issue: sim): a 2048-request trial on `chat` near capacity, Llama-3-8B on H100, sarathi
(chunk 512): <= 0.25 s in process, <= 1.5 s for the whole `capsim simulate` command, <= 300 MB
peak RSS; cost linear in the number of requests (2k, 20k, 200k).

    python bench/bench_simulate.py [--qps 5.5] [--skip-200k]

Each size runs in a fresh interpreter so that its peak RSS is its own; in-process time is the
best of three (the latency model is fitted once and cached beforehand).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
print(best, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, s["batches"]["count"], s["tbt_s"]["p99"], s["scheduling_delay_s"]["p50"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qps", type=float, default=5.5, help="near the capacity of this system on chat")
    parser.add_argument("--skip-200k", action="store_true")
    args = parser.parse_args()
    sizes = [2048, 20480] + ([204800] if not args.skip_200k else [])
    print(f"{'requests':>9}{'batches':>9}{'in-process s':>14}{'us/batch':>10}{'peak RSS MB':>13}{'P99 TBT s':>11}{'P50 sched s':>12}")
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.qps)], capture_output=True, text=True, check=True)
        seconds, rss, batches, tbt, delay = (float(x) for x in out.stdout.split())
        print(f"{n:>9}{int(batches):>9}{seconds:>14.3f}{seconds / batches * 1e6:>10.1f}{rss:>13.0f}{tbt:>11.4f}{delay:>12.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(Path(sys.executable).parent / "capsim"), "simulate", "--model", "Llama-3-8B", "--hardware", "H100-SXM", "--scheduler", "sarathi",
                   "--chunk-size", "512", "--trace", "chat", "-n", "2048", "--qps", str(args.qps), "-o", tmp, "--overwrite"]
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            runs.append(time.perf_counter() - start)
    print(f"whole command, interpreter start-up included (best of 3): {min(runs):.2f} s")


if __name__ == "__main__":
    main()
