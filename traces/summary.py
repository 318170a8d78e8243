"""The figures people quote about a trace: counts, means, percentiles, rate."""

from __future__ import annotations

import numpy as np

from capsim.traces.workload import Workload

PERCENTILES = (50, 90, 99)


def summarize(workload: Workload) -> dict:
    summary = {"source": workload.info.get("source", ""), "requests": len(workload)}
    for name in ("prompt_tokens", "output_tokens"):
        values = getattr(workload, name)
        summary[name] = {"mean": float(values.mean()), "max": int(values.max())} | {
            f"p{p}": float(q) for p, q in zip(PERCENTILES, np.percentile(values, PERCENTILES))
        }
    if workload.has_arrivals and len(workload) > 1:
        arrivals = workload.arrival_s
        span = float(arrivals[-1] - arrivals[0])
        gaps = np.diff(arrivals)
        summary["duration_s"] = span
        summary["rate_qps"] = (len(workload) - 1) / span if span > 0 else float("inf")
        summary["interarrival_cv"] = float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 0.0
    if "prefix_group" in workload.table.column_names:
        groups = workload.table.column("prefix_group").to_numpy()
        summary["requests_with_shared_prefix"] = int((groups >= 0).sum())
        summary["prefix_groups"] = int(np.unique(groups[groups >= 0]).size)
    for key in ("skipped_failed_requests",):
        if key in workload.info:
            summary[key] = workload.info[key]
    return summary
