"""`capsim compare`'s table of errors at each load and its plots, a metric a plot."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from capsim.capsearch.load.compare import THROUGHPUTS
from capsim.capsearch.load.metrics import METRICS, WORDS
from capsim.capsearch.report.figures import pyplot, save_figure
from capsim.capsearch.report.results_dir import write_csv, write_json


def error_table(name: str, rows: list[dict], keys: list[str]) -> Table:
    table = Table(title=f"{name} against the reference: error at each load")
    table.add_column("load", no_wrap=True)
    for key in keys:
        table.add_column(label(key), justify="right")
    for row in rows:
        table.add_row(row["load"], *(f"{row[k]:+.0%}" if row[k] is not None else "-" for k in keys))
    return table


def label(key: str) -> str:
    if key in THROUGHPUTS:
        return {"request_throughput": "req/s", "output_throughput": "out tok/s"}[key]
    percentile, metric = key[1:].removesuffix("_ms").split("_", 1)
    return f"{WORDS[metric]} P{percentile}"


def plot_comparison(series: dict[str, list[dict]], folder: Path, keys: list[str]) -> None:
    plt = pyplot()
    groups = {"throughput": [k for k in keys if k == "output_throughput"]}  # x is the request throughput
    for metric in METRICS:
        groups[metric] = [k for k in keys if k.endswith(f"_{metric}_ms")]
    for group, members in groups.items():
        if not members:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (name, rows), marker in zip(series.items(), "os^vD<>" * 4):
            x = [r["request_throughput"] for r in rows]
            for key, style in zip(members, ("-", "--", ":", "-.") * 4):
                ax.plot(x, [r[key] for r in rows], marker=marker, linestyle=style, label=f"{name} {label(key)}")
        ax.set_xlabel("request throughput (req/s)")
        ax.set_ylabel("ms" if group != "throughput" else "output tokens/s")
        if group != "throughput":
            ax.set_yscale("log")
        ax.set_title(WORDS.get(group, group))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
        save_figure(fig, folder / f"compare_{group}.png", plt)


def write_comparison(folder: Path, comparison, series: dict[str, list[dict]], folders: list[str]) -> None:
    """compare_<figure>.png, compare.json and compare.csv of a Comparison (load/compare.py)."""
    plot_comparison(series, folder, comparison.keys)
    write_json(folder / "compare.json", comparison.to_json(folders))
    write_csv(
        folder / "compare.csv",
        ({"series": name, **row} for name, rows in comparison.errors.items() for row in rows),
        ["series", "load", *comparison.keys],
    )


def print_comparison(console, comparison) -> None:
    console.print(f"reference: {comparison.reference}; errors: other / reference - 1 (simulated against measured)")
    if not comparison.same_deployment:
        console.print(
            "[yellow]these runs are of different deployments ("
            + "; ".join(f"{n}: {d}" for n, d in comparison.deployments.items())
            + "): the errors compare different systems, not a model with its measurement[/]"
        )
    for name, rows in comparison.errors.items():
        console.print(
            error_table(name, rows, comparison.keys)
            if rows
            else f"[yellow]{name}: no load in common with the reference[/]"
        )
