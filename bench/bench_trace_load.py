"""Loading a 1,000,000-row CSV trace into a Workload: wall time and peak RSS, per format.

Target (issue: foundation): <= 3 s and <= 600 MB peak RSS on a 2-core machine.

    python bench/bench_trace_load.py [--rows 1000000]

Each load runs in a fresh interpreter so that its peak RSS is its own; the time is of the load
alone (imports excluded), best of three runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys, time
from capsim.traces import load_trace
start = time.perf_counter()
w = load_trace(sys.argv[1])
elapsed = time.perf_counter() - start
print(len(w), elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_traces(folder: Path, rows: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, 8000, rows)
    output = rng.integers(1, 2000, rows)
    arrivals = np.cumsum(rng.exponential(0.1, rows))
    paths = {"sarathi (arrived_at)": folder / "sarathi.csv", "azure (date-times)": folder / "azure.csv"}
    with open(paths["sarathi (arrived_at)"], "w") as f:
        f.write("arrived_at,num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n")
        for t, p, o in zip(arrivals.round(6), prompt, output):
            f.write(f"{t},{p},{o},{p + o},{p / o}\n")
    stamps = np.datetime64("2023-11-16T18:00:00") + (arrivals * 1e7).astype("timedelta64[100ns]")
    with open(paths["azure (date-times)"], "w") as f:
        f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for t, p, o in zip(np.datetime_as_string(stamps), prompt, output):
            f.write(f"{t.replace('T', ' ')},{p},{o}\n")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_traces(Path(tmp), args.rows)
        print(f"{'format':<24}{'rows':>10}{'MB on disk':>12}{'load s':>10}{'peak RSS MB':>14}")
        for name, path in paths.items():
            runs = []
            for _ in range(3):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
                )
                runs.append([float(x) for x in out.stdout.split()])
            rows, seconds, rss = min(runs, key=lambda r: r[1])
            print(
                f"{name:<24}{int(rows):>10}{path.stat().st_size / 1e6:>12.1f}"
                f"{seconds:>10.2f}{max(r[2] for r in runs):>14.0f}"
            )


if __name__ == "__main__":
    main()
