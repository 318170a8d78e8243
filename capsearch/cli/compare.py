"""`capsim compare`: load sweeps of one deployment (simulated, measured, or both) on common
plots, with each one's error against the reference at every load they share.

A result folder of `capsim simulate` or `capsim bench` (load_sweep.json, or serving.json and
summary.json for one load). The reference is the first measured one given (else the first);
loads match by their kind, rate and concurrency cap. Errors are (value - reference) / reference.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from capsim.capsearch.experiments.config import ConfigError
from capsim.capsearch.report.results_dir import ResultSet, output_options, results_dir, write_csv, write_json
from capsim.capsearch.load.metrics import METRICS, WORDS
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model

console = Console(width=None if sys.stdout.isatty() else 200)
THROUGHPUTS = ("request_throughput", "output_throughput")


def read_sweep(folder: Path) -> tuple[dict, list[dict]]:
    """(info, rows) of a result folder: a load sweep, or one load."""
    folder = Path(folder)
    try:
        if (folder / "load_sweep.json").is_file():
            data = json.loads((folder / "load_sweep.json").read_text())
            info, rows = data["info"], data["loads"]
        elif (folder / "serving.json").is_file():
            info = json.loads((folder / "summary.json").read_text())["info"]
            rows = [json.loads((folder / "serving.json").read_text())]
        else:
            raise ConfigError(f"{folder} holds no load_sweep.json or serving.json: give folders written by `capsim simulate` "
                              "or `capsim bench`")
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{folder}: not a readable capsim result ({type(error).__name__}: {error})") from None
    if (not isinstance(info, dict) or not isinstance(rows, list) or not rows
            or not all(isinstance(r, dict) and isinstance(r.get("request_throughput"), (int, float)) for r in rows)):
        raise ConfigError(f"{folder}: not a readable capsim result (its loads lack vLLM's figures)")
    return info, rows


def series_name(info: dict, folder: Path) -> str:
    kind = "measured" if info.get("kind") == "real" else "simulated"
    return f"{kind}: {folder.name}"


def load_key(row: dict) -> tuple:
    return row.get("kind"), row.get("request_rate"), row.get("max_concurrency")


def compared_keys(rows: list[dict]) -> list[str]:
    """The figures every row has: throughputs, then each latency at each percentile."""
    keys = list(THROUGHPUTS)
    for metric in METRICS:
        keys += sorted((k for k in rows[0] if k.endswith(f"_{metric}_ms") and k.startswith("p")),
                       key=lambda k: float(k[1:].split("_")[0]))
    return [k for k in keys if all(k in r and r[k] is not None for r in rows)]


def errors(reference: list[dict], other: list[dict], keys: list[str]) -> list[dict]:
    """At each load both have: every figure's relative error against the reference."""
    theirs = {load_key(r): r for r in other}
    table = []
    for row in reference:
        match = theirs.get(load_key(row))
        if match is None:
            continue
        entry = {"load": row["load"]}
        for key in keys:
            base, value = row[key], match[key]
            entry[key] = (value - base) / base if base and math.isfinite(base) and math.isfinite(value) else None  # NaN: no figure
        table.append(entry)
    return table


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_options("compare")
def compare(folders: tuple[Path, ...], output_dir: Path | None, overwrite: bool) -> None:
    """Overlay load sweeps (simulated and measured) and give the error at each load.

    Writes compare_<figure>.png (one plot a figure: throughput and each latency against the
    request throughput), compare.csv and compare.json (the error of each sweep against the
    reference at every shared load).
    """
    if len(folders) < 2:
        raise ConfigError("give two result folders or more (a simulated and a measured sweep of the same deployment)")
    sweeps = [(folder, *read_sweep(folder)) for folder in folders]
    names = [series_name(info, folder) for folder, info, _ in sweeps]
    if len(set(names)) != len(names):
        raise ConfigError("two folders have the same name: give folders with different names")
    reference = next((i for i, (_, info, _) in enumerate(sweeps) if info.get("kind") == "real"), 0)
    keys = compared_keys([row for _, _, rows in sweeps for row in rows])
    comparisons = {names[i]: errors(sweeps[reference][2], rows, keys) for i, (_, _, rows) in enumerate(sweeps) if i != reference}
    deployments = {name: deployment(info) for name, (_, info, _) in zip(names, sweeps)}
    differ = len({catalog_name(info) for _, info, _ in sweeps}) > 1
    folder = results_dir(output_dir, "compare", overwrite)
    with ResultSet(folder) as staging:
        plot_comparison({name: rows for name, (_, _, rows) in zip(names, sweeps)}, staging, keys)
        write_json(staging / "compare.json", {"reference": names[reference], "folders": [str(f) for f in folders],
                                              "deployments": deployments, "same_deployment": not differ,
                                              "error": "simulated against measured: other / reference - 1", "errors": comparisons})
        write_csv(staging / "compare.csv", ({"series": name, **row} for name, rows in comparisons.items() for row in rows),
                  ["series", "load", *keys])
    console.print(f"reference: {names[reference]}; errors: other / reference - 1 (simulated against measured)")
    if differ:
        console.print("[yellow]these runs are of different deployments (" + "; ".join(f"{n}: {d}" for n, d in deployments.items())
                      + "): the errors compare different systems, not a model with its measurement[/]")
    for name, rows in comparisons.items():
        console.print(error_table(name, rows, keys) if rows else f"[yellow]{name}: no load in common with the reference[/]")
    console.print(f"wrote {folder}/: compare.csv, compare.json, compare_*.png")


def deployment(info: dict) -> str:
    """The model (and GPU, where known) a result is of: a simulated system's, or a measured run's served model."""
    system = info.get("system")
    hardware = system.get("hardware") if isinstance(system, dict) else None
    return f"{catalog_name(info)} on {hardware}" if hardware else catalog_name(info)


def catalog_name(info: dict) -> str:
    """The model's catalog name, so that a served Hugging Face id and capsim's name compare equal."""
    system = info.get("system") if isinstance(info.get("system"), dict) else {}
    model = str(system.get("model") or info.get("model") or "?")
    try:
        return get_model(model).name
    except ProfileError:
        return model


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
    from capsim.capsearch.report.capacity import _pyplot, _save

    plt = _pyplot()
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
        _save(fig, folder / f"compare_{group}.png", plt)
