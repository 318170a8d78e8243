"""The latency model: training time, held-out error, and the cost of one prediction.

Targets (issue: profiles): training <= 30 s on 2 cores; <= 2 microseconds a prediction; held-out
MAPE <= 5% on a measured CPU profile of `tiny`.

    python bench/bench_latency_model.py [--profile FILE ...]

Without --profile it fits the analytic profiles of a few catalog systems; give measured profiles
(e.g. from `capsim profile --model tiny --device cpu --grid quick --dtype float32`) to see theirs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from capsim.profiles.analytic import analytic_profile
from capsim.profiles.hardware import get_hardware
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import get_model
from capsim.profiles.table import ProfileTable

SYSTEMS = [
    ("Llama-3-8B", "H100-SXM", 1),
    ("Mistral-7B", "A100-80GB-SXM", 1),
    ("Yi-34B", "A100-80GB-SXM", 2),
    ("Llama-2-70B", "A100-80GB-SXM", 4),
]


def per_call_microseconds(model: LatencyModel, X: np.ndarray, calls: int = 200_000) -> float:
    rows = [tuple(int(v) for v in row) for row in X]
    predictor = model.predictor
    start = time.perf_counter()
    for i in range(calls):
        predictor(*rows[i % len(rows)])
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="append", default=[], help="a profile file to include")
    args = parser.parse_args()
    profiles = [analytic_profile(get_model(m), get_hardware(h), tp) for m, h, tp in SYSTEMS]
    profiles += [ProfileTable.read(p) for p in args.profile]
    kinds = ("prefill", "decode", "mixed")
    print(
        f"{'profile':<58}{'rows':>6}{'fit s':>8}{'kept':>16}{'MAPE %':>8}{'P95 %':>8}"
        + "".join(f"{k + ' %':>11}" for k in kinds)
        + f"{'us/call':>9}"
    )
    for profile in profiles:
        start = time.perf_counter()
        model = LatencyModel.fit(profile)
        fit_seconds = time.perf_counter() - start
        errors = model.accuracy["compiled"]
        by_kind = "".join(
            f"{errors[k]['mape']:>11.2f}" if k in errors else f"{'-':>11}" for k in kinds
        )  # held-out MAPE
        print(
            f"{profile.label:<58}{len(profile):>6}{fit_seconds:>8.2f}{model.regressor:>16}"
            f"{errors['all']['mape']:>8.2f}{errors['all']['p95_ape']:>8.2f}{by_kind}"
            f"{per_call_microseconds(model, profile.features):>9.2f}"
        )


if __name__ == "__main__":
    main()
