"""Capacity reports: a table (CSV and JSON) and plots, for every search run."""

from __future__ import annotations

import textwrap
from dataclasses import asdict
from pathlib import Path

from rich import box
from rich.table import Table

from capsim.capsearch.capacity.search import Capacity
from capsim.capsearch.capacity.slo import slo_from_dict
from capsim.capsearch.report.figures import pyplot, save_figure
from capsim.capsearch.report.results_dir import write_csv, write_json
from capsim.sim.disagg import describe
from capsim.sim.system import moe_layout_words, precision_words, speculation_words

CSV_COLUMNS = (
    "model",
    "scheduler",
    "trace",
    "parallel",
    "slo",
    "capacity_qps",
    "failing_qps",
    "bracket",
    "outcome",
    "converged",
    "failed_first",
    "slo_clauses",
    "hardware",
    "tp",
    "pp",
    "scheduler_policy",
    "chunk_size",
    "batch_size",
    "engine",
    "precision",
    "speculation",
    "tbt_p99_s",
    "tbt_p99.9_s",
    "tbt_max_s",
    "ttft_p99_s",
    "trials",
    "screening_trials",
    "cached_trials",
    "source",
    "latency_source",
    "conventions",
    "gpus",
    "capacity_qps_per_gpu",
    "deployment",
)


def capacity_rows(capacities: list[Capacity]) -> list[dict]:
    """One row a search: what was searched (model, GPU, TP/PP, scheduler, trace, every SLO
    clause), what was found (capacity, bracket, whether it converged, what failed above it) and
    the tail at the capacity (P99.9 and max TBT show stalls a P99 hides)."""
    rows = []
    for c in capacities:
        slo = slo_from_dict(c.slo)
        system = c.system
        rows.append(
            {
                "model": c.labels.get("model", system.get("model")),
                "scheduler": c.labels.get("scheduler", system.get("scheduler")),
                "trace": c.labels.get("trace", c.workload.get("trace")),
                "parallel": c.labels.get("parallel", f"tp_{system.get('tp')}"),
                "slo": c.slo_name,
                "capacity_qps": c.capacity_qps,
                "failing_qps": c.failing_qps,
                "bracket": c.bracket,
                "outcome": c.outcome,
                "converged": c.converged,
                "failed_first": "; ".join(c.failed_clauses),
                "slo_clauses": "; ".join(slo.clauses),
                "hardware": system.get("hardware"),
                "tp": system.get("tp"),
                "pp": system.get("pp"),
                "tp_pp": parallel_words(system),
                "scheduler_policy": system.get("scheduler"),
                "chunk_size": system.get("token_budget"),
                "batch_size": system.get("max_batch_size"),
                "engine": system.get("engine"),
                "precision": precision_words(system) or "the model's own",
                "speculation": speculation_words(system).removeprefix(", "),
                "tbt_p99_s": c.at_capacity.get("tbt_p99_s"),
                "tbt_p99.9_s": c.at_capacity.get("tbt_p99.9_s"),
                "tbt_max_s": c.at_capacity.get("tbt_max_s"),
                "ttft_p99_s": c.at_capacity.get("ttft_p99_s"),
                "trials": len(c.trials),
                "screening_trials": sum(1 for t in c.trials if t.get("screen")),
                "cached_trials": sum(1 for t in c.trials if t.get("cached")),
                "source": c.source,
                "latency_source": c.latency_source,
                "conventions": "; ".join(f"{k}: {v}" for k, v in c.conventions.items()),
                "gpus": gpus(system),
                "capacity_qps_per_gpu": c.capacity_qps / gpus(system) if c.capacity_qps is not None else None,
                "deployment": describe(system)
                if system.get("disagg")
                else f"{system.get('replicas', 1)} x {system.get('hardware')} "
                f"TP{system.get('tp')} PP{system.get('pp')}{moe_layout_words(system)}{speculation_words(system)}",
            }
        )
    return rows


def gpus(system: dict) -> int:
    """GPUs the deployment takes: every replica's TP x PP, or both pools'."""
    if system.get("disagg"):
        return system["gpus"]
    return system.get("replicas", 1) * system.get("tp", 1) * system.get("pp", 1) * system.get("dp_attention", 1)


def parallel_words(system: dict) -> str:
    """'1/1' (TP/PP), or a disaggregated deployment's 'xPyD, TP p/d'."""
    if system.get("disagg"):
        return f"{system['disagg']}, TP {system['tp']}"
    return f"{system.get('tp')}/{system.get('pp')}{moe_layout_words(system)}"


def scheduler_words(label: str | None, system: dict) -> str:
    """The config's name, and what it runs: 'sarathi_512 (sarathi, chunk 512, batch 128)'."""
    if system.get("disagg"):
        return describe(system)
    budget = f", chunk {system['token_budget']}" if system.get("token_budget") else ""
    inner = f"{system['scheduler']}{budget}, batch {system['max_batch_size']}{speculation_words(system)}"
    return f"{label} ({inner})" if label and label != system["scheduler"] else inner


