"""`capsim search` (capacity for every configuration and SLO) and `capsim sweep` (capacity as a
function of one SLO parameter), with the flags of Sarathi-Serve and Etalon."""

from __future__ import annotations

import sys
import dataclasses
from importlib import resources
from pathlib import Path

import click
from click.core import ParameterSource
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from capsim.capsearch.config import ConfigError, load_config
from capsim.capsearch.experiment import EXECUTORS, SearchJob, run_jobs
from capsim.capsearch.report import capacity_rows, plot_capacity_bars, plot_sensitivity, write_capacity_table
from capsim.capsearch.slo import Deadline, TbtTtft
from capsim.capsearch.slo_options import SLO_FLAGS, slo_options, slos_from_flags
from capsim.capsearch.system_options import system_options
from capsim.capsearch.workload_options import workload_options

console = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes get wide tables
DEFAULT_CONFIGS = ("mistral7b_strict", "mistral7b_relaxed")
SYSTEM_FLAGS = ("model", "hardware", "tp", "pp", "replicas", "scheduler", "max_batch_size", "token_budget", "trace")


def builtin_config(name: str) -> Path | None:
    folder = resources.files("capsim.capsearch").joinpath("configs")
    candidate = folder.joinpath(name if name.endswith((".yml", ".yaml")) else f"{name}.yml")
    return Path(str(candidate)) if candidate.is_file() else None


def builtin_config_names() -> list[str]:
    folder = resources.files("capsim.capsearch").joinpath("configs")
    return sorted(p.name.removesuffix(".yml") for p in folder.iterdir() if p.name.endswith(".yml"))


def search_options(command):
    options = [
        click.option("--config-path", "config_paths", multiple=True,
                     help=f"Experiment YAML (Sarathi-Serve OSDI schema), or a built-in one: {', '.join(builtin_config_names())}. "
                          f"Repeatable. With neither a config nor system flags: {' + '.join(DEFAULT_CONFIGS)}."),
        click.option("--trace", default="chat", show_default=True, help="Single-system mode: built-in trace or trace file."),
        click.option("--start-qps", type=float, default=1.0, show_default=True, help="Single-system mode: the first QPS tried."),
        click.option("--granularity", type=float, default=0.025, show_default=True, help="Stop when the bracket is this close (relative)."),
        click.option("--max-iterations", "--max-trials", "max_trials", type=click.IntRange(min=1), default=20, show_default=True),
        click.option("--early-stop/--no-early-stop", default=True, show_default=True, help="Cut trials that can no longer pass."),
        click.option("--executor", type=click.Choice(EXECUTORS), default="process", show_default=True),
        click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes [default: the CPU count]."),
        click.option("--ray-address", default=None, help="Join this Ray cluster (--executor ray); the trial cache must be on shared storage."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Trial cache [default: ~/.cache/capsim/trials]."),
    ]

    for option in reversed(options):
        command = option(command)
    return system_options(workload_options(slo_options(command)))


def plan_jobs(ctx: click.Context, system, make_spec, options: dict) -> tuple[list[SearchJob], list[str]]:
    """The searches to run, from configs or from the single-system flags, every input checked."""
    given = lambda name: ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)  # noqa: E731
    slos = slos_from_flags(options) if any(given(f) for f in SLO_FLAGS) else None
    configs = options["config_paths"]
    if not configs and not any(given(f) for f in SYSTEM_FLAGS):
        configs = DEFAULT_CONFIGS
    if configs:
        jobs, notes = [], []
        for name in configs:
            path = builtin_config(name) if not Path(name).exists() and builtin_config(name) else Path(name)
            experiment = load_config(path, slos=slos, overrides=_overrides(options, given))
            jobs += experiment.jobs
            notes += experiment.notes
        if given("engine"):  # an engine on the command line holds for every system of the configs
            jobs = [dataclasses.replace(j, system=dataclasses.replace(j.system, engine=system.engine)) for j in jobs]
            notes.append(f"--engine {system.engine}: every configured system uses {system.engine}'s latencies")
        return jobs, notes
    if not options["start_qps"] > 0:
        raise ConfigError(f"--start-qps must be positive, got {options['start_qps']}")
    labels = (("model", system.model), ("scheduler", system.scheduler), ("trace", options["trace"]), ("parallel", f"tp_{system.tp}_pp_{system.pp}"))
    workload = make_spec(options["trace"])
    workload.requests()  # fail now on a bad trace, not in a worker
    return [SearchJob(system, workload, tuple(slos or slos_from_flags(options)), options["start_qps"], labels,
                      options["granularity"], options["max_trials"], options["early_stop"])], []


def _overrides(options: dict, given) -> dict:
    return {k: options[k] for k in ("granularity", "max_trials") if given(k)}


