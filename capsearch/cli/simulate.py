"""`capsim simulate`: a workload replayed on a deployment at one load, or at several (a load sweep)."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch import api
from capsim.capsearch.cli.options.load import LOAD_PARAMS, load_options
from capsim.capsearch.cli.options.run import output_options, time_limit
from capsim.capsearch.cli.options.system import system_options
from capsim.capsearch.cli.options.workload import TRACE, option_given, workload_options, workload_params
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.compare import catalog_name, compare_sweeps, series_name
from capsim.capsearch.load.replay import Replayed, read_replay, record, with_loads_of
from capsim.capsearch.load.sweep import Load, LoadRun
from capsim.capsearch.load.vllm_results import check_result_options, now_stamp
from capsim.capsearch.report.compare import print_comparison, write_comparison
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
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model
from capsim.sim import SystemSpec

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
@click.option(
    "--against",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A `capsim bench` result folder (or a `simulate` one): simulate its requests at its loads (its trace, "
    "lengths, seed, arrivals, warm-up, time limit) on this deployment, and give each figure simulated against "
    "measured (compare.csv/.json/_*.png).",
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
    against: Path | None,
) -> None:
    """Replay a workload on a deployment in simulation, at one load or a sweep of loads.

    One load (--qps 4, --qps inf, --concurrency 8): requests.parquet (every token's time),
    batches.parquet (every batch), summary.json, and serving.json (`vllm bench serve`'s figures:
    throughputs, goodput, latency percentiles in ms). Several (--qps 1,2,4,8, --qps auto,
    --concurrency 1,4,16): each load's files in its own subfolder, plus load_sweep.csv and .json
    (one row a load: throughputs, goodput, latency percentiles), load_curves.png and cdf.png.
    """
    replayed = read_replay(against) if against is not None else None
    if replayed is not None and output_dir is not None and output_dir.resolve() == replayed.folder.resolve():
        raise ConfigError(f"-o {output_dir} is the folder --against replays: give the simulation another folder")
    if replayed is not None:
        system, spec, load_run = replaying(replayed, system, load_run)
        console.print(
            f"[dim]workload and loads: {replayed.folder}'s ({', '.join(load.label for load in load_run.loads)})[/]"
        )
    else:
        spec = make_spec(trace)
    load_run.check_window(spec.num_requests)
    folder = results_dir(output_dir, "simulate", overwrite)
    date = now_stamp()

    def run_one(load: Load):
        limit = time_limit if time_limit is not None or replayed is None else replayed.time_limit(load)
        return api.simulate(system, spec, qps=load.qps, concurrency=load.max_concurrency, time_limit_s=limit)

    with SweepPlotter() if load_run.is_sweep else nullcontext() as plotter:
        runs, rows, cdfs = run_loads(load_run, run_one, own_record(spec, load_run, time_limit, replayed))
        first = runs[0][1]
        title = headline(first.info, spec, runs)
        comparison, also = None, None
        if replayed is not None:  # the folder's figures against these, written with them
            measured = series_name(replayed.info, replayed.folder)
            this = f"simulated: {folder.name}" + (" (replay)" if folder.name == replayed.folder.name else "")
            series = {measured: (replayed.info, replayed.rows), this: (first.info, rows)}
            comparison = compare_sweeps(series, measured)
            curves = {name: series_rows for name, (_, series_rows) in series.items()}
            also = lambda staging: write_comparison(staging, comparison, curves, [str(replayed.folder)])  # noqa: E731
        write_loads(load_run, runs, rows, cdfs, folder, title, "simulated", chrome_trace, plotter=plotter, also=also)
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
    if comparison is not None:
        print_comparison(console, comparison)
    console.print(
        f"wrote {folder}/: {files_written(load_run, True, chrome_trace)}"
        + (", compare.csv, compare.json, compare_*.png" if comparison is not None else "")
    )
    for path in saved:
        console.print(f"wrote {path}")


def replaying(replayed: Replayed, system, load_run: LoadRun):
    """(system, spec, load_run) of `simulate --against`: the folder's requests and loads, on the
    deployment given, of the model the folder measured."""
    replayed_params = (*workload_params(), *LOAD_PARAMS)  # the folder says these
    given = [f"--{name.rstrip('_').replace('_', '-')}" for name in replayed_params if option_given(name)]
    if given:
        raise click.UsageError(f"--against replays {replayed.folder}'s own workload and loads: drop {', '.join(given)}")
    served = catalog_name(replayed.info)
    in_catalog = _in_catalog(served)
    if option_given("model"):
        if in_catalog and get_model(system.model).name != served:
            raise ConfigError(
                f"{replayed.folder} measured {served}, and --model says {system.model}: simulate the model it measured"
            )
    elif not in_catalog:
        raise ConfigError(
            f"{replayed.folder} measured {served!r}, which is not a catalog model: say which model it is (--model)"
        )
    elif isinstance(system, SystemSpec):
        system = dataclasses.replace(system, model=served)
        console.print(f"[dim]model: {served}, {replayed.folder}'s[/]")
    else:  # a disaggregated deployment names its model once for both pools
        raise ConfigError(f"{replayed.folder} measured {served}: say so with --model {served}")
    load_run = with_loads_of(load_run, replayed)
    check_result_options(
        load_run.save_result, load_run.result_dir, load_run.result_filename, load_run.metadata, len(load_run.loads)
    )
    return system, replayed.spec, load_run


def _in_catalog(name: str) -> bool:
    try:
        get_model(name)
    except ProfileError:
        return False
    return True


def own_record(spec, load_run: LoadRun, time_limit: float | None, replayed: Replayed | None) -> dict:
    """What this run ran, for a later --against: a replay keeps the limits of the run it replays."""
    if time_limit is None and replayed is not None:
        return record(spec, load_run.warmup, load_run.cooldown, replayed.time_limit_s, replayed.least_limit_s)
    return record(spec, load_run.warmup, load_run.cooldown, time_limit)
