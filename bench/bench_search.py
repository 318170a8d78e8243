"""Capacity search speed, cold and from the trial cache.

Targets (issue: capsearch), on this 2-core machine:
- the three schedulers x two traces of mistral7b_strict, 2048 requests a trial: <= 60 s wall;
- rescoring a finished sweep at 10 new SLO values: <= 5 s.

    python bench/bench_search.py

Runs the `capsim` commands as a user does, with a fresh trial cache in a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPSIM = str(Path(sys.executable).parent / "capsim")


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([CAPSIM, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = ["--cache-dir", f"{tmp}/cache"]
        cold = timed(["search", "--config-path", "mistral7b_strict", *cache, "-o", f"{tmp}/strict"])
        rows = json.loads(Path(f"{tmp}/strict/capacity.json").read_text())
        trials = sum(len(r["trials"]) for r in rows)
        warm = timed(["search", "--config-path", "mistral7b_strict", *cache, "-o", f"{tmp}/strict2"])
        sweep = [
            "sweep",
            "--model",
            "Mistral-7B",
            "--hardware",
            "A100-80GB-SXM",
            "--scheduler",
            "sarathi",
            "--chunk-size",
            "512",
            "--trace",
            "chat",
            "--start-qps",
            "2",
            *cache,
        ]
        first = timed([*sweep, "--values", "0.05,0.07,0.1,0.14,0.2,0.3,0.5,0.7,1,2", "-o", f"{tmp}/sweep1"])
        rescore = timed([*sweep, "--values", "0.06,0.08,0.12,0.16,0.25,0.4,0.6,0.85,1.5,3", "-o", f"{tmp}/sweep2"])
        rescored = json.loads(Path(f"{tmp}/sweep2/sweep.json").read_text())
        new_trials = sum(1 for r in rescored for t in r["trials"] if not t["cached"])
        all_trials = sum(len(r["trials"]) for r in rescored)
    print(f"{'run':<58}{'wall s':>8}")
    print(f"{f'mistral7b_strict, 3 schedulers x 2 traces, cold ({trials} trials)':<58}{cold:>8.1f}")
    print(f"{'the same from the trial cache':<58}{warm:>8.1f}")
    print(f"{'sweep of P99 TBT at 10 values, cold cache for them':<58}{first:>8.1f}")
    print(f"{f'rescoring it at 10 new values ({new_trials} new of {all_trials} trials)':<58}{rescore:>8.1f}")


if __name__ == "__main__":
    main()
