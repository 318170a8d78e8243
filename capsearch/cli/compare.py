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
from capsim.capsearch.load.compare import compare_sweeps, read_sweep, series_name
from capsim.capsearch.report.compare import print_comparison, write_comparison
from capsim.capsearch.report.results_dir import ResultSet, results_dir

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
    sweeps = {}
    for folder in folders:
        info, rows = read_sweep(folder)
        name = series_name(info, folder)
        if name in sweeps:
            raise ConfigError("two folders have the same name: give folders with different names")
        sweeps[name] = (info, rows)
    reference = next((name for name, (info, _) in sweeps.items() if info.get("kind") == "real"), next(iter(sweeps)))
    comparison = compare_sweeps(sweeps, reference)
    folder = results_dir(output_dir, "compare", overwrite)
    with ResultSet(folder) as staging:
        write_comparison(
            staging, comparison, {name: rows for name, (_, rows) in sweeps.items()}, [str(f) for f in folders]
        )
    print_comparison(console, comparison)
    console.print(f"wrote {folder}/: compare.csv, compare.json, compare_*.png")
