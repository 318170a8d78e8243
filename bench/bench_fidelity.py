"""Fidelity against real engines: every run of a dense model in the silicon sample capsim can
replay, simulated with kernel time only and with each engine's host time, against what was
measured (the mixtures of experts' runs: bench/bench_moe.py).

    python bench/bench_fidelity.py            # about 3 minutes on 2 cores (FP8 profiles made on first use)

Prints, per engine and per engine x concurrency bucket, for the runs the host time was fitted
on and those it was not: runs, median signed error and median |error| of mean TTFT and TPOT
(simulated / measured - 1), and the time the replays took.
"""

from __future__ import annotations

import time

from capsim.capsearch.load.validate import replay_all, summary
from capsim.profiles.host_time import training_rows
from capsim.profiles.measurements import read_silicon_sample
from capsim.profiles.models import get_model


def table(title: str, rows: list[dict], keys: tuple[str, ...]) -> None:
    print(f"\n{title}")
    print(" | ".join([*keys, "runs", "TTFT median", "TTFT median |err|", "TPOT median", "TPOT median |err|"]))
    for row in rows:
        print(
            " | ".join(
                [
                    *(str(row[k]) for k in keys),
                    str(row["rows"]),
                    f"{row['ttft_median_error_pct']:+.1f}%",
                    f"{row['ttft_median_abs_error_pct']:.1f}%",
                    f"{row['tpot_median_error_pct']:+.1f}%",
                    f"{row['tpot_median_abs_error_pct']:.1f}%",
                ]
            )
        )


def main() -> None:
    measurements, skipped = read_silicon_sample()
    moe = sum(1 for m in measurements if get_model(m.model).is_moe)
    measurements = [m for m in measurements if not get_model(m.model).is_moe]
    skipped["mixture of experts (bench/bench_moe.py)"] = moe
    fitted = training_rows()
    print(
        f"{len(measurements)} runs replayed, {sum(skipped.values())} left out: "
        + "; ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    )
    for host in (False, True):
        start = time.perf_counter()
        replays = replay_all(measurements, host)
        seconds = time.perf_counter() - start
        failed = [r for r in replays if r.ttft_ms is None]
        label = "with host time" if host else "kernel time only"
        print(f"\n=== {label}: {len(replays)} replays in {seconds:.1f} s ({len(failed)} could not be simulated)")
        for name, keep in (("fitted on", True), ("not fitted on", False)):
            chosen = [r for r in replays if (r.measurement.id in fitted) == keep]
            table(f"{label}, runs {name}: per engine", summary(chosen), ("engine",))
            table(
                f"{label}, runs {name}: per engine, model, GPU, weights",
                summary(chosen, ("engine", "model", "hardware", "quant")),
                ("engine", "model", "hardware", "quant"),
            )
            table(
                f"{label}, runs {name}: per engine and concurrency",
                summary(chosen, ("engine", "concurrency_bucket")),
                ("engine", "concurrency_bucket"),
            )


if __name__ == "__main__":
    main()
