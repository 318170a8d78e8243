"""The P:D split search's files and tables: every split with its capacity, and the best beside
the best aggregated deployment on the same GPUs."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from capsim.capsearch.report.figures import pyplot, save_figure
from capsim.capsearch.report.results_dir import write_csv, write_json

COLUMNS = (
    "status",
    "split",
    "hardware",
    "engine",
    "prefill_instances",
    "prefill_tp",
    "prefill_chunk",
    "decode_instances",
    "decode_tp",
    "decode_dp_attention",
    "decode_ep",
    "decode_max_batch_size",
    "kv_link",
    "gpus",
    "upper_bound_qps",
    "capacity_qps",
    "capacity_qps_per_gpu",
    "binding_clause",
    "converged",
    "latency_source",
    "trials",
    "why",
)


def split_row(split) -> dict:
    system = split.system
    p, d = (system.prefill, system.decode) if system else (None, None)
    return {
        "status": split.status,
        "split": split.words,
        "hardware": p.hardware if p else None,
        "engine": p.engine if p else None,
        "prefill_instances": p.replicas if p else None,
        "prefill_tp": p.tp if p else None,
        "prefill_chunk": p.token_budget if p else None,
        "decode_instances": d.replicas if d else None,
        "decode_tp": d.tp if d else None,
        "decode_dp_attention": d.dp_attention if d else None,
        "decode_ep": d.ep if d else None,
        "decode_max_batch_size": d.max_batch_size if d else None,
        "kv_link": system.kv_link if system else None,
        "gpus": split.gpus,
        "upper_bound_qps": split.upper_bound_qps,
        "capacity_qps": split.capacity,
        "capacity_qps_per_gpu": split.capacity_per_gpu,
        "binding_clause": split.binding_clause,
        "converged": split.converged,
        "latency_source": split.latency_source,
        "trials": sum(len(search.trials) for search in split.searches),
        "why": split.why,
    }


def write_splits(pool, folder: Path) -> None:
    rows = [split_row(s) for s in pool]
    write_json(folder / "disagg.json", {"splits": rows})
    write_csv(folder / "disagg.csv", rows, COLUMNS)


def best_aggregated(candidates):
    recommended = [c for c in candidates if c.status == "recommended"]
    return recommended[0] if recommended else None


def print_splits(console, pool, candidates) -> None:
    ranked = sorted(
        (s for s in pool if s.status in ("best", "runner-up")), key=lambda s: (s.status != "best", -s.capacity)
    )
    counts = {}
    for s in pool:
        counts[s.status] = counts.get(s.status, 0) + 1
    console.print("splits: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda x: -x[1])))
    table = Table(title="disaggregated (xPyD) on the same GPUs")
    for column in ("", "split", "KV link", "GPUs", "capacity QPS", "QPS a GPU", "fails first above it"):
        table.add_column(column, justify="right" if column in ("GPUs", "capacity QPS", "QPS a GPU") else "left")
    for s in ranked:
        table.add_row(
            "*" if s.status == "best" else "",
            s.words,
            s.system.kv_link,
            str(s.gpus),
            f"{s.capacity:.3g}" + ("" if s.converged else " (not converged)"),
            f"{s.capacity_per_gpu:.3g}",
            s.binding_clause,
        )
    console.print(table)
    aggregated = best_aggregated(candidates)
    best = ranked[0] if ranked else None
    if aggregated is None or best is None:
        console.print(
            "[red]no comparison[/]: "
            + ("no aggregated deployment" if aggregated is None else "no split")
            + " meets the SLO"
        )
        return
    per_gpu = aggregated.capacity / aggregated.gpus
    console.print(
        f"best aggregated: {aggregated.replicas} x {aggregated.label()}: {aggregated.capacity:.3g} QPS on "
        f"{aggregated.gpus} GPUs, "
        f"{per_gpu:.3g} a GPU ({found_words(aggregated)})"
    )
    console.print(
        f"best disaggregated: {best.words}: {best.capacity:.3g} QPS on {best.gpus} GPUs, {best.capacity_per_gpu:.3g} "
        f"a GPU "
        f"({found_words(best)}): [bold]{best.capacity_per_gpu / per_gpu:.2f}x[/] the aggregated capacity a GPU"
    )
    if not (aggregated.converged and best.converged):
        console.print(
            "[yellow]a search that did not converge found no load its SLO fails at: its capacity is only a lower "
            "bound, "
            "and so is the ratio's side that holds it (give more requests, --num-requests, so that a queue can show)[/]"
        )


def found_words(found) -> str:
    """What failed first above the capacity, or that nothing did."""
    return f"fails first: {found.binding_clause or 'n/a'}" if found.converged else "search not converged"


def plot_splits(pool, candidates, path: Path, title: str, top: int = 30) -> Path:
    plt = pyplot()
    searched = sorted((s for s in pool if s.capacity), key=lambda s: -s.capacity_per_gpu)[:top]
    fig, ax = plt.subplots(figsize=(8, 0.25 * max(len(searched), 4) + 1.4))
    bars = ax.barh(
        range(len(searched)), [s.capacity_per_gpu for s in searched], color="tab:orange", label="disaggregated"
    )
    for bar, split in zip(bars, searched):
        if not split.converged:  # hatched: a bound (a trial too short, a search cut), not a capacity
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.set_yticks(
        range(len(searched)), [s.words + ("" if s.converged else " (not converged)") for s in searched], fontsize=6
    )
    ax.invert_yaxis()
    aggregated = best_aggregated(candidates)
    if aggregated is not None:
        ax.axvline(
            aggregated.capacity / aggregated.gpus,
            color="tab:blue",
            linestyle="--",
            label=f"best aggregated: {aggregated.replicas} x {aggregated.label()}",
        )
    ax.set_xlabel("QPS a GPU under the SLO")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=6, loc="lower right")
    fig.subplots_adjust(left=0.4, right=0.97, bottom=0.1, top=0.93)
    return save_figure(fig, path, plt)
