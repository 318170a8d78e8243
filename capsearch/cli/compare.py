"""`capsim compare`: load sweeps of one deployment (simulated, measured, or both) on common
plots, with each one's error against the reference at every load they share.

A result folder of `capsim simulate` or `capsim bench` (load_sweep.json, or serving.json and
summary.json for one load). The reference is the first measured one given (else the first);
loads match by their kind, rate and concurrency cap. Errors are (value - reference) / reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch.cli.options.run import output_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.compare import catalog_name, compared_keys, deployment, errors, read_sweep, series_name
from capsim.capsearch.report.compare import error_table, plot_comparison
from capsim.capsearch.report.results_dir import ResultSet, results_dir, write_csv, write_json

console = Console(width=None if sys.stdout.isatty() else 200)


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
    comparisons = {
        names[i]: errors(sweeps[reference][2], rows, keys) for i, (_, _, rows) in enumerate(sweeps) if i != reference
    }
    deployments = {name: deployment(info) for name, (_, info, _) in zip(names, sweeps)}
    differ = len({catalog_name(info) for _, info, _ in sweeps}) > 1
    folder = results_dir(output_dir, "compare", overwrite)
    with ResultSet(folder) as staging:
        plot_comparison({name: rows for name, (_, _, rows) in zip(names, sweeps)}, staging, keys)
        write_json(
            staging / "compare.json",
            {
                "reference": names[reference],
                "folders": [str(f) for f in folders],
                "deployments": deployments,
                "same_deployment": not differ,
                "error": "simulated against measured: other / reference - 1",
                "errors": comparisons,
            },
        )
        write_csv(
            staging / "compare.csv",
            ({"series": name, **row} for name, rows in comparisons.items() for row in rows),
            ["series", "load", *keys],
        )
    console.print(f"reference: {names[reference]}; errors: other / reference - 1 (simulated against measured)")
    if differ:
        console.print(
            "[yellow]these runs are of different deployments ("
            + "; ".join(f"{n}: {d}" for n, d in deployments.items())
            + "): the errors compare different systems, not a model with its measurement[/]"
        )
    for name, rows in comparisons.items():
        console.print(
            error_table(name, rows, keys) if rows else f"[yellow]{name}: no load in common with the reference[/]"
        )
    console.print(f"wrote {folder}/: compare.csv, compare.json, compare_*.png")
