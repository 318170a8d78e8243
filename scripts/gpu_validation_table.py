"""The validation page's rows (docs/validation.md) from a GPU validation folder (scripts/gpu_validation.sh):

    python scripts/gpu_validation_table.py [gpu-validation]

prints, in Markdown, the measured profile's held-out MAPE, its comparison with the kernel-database
profile, and one row a confirmation (predicted vs measured capacity, TTFT/TBT percentile errors),
with the date, GPU and torch version they were made with. Refuses (exit 2) a folder that lacks the
profile's report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from capsim.capsearch.report.confirm import error_words
from capsim.profiles.compare import split_words


def main(folder: Path) -> int:
    reports = sorted(folder.glob("**/latency-model_*.json"))
    if not reports:
        print(f"{folder}: no latency-model_*.json: run the `profile` and `compare` stages first", file=sys.stderr)
        return 2
    report = json.loads(reports[0].read_text())
    profile = report["profile"]
    versions = profile.get("versions", {})
    print(
        f"Measured {profile.get('date', '?')} on {profile['hardware']}, torch {versions.get('torch', '?')}, "
        f"{profile.get('run_dtype', profile['dtype'])}, grid `{profile.get('grid', '?')}`.\n"
    )
    print("| profile | batches | held-out MAPE | P95 error |")
    print("| --- | --- | --- | --- |")
    for kind, errors in report["accuracy"]["compiled"].items():
        print(
            f"| {profile['model']} reference engine, {kind} | {errors['rows']} | {errors['mape']:.2f}% | "
            f"{errors['p95_ape']:.2f}% |"
        )
    for path in sorted(folder.glob("**/profile-compare_*.json")):
        comparison = json.loads(path.read_text())
        print(f"\n{comparison['second']['label']} against {comparison['first']['label']}, at the measured batches:\n")
        print("| batches | count | measured ms (P50) | ratio P50 | P10-P90 |")
        print("| --- | --- | --- | --- | --- |")
        for row in comparison["rows"]:
            if row["batches"]:
                print(
                    f"| {row['regime']} | {row['batches']} | {row['first_ms_median']:.2f} | {row['ratio_median']:.3f} "
                    f"| "
                    f"{row['ratio_p10']:.3f}-{row['ratio_p90']:.3f} |"
                )
        print(f"\nDifference: {split_words(comparison['difference'])}.")
    confirmations = sorted(folder.glob("confirm-*/confirm.json"))
    if confirmations:
        print("\n| where | what | predicted | measured | error |")
        print("| --- | --- | --- | --- | --- |")
    for path in confirmations:
        c = json.loads(path.read_text())
        system, workload = c["system"], c["workload"]
        policy = system["scheduler"] + (f" chunk {system['token_budget']}" if system.get("token_budget") else "")
        what = (
            f"{system['model']}, {policy}, batch {system['max_batch_size']}; `{workload['trace']}`, "
            f"{workload['num_requests']} requests; {c['slo_name']}"
        )
        measured = "none passed" if c["measured_qps"] is None else f"{c['measured_qps']:.3g} QPS"
        bracket = (
            f"[{c['measured_qps'] or 0:.3g}, {c['failing_qps']:.3g})"
            if c["failing_qps"] is not None
            else "no failing QPS"
        )
        errors = {(r["metric"], r["percentile"]): r["error"] for r in c["percentiles"]}

        def percentiles(metric: str, errors: dict = errors) -> str:
            return "/".join(f"{errors[(metric, p)] * 100:+.0f}" for p in (50, 90, 99) if (metric, p) in errors) + "%"

        error = error_words(c["capacity_error"], c["failing_qps"])
        print(
            f"| {system['hardware']}, reference engine | {what} | {c['predicted_qps']:.3g} QPS "
            f"({c.get('predicted_outcome', '?')}) | "
            f"{measured} ({bracket}) | {error}; TTFT P50/P90/P99 {percentiles('ttft')}, TBT {percentiles('tbt')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-validation")))