def check_feasible(jobs: list[SearchJob]) -> None:
    """Refuse searches no QPS can pass: requests longer than the model holds (they would all be
    rejected, hence violations), or a TBT limit below one decode step of the system alone."""
    for job in jobs:
        job.system.scheduler_config()  # first of all: the model must fit the GPUs
        requests = job.workload.requests()
        too_long = int((requests.prompt_tokens + requests.output_tokens > job.system.model_len).sum())
        if too_long:
            raise ConfigError(
                f"{too_long} of {len(requests)} requests of {job.workload.trace} are longer than the max model length "
                f"{job.system.model_len} of {job.system.model}, so they could never finish: cap them with "
                f"--max-total-tokens {job.system.model_len}, or raise --max-model-len"
            )
        predictor = job.system.latency_model().predictor
        one_step = predictor(1, 0, 0, 0, 1, 1)
        for slo in job.slos:
            if isinstance(slo, (TbtTtft, Deadline)) and slo.tbt < one_step:
                raise ConfigError(f"TBT limit {slo.tbt:g} s is below one decode step of {job.system.model} on {job.system.hardware} "
                                  f"TP{job.system.tp} alone ({one_step * 1e3:.1f} ms): no QPS can meet it")


def run_searches(jobs: list[SearchJob], options: dict) -> list:
    if not options["early_stop"]:
        jobs = [dataclasses.replace(j, early_stop=False) for j in jobs]
    searches = sum(len(j.slos) for j in jobs)
    with Progress(TextColumn("searching capacity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("search", total=searches)
        return run_jobs(jobs, executor=options["executor"], workers=options["workers"], ray_address=options["ray_address"],
                        cache_dir=options["cache_dir"], on_done=lambda job: bar.advance(task, len(job.slos)))


def print_capacities(capacities: list) -> None:
    table = Table(title="capacity: the highest QPS that meets the SLO", box=box.SIMPLE_HEAD,
                  caption="P99 TBT SLOs come with P50 scheduling delay <= 2 s unless shown")
    for column in ("model", "parallel", "scheduler", "trace", "SLO", "QPS", "bracket", "trials"):
        table.add_column(column, justify="right" if column in ("QPS", "trials") else "left")
    for r in capacity_rows(capacities):
        table.add_row(r["model"], r["parallel"], r["scheduler"], r["trace"], r["slo"], f"{r['capacity_qps']:.3g}", r["bracket"],
                      f"{r['trials']} ({r['cached_trials']} cached)")
    console.print(table)
    for source in sorted({c.latency_source for c in capacities}):
        colour = "yellow" if source.startswith("analytic") else "dim"
        console.print(f"[{colour}]latencies: {source}[/]")


@click.command()
@search_options
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("capsim-results/search"), show_default=True)
@click.pass_context
def search(ctx: click.Context, system, make_spec, output_dir: Path, **options) -> None:
    """Find the capacity of every configuration under every SLO, in simulation.

    With no arguments: the Sarathi-Serve Mistral-7B experiment, strict and relaxed SLOs. Give
    --config-path for other experiments (the OSDI YAML schema), or --model/--scheduler/--trace/...
    for one system. Trials are cached by content, so a second run, or another SLO, reuses them.
    """
    jobs, notes = plan_jobs(ctx, system, make_spec, options)
    check_feasible(jobs)
    for note in notes:
        console.print(f"[dim]{note}[/]")
    capacities = run_searches(jobs, options)
    print_capacities(capacities)
    csv_path, json_path = write_capacity_table(capacities, output_dir)
    plot = plot_capacity_bars(capacities, output_dir / "capacity.png")
    console.print(f"wrote {csv_path}, {json_path}, {plot}")


SWEEP_PARAMETERS = {"tbt": "tbt", "ttft": "ttft", "tpot": "tpot", "miss_rate": "miss_rate"}


@click.command()
@search_options
@click.option("--parameter", type=click.Choice(list(SWEEP_PARAMETERS)), default="tbt", show_default=True, help="The SLO field to vary.")
@click.option("--values", "values_text", default="0.025,0.05,0.1,0.2,0.5,1,2,5", show_default=True, help="Comma-separated values of it.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("capsim-results/sweep"), show_default=True)
@click.pass_context
def sweep(ctx: click.Context, system, make_spec, parameter: str, values_text: str, output_dir: Path, **options) -> None:
    """Capacity as a function of one SLO parameter (e.g. P99 TBT from 25 ms to 5 s).

    Every search lands on the same QPS grid, so the sweep shares trials through the cache: new
    values of a finished sweep are mostly rescoring of cached trials.
    """
    try:
        values = sorted({float(v) for v in values_text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError(f"--values must be numbers separated by commas, got {values_text!r}") from None
    if not values:
        raise ConfigError("--values is empty")
    jobs, notes = plan_jobs(ctx, system, make_spec, options)
    swept = []
    for job in jobs:
        base = job.slos[0]
        if not hasattr(base, parameter):
            raise ConfigError(f"a {base.kind} SLO has no {parameter!r}; choose --parameter among its fields")
        # one job a value, so that values run in parallel; the QPS grid lets them share trials
        swept += [dataclasses.replace(job, slos=(dataclasses.replace(base, **{parameter: v}),)) for v in values]
    for note in notes:
        console.print(f"[dim]{note}[/]")
    capacities = run_searches(swept, options)
    print_capacities(capacities)
    csv_path, json_path = write_capacity_table(capacities, output_dir, stem="sweep")
    plot = plot_sensitivity(capacities, parameter, output_dir / "sweep.png")
    console.print(f"wrote {csv_path}, {json_path}, {plot}")