def write_capacity_table(capacities: list[Capacity], folder: Path, stem: str = "capacity") -> tuple[Path, Path]:
    csv_path = write_csv(folder / f"{stem}.csv", capacity_rows(capacities), CSV_COLUMNS)
    json_path = write_json(
        folder / f"{stem}.json",
        [asdict(c) | {"outcome": c.outcome, "bracket": c.bracket} for c in capacities],
        indent=1,
    )
    return csv_path, json_path


def plot_capacity_bars(capacities: list[Capacity], path: Path) -> Path:
    """One panel a (model, trace); bars a scheduler, grouped by SLO."""
    plt = pyplot()
    rows = capacity_rows(capacities)
    panels = sorted({(r["model"], r["trace"]) for r in rows})
    slos = list(dict.fromkeys(r["slo"] for r in rows))
    schedulers = list(dict.fromkeys(r["scheduler"] for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    width = 0.8 / max(1, len(schedulers))
    for ax, (model, trace) in zip(axes[0], panels):
        for s, scheduler in enumerate(schedulers):
            found = [
                next(
                    (
                        r
                        for r in rows
                        if (r["model"], r["trace"], r["scheduler"], r["slo"]) == (model, trace, scheduler, slo)
                    ),
                    None,
                )
                for slo in slos
            ]
            bars = ax.bar(
                [i + s * width for i in range(len(slos))],
                [(r and r["capacity_qps"]) or 0 for r in found],
                width,
                label=scheduler,
            )
            for bar, row in zip(bars, found):
                if row and not row["converged"]:  # hatched: a bound, not a capacity
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_xticks([i + width * (len(schedulers) - 1) / 2 for i in range(len(slos))])
        ax.set_xticklabels([_short(slo) for slo in slos], fontsize=7)
        gpus = sorted(
            {f"{r['hardware']} TP{r['tp']} PP{r['pp']}" for r in rows if (r["model"], r["trace"]) == (model, trace)}
        )
        ax.set_title(f"{model}, {trace}\n{', '.join(gpus)}", fontsize=8)
        ax.set_ylabel("capacity (QPS)")
    axes[0][0].legend(fontsize=7)
    sources = {r["latency_source"] for r in rows}
    unsettled = sum(1 for r in rows if not r["converged"])
    title = (
        "simulated capacity; latencies: "
        + "; ".join(sorted(sources))
        + (f"; hatched: {unsettled} searches did not converge (see the table)" if unsettled else "")
    )
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 15)), fontsize=8)  # ~15 characters an inch
    fig.tight_layout()
    return save_figure(fig, path, plt)


def plot_sensitivity(capacities: list[Capacity], parameter: str, path: Path) -> Path:
    """Capacity against one SLO parameter, a line a (model, scheduler, trace)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple, list[tuple[float, float]]] = {}
    for c in capacities:
        key = (c.labels.get("model"), c.labels.get("scheduler"), c.labels.get("trace"))
        lines.setdefault(key, []).append((c.slo[parameter], c.capacity_qps or 0.0))
    for (model, scheduler, trace), points in lines.items():
        points.sort()
        ax.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", ms=3, label=f"{scheduler} ({model}, {trace})"
        )
    ax.set(xscale="log", xlabel=f"SLO {parameter} (s)", ylabel="capacity (QPS)", title="capacity against the SLO")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, plt)


def _short(slo: str) -> str:
    return slo.replace(", ", "\n")


def capacity_table(capacities: list) -> Table:
    """The capacity of each search, a row each, as `capsim search` prints it."""
    table = Table(title="capacity: the highest QPS that meets the SLO", box=box.SIMPLE_HEAD)
    for column in (
        "model",
        "GPU",
        "TP/PP",
        "scheduler",
        "trace",
        "SLO",
        "QPS",
        "bracket",
        "search",
        "failed at the QPS above",
        "TBT P99.9/max ms",
        "trials",
    ):
        table.add_column(column, justify="right" if column in ("QPS", "trials", "TBT P99.9/max ms") else "left")
    for r in capacity_rows(capacities):
        qps = f"{r['capacity_qps']:.3g}" if r["capacity_qps"] is not None else "none"
        tail = f"{r['tbt_p99.9_s'] * 1e3:.0f}/{r['tbt_max_s'] * 1e3:.0f}" if r.get("tbt_max_s") is not None else ""
        table.add_row(
            r["model"],
            r["hardware"],
            r["tp_pp"],
            r["scheduler"] + (f"\n{r['speculation']}" if r["speculation"] else ""),
            r["trace"],
            r["slo"],
            qps,
            r["bracket"],
            r["outcome"],
            r["failed_first"],
            tail,
            f"{r['trials']} ({r['screening_trials']} short, {r['cached_trials']} cached)"
            if r["screening_trials"]
            else f"{r['trials']} ({r['cached_trials']} cached)",
        )
    return table
