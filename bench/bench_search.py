"""Capacity search speed, cold and from the trial cache.

Targets, on this 2-core machine:
- the default `capsim search` (Mistral-7B, mistral7b_strict + mistral7b_relaxed: 12 searches, 2048
  requests a trial), from a cold cache: <= 5 s (issue: planner speed);
- the three schedulers x two traces of mistral7b_strict: <= 60 s wall;
- rescoring a finished sweep at 10 new SLO values: <= 5 s.

    python bench/bench_search.py [--runs 3] [--capsim PATH]

Runs the `capsim` commands as a user does, each cold run with a fresh trial cache in a temporary
folder; prints the best of --runs and the spread. `--capsim` times another install's command
(an older revision, for a before-and-after).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPSIM = str(Path(sys.executable).parent / "capsim")
SWEEP = [
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
]


def timed(capsim: str, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([capsim, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def trial_counts(path: Path) -> str:
    rows = json.loads(path.read_text())
    trials = [t for r in rows for t in r["trials"]]
    short = sum(1 for t in trials if t.get("screen"))
    return f"{len(trials) - short} full + {short} short" if short else f"{len(trials)} trials"


def cold(capsim: str, args: list[str], runs: int, name: str) -> tuple[list[float], str]:
    """Each run with a new cache and output folder; the trial counts of the last."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(timed(capsim, [*args, "--cache-dir", f"{tmp}/cache", "-o", f"{tmp}/out"]))
            counts = trial_counts(Path(f"{tmp}/out/{name}.json"))
    return times, counts


def spread(times: list[float]) -> str:
    return f"{min(times):.2f} ({min(times):.2f}-{max(times):.2f})" if len(times) > 1 else f"{times[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--capsim", default=CAPSIM, help="the capsim command to time")
    args = parser.parse_args()
    rows = []
    times, counts = cold(args.capsim, ["search"], args.runs, "capacity")
    rows.append((f"default `capsim search`: 12 searches, cold ({counts})", spread(times)))
    times, counts = cold(args.capsim, ["search", "--config-path", "mistral7b_strict"], args.runs, "capacity")
    rows.append((f"mistral7b_strict: 3 schedulers x 2 traces, cold ({counts})", spread(times)))
    with tempfile.TemporaryDirectory() as tmp:
        cache = ["--cache-dir", f"{tmp}/cache"]
        timed(args.capsim, ["search", "--config-path", "mistral7b_strict", *cache, "-o", f"{tmp}/strict"])
        warm = [
            timed(args.capsim, ["search", "--config-path", "mistral7b_strict", *cache, "-o", f"{tmp}/warm{i}"])
            for i in range(args.runs)
        ]
        rows.append(("the same from the trial cache", spread(warm)))
        values = "0.05,0.07,0.1,0.14,0.2,0.3,0.5,0.7,1,2"
        first = timed(args.capsim, [*SWEEP, *cache, "--values", values, "-o", f"{tmp}/sweep1"])
        counts = trial_counts(Path(tmp, "sweep1", "sweep.json"))
        rows.append((f"sweep of P99 TBT at 10 values, cold cache for them ({counts})", f"{first:.2f}"))
        new_values = "0.06,0.08,0.12,0.16,0.25,0.4,0.6,0.85,1.5,3"
        rescore = timed(args.capsim, [*SWEEP, *cache, "--values", new_values, "-o", f"{tmp}/sweep2"])
        rescored = json.loads(Path(f"{tmp}/sweep2/sweep.json").read_text())
        new_trials = sum(1 for r in rescored for t in r["trials"] if not t["cached"])
        all_trials = sum(len(r["trials"]) for r in rescored)
        rows.append((f"rescoring it at 10 new values ({new_trials} new of {all_trials} trials)", f"{rescore:.2f}"))
    width = max(len(name) for name, _ in rows) + 2
    print(f"{'run':<{width}}{f'wall s, best of {args.runs} (spread)':>28}")
    for name, value in rows:
        print(f"{name:<{width}}{value:>28}")


if __name__ == "__main__":
    main()
