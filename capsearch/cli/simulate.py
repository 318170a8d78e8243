"""`capsim simulate`: a workload replayed on a deployment at one load, or at several (a load sweep)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch import api
from capsim.capsearch.cli.options.load import load_options
from capsim.capsearch.cli.options.run import output_options, time_limit
from capsim.capsearch.cli.options.system import system_options
from capsim.capsearch.cli.options.workload import TRACE, workload_options
from capsim.capsearch.load.sweep import Load, LoadRun
from capsim.capsearch.load.vllm_results import now_stamp
from capsim.capsearch.report.load import (
    disagg_line,
    engine_line,
    files_written,
    headline,
    print_rows,
    run_loads,
    save_results,
    write_loads,
)
from capsim.capsearch.report.load_plots import SweepPlotter
from capsim.capsearch.report.results_dir import results_dir

console = Console(width=None if sys.stdout.isatty() else 200)  # files and pipes get wide tables


@click.command()
@system_options(disaggregated=True)
@TRACE
@load_options
@workload_options
@time_limit("s", "Simulated time the run may take; requests still running then are unfinished")
@output_options("simulate")
@click.option(
    "--chrome-trace/--no-chrome-trace", default=False, help="Also write the batches as a Perfetto/Chrome trace."
)
def simulate(
    system,
    trace: str,
    load_run: LoadRun,
    make_spec,
    time_limit: float | None,
    output_dir: Path | None,
    overwrite: bool,
    chrome_trace: bool,
) -> None:
    """Replay a workload on a deployment in simulation, at one load or a sweep of loads.

    One load (--qps 4, --qps inf, --concurrency 8): requests.parquet (every token's time),
    batches.parquet (every batch), summary.json, and serving.json (`vllm bench serve`'s figures:
    throughputs, goodput, latency percentiles in ms). Several (--qps 1,2,4,8, --qps auto,
    --concurrency 1,4,16): each load's files in its own subfolder, plus load_sweep.csv and .json
    (one row a load: throughputs, goodput, latency percentiles), load_curves.png and cdf.png.
    """
    spec = make_spec(trace)
    load_run.check_window(spec.num_requests)
    folder = results_dir(output_dir, "simulate", overwrite)
    date = now_stamp()

    def run_one(load: Load):
        return api.simulate(system, spec, qps=load.qps, concurrency=load.max_concurrency, time_limit_s=time_limit)

    with SweepPlotter() if load_run.is_sweep else nullcontext() as plotter:
        runs, rows, cdfs = run_loads(load_run, run_one)
        first = runs[0][1]
        title = headline(first.info, spec, runs)
        write_loads(load_run, runs, rows, cdfs, folder, title, "simulated", chrome_trace, plotter=plotter)
    saved = save_results(load_run, rows, runs, folder, spec, date) if load_run.save_result else []

    console.print(f"[bold]{title}[/]")
    colour = "yellow" if first.info["latency_source"] in ("analytic", "custom") else "dim"
    console.print(f"[{colour}]latencies: {first.info['latency_source_words']}[/]")
    if "disagg" in first.info:
        console.print(disagg_line(first.info["disagg"]))
    for extrapolation in dict.fromkeys(r.info.get("extrapolation") for _, r in runs if r.info.get("extrapolation")):
        console.print(f"[yellow]{extrapolation}[/]")
    print_rows(console, load_run, rows)
    if not load_run.is_sweep:
        console.print(engine_line(first.summary()))
    console.print(f"wrote {folder}/: {files_written(load_run, True, chrome_trace)}")
    for path in saved:
        console.print(f"wrote {path}")
