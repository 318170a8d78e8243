"""The analytic roofline against NVIDIA's kernel database, before and after calibration.

For each shipped kernel-database profile (profiles/data/*_<engine>.parquet), the roofline's
signed error on every batch of the profile, with the default factors and with the factors
calibrated for that GPU and engine (profiles/data/roofline_calibration.json), summarized per
batch kind and per TP: median signed error and mean absolute error.

    python bench/bench_calibration.py [--engine vllm]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from rich.console import Console
from rich.table import Table

from capsim.profiles.analytic import FACTORS
from capsim.profiles.calibration import calibrated_factors, roofline_errors
from capsim.profiles.store import shipped_profiles
from capsim.profiles.table import ProfileTable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="vllm", choices=("vllm", "sglang", "trtllm"))
    args = parser.parse_args()
    groups: dict[tuple, list] = defaultdict(lambda: [[], []])
    for path in shipped_profiles():
        profile = ProfileTable.read(path)
        if profile.metadata["source"] != "kernel-db" or profile.metadata["engine"] != args.engine:
            continue
        hardware, tp, kinds = profile.metadata["hardware"], profile.metadata["tp"], profile.kinds
        factors, _ = calibrated_factors(hardware, args.engine)
        before, after = roofline_errors(profile, FACTORS), roofline_errors(profile, factors)
        for kind in ("prefill", "decode", "mixed"):
            mask = kinds == kind
            for key in (
                (hardware, "by kind", kind),
                (hardware, "by TP", f"TP{tp}"),
                ("all GPUs", "by kind", kind),
                ("all GPUs", "by TP", f"TP{tp}"),
            ):
                groups[key][0].append(before[mask])
                groups[key][1].append(after[mask])
    table = Table(
        title=f"roofline vs the {args.engine} kernel database: signed error median / mean |error|, before -> after "
        f"calibration"
    )
    for column in ("GPU", "group", "batches", "before: median", "before: mean |e|", "after: median", "after: mean |e|"):
        table.add_column(column, justify="left" if column in ("GPU", "group") else "right")
    for (hardware, _, group), (before, after) in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all GPUs", kv[0])):
        b, a = np.concatenate(before), np.concatenate(after)
        table.add_row(
            hardware,
            group,
            str(len(b)),
            f"{100 * np.median(b):+.1f}%",
            f"{100 * np.abs(b).mean():.1f}%",
            f"{100 * np.median(a):+.1f}%",
            f"{100 * np.abs(a).mean():.1f}%",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
