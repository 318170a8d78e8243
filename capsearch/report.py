"""Capacity reports: a table (CSV and JSON) and plots, for every search run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from capsim.capsearch.search import Capacity
from capsim.traces import write_atomically

CSV_COLUMNS = ("model", "scheduler", "trace", "parallel", "slo", "capacity_qps", "failing_qps", "bracket", "trials",
               "cached_trials", "source", "latency_source", "hardware", "engine")


def capacity_rows(capacities: list[Capacity]) -> list[dict]:
    return [
        {
            "model": c.labels.get("model", c.system.get("model")), "scheduler": c.labels.get("scheduler", c.system.get("scheduler")),
            "trace": c.labels.get("trace", c.workload.get("trace")), "parallel": c.labels.get("parallel", f"tp_{c.system.get('tp')}"),
            "slo": c.slo_name, "capacity_qps": c.capacity_qps, "failing_qps": c.failing_qps, "bracket": c.bracket,
            "trials": len(c.trials), "cached_trials": sum(1 for t in c.trials if t.get("cached")), "source": c.source,
            "latency_source": c.latency_source, "hardware": c.system.get("hardware"), "engine": c.system.get("engine"),
        }
        for c in capacities
    ]


def write_capacity_table(capacities: list[Capacity], folder: Path, stem: str = "capacity") -> tuple[Path, Path]:
    rows = capacity_rows(capacities)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    write_atomically(csv_path, lambda tmp: Path(tmp).write_text(text))
    data = json.dumps([asdict(c) for c in capacities], indent=1, default=str) + "\n"
    write_atomically(json_path, lambda tmp: Path(tmp).write_text(data))
    return csv_path, json_path


def plot_capacity_bars(capacities: list[Capacity], path: Path) -> Path:
    """One panel a (model, trace); bars a scheduler, grouped by SLO."""
    plt = _pyplot()
    rows = capacity_rows(capacities)
    panels = sorted({(r["model"], r["trace"]) for r in rows})
    slos = list(dict.fromkeys(r["slo"] for r in rows))
    schedulers = list(dict.fromkeys(r["scheduler"] for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    width = 0.8 / max(1, len(schedulers))
    for ax, (model, trace) in zip(axes[0], panels):
        for s, scheduler in enumerate(schedulers):
            heights = [next((r["capacity_qps"] for r in rows if (r["model"], r["trace"], r["scheduler"], r["slo"]) == (model, trace, scheduler, slo)), 0)
                       for slo in slos]
            ax.bar([i + s * width for i in range(len(slos))], heights, width, label=scheduler)
        ax.set_xticks([i + width * (len(schedulers) - 1) / 2 for i in range(len(slos))])
        ax.set_xticklabels([_short(slo) for slo in slos], fontsize=7)
        ax.set_title(f"{model}, {trace}", fontsize=9)
        ax.set_ylabel("capacity (QPS)")
    axes[0][0].legend(fontsize=7)
    sources = {r["latency_source"] for r in rows}
    fig.suptitle("simulated capacity; latencies: " + "; ".join(sorted(sources)), fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def plot_sensitivity(capacities: list[Capacity], parameter: str, path: Path) -> Path:
    """Capacity against one SLO parameter, a line a (model, scheduler, trace)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple, list[tuple[float, float]]] = {}
    for c in capacities:
        key = (c.labels.get("model"), c.labels.get("scheduler"), c.labels.get("trace"))
        lines.setdefault(key, []).append((c.slo[parameter], c.capacity_qps))
    for (model, scheduler, trace), points in lines.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=f"{scheduler} ({model}, {trace})")
    ax.set(xscale="log", xlabel=f"SLO {parameter} (s)", ylabel="capacity (QPS)", title="capacity against the SLO")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def _short(slo: str) -> str:
    return slo.replace(", ", "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, plt) -> Path:
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path
