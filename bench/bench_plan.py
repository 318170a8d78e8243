"""The planner from a cold trial cache: candidates, how many the bound cut, searches, wall time.

Target (issue: capsim plan): >= 200 candidate configurations in <= 3 minutes on this 2-core
machine from a cold cache.

    python bench/bench_plan.py [--model Llama-3.1-8B] [--target-qps 20] [--runs cold,warm]
    python bench/bench_plan.py --gpus 8 --hardware H100 --disagg     # the disaggregated plan

Trials: the trials simulated (the entries the trial cache holds after the run); plan.csv's
`trials` column says which trials ranked each candidate.

Runs `capsim plan` over the default space (every priced GPU x TP 1,2,4,8 x sarathi 512/1024/2048,
vllm_v1 2048/8192, vllm_v0 x batch 64/128/256) with a fresh cache folder, then again with that
cache (warm).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from capsim.capsearch.capacity.cache_folder import ENTRY_SUFFIX


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Llama-3.1-8B")
    parser.add_argument("--target-qps", type=float, default=None)
    parser.add_argument("--gpus", type=int, default=None)
    parser.add_argument("--hardware", default=None)
    parser.add_argument("--disagg", action="store_true")
    parser.add_argument("--runs", default="cold,warm")
    args = parser.parse_args()
    goal = ["--gpus", str(args.gpus)] if args.gpus else ["--target-qps", str(args.target_qps or 20.0)]
    extra = (["--hardware", args.hardware] if args.hardware else []) + (["--disagg"] if args.disagg else [])
    print(
        f"{'run':<6}{'candidates':>11}{'searched':>10}{'cut by bound':>14}{'no fit':>8}{'trials':>8}{'wall s':>8}"
        "  recommended"
    )
    with tempfile.TemporaryDirectory() as folder:
        for run in args.runs.split(","):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "capsim.capsearch.cli",
                    "plan",
                    "--model",
                    args.model,
                    *goal,
                    *extra,
                    "--ttft-metric",
                    "ttft",
                    "--cache-dir",
                    f"{folder}/cache",
                    "-o",
                    f"{folder}/{run}",
                ],
                check=True,
                capture_output=True,
            )
            seconds = time.perf_counter() - start
            rows = list(csv.DictReader(open(f"{folder}/{run}/plan.csv")))
            status = Counter(r["status"] for r in rows)
            split_file = Path(f"{folder}/{run}/disagg.csv")
            words = recommendation(rows + (list(csv.DictReader(open(split_file))) if split_file.exists() else []))
            searched = status["searched"] + status["recommended"] + status["runner-up"] + status["misses the SLO"]
            # trials simulated: the cache entries the runs have made so far (the warm run makes none)
            trials = sum(1 for _ in Path(f"{folder}/cache").rglob(f"*{ENTRY_SUFFIX}"))
            print(
                f"{run:<6}{len(rows):>11}{searched:>10}{status['cut by the bound']:>14}"
                f"{status['does not fit']:>8}{trials:>8}{seconds:>8.1f}  {words}"
            )


def recommendation(rows: list[dict]) -> str:
    """The plan's answer in words: the recommended deployment, or the best split (disagg.csv's rows)."""
    best = next((r for r in rows if r["status"] == "recommended"), None)
    if best:
        return (
            f"{best['replicas']} x {best['hardware']} TP{best['tp']} {best['scheduler']} chunk "
            f"{best['chunk_size'] or '-'} batch {best['max_batch_size']}: ${float(best['usd_per_hour']):.2f}/h, "
            f"{float(best['capacity_qps']):.1f} QPS"
        )
    split = next((r for r in rows if r["status"] == "best"), None)
    if split:
        return f"{split['split']}: {float(split['capacity_qps']):.1f} QPS"
    return "none"


if __name__ == "__main__":
    main()
