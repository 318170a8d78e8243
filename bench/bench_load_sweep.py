"""A simulated load sweep as one command: wall time, and where it goes.

Target (issue: load curves): a 6-point sweep of 2048 requests (Llama-3.1-8B, H100, sarathi-512,
chat) in <= 3 s as one `capsim simulate` command on this machine, files and plots included.

    python bench/bench_load_sweep.py [--repeats 3]

Each command runs in a fresh process (imports and the latency model included), best of
--repeats; the sweeps: six rates from light load to past saturation, and GuideLLM's automatic
sweep (one user, all at once, then six rates: eight trials).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

BASE = [
    "simulate",
    "--model",
    "Llama-3.1-8B",
    "--hardware",
    "H100",
    "--scheduler",
    "sarathi",
    "--chunk-size",
    "512",
    "--trace",
    "chat",
    "-n",
    "2048",
    "--goodput",
    "ttft:2000 tpot:100",
]
SWEEPS = {
    "6 rates: --qps 1,2,4,6,8,10": ["--qps", "1,2,4,6,8,10"],
    "automatic: --qps auto (8 trials)": ["--qps", "auto"],
    "one rate: --qps 4": ["--qps", "4"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'sweep':<36}{'command s (best)':>18}{'median':>9}")
    for name, flags in SWEEPS.items():
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "capsim.capsearch.cli", *BASE, *flags, "-o", f"{folder}/out"],
                    check=True,
                    capture_output=True,
                )
                times.append(time.perf_counter() - start)
        times.sort()
        print(f"{name:<36}{times[0]:>18.2f}{times[len(times) // 2]:>9.2f}")


if __name__ == "__main__":
    main()
