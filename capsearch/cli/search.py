"""`capsim search` (capacity for every configuration and SLO) and `capsim sweep` (capacity as a
function of one SLO parameter), with the flags of Sarathi-Serve and Etalon."""

from __future__ import annotations

import dataclasses
import math
import sys
from importlib import resources
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from capsim.capsearch import api
from capsim.capsearch.capacity.jobs import SearchJob
from capsim.capsearch.capacity.trials import TrialLimits
from capsim.capsearch.capacity.workers import pool_size
from capsim.capsearch.cli.options.run import output_options, parallel_options, start_workers, time_limit
from capsim.capsearch.cli.options.search import EARLY_STOP, SCREEN, START_QPS
from capsim.capsearch.cli.options.slo import slo_options
from capsim.capsearch.cli.options.system import option_given, system_options
from capsim.capsearch.cli.options.workload import TRACE, workload_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.config import load_config
from capsim.capsearch.experiments.conventions import MAX_TRIALS, WORDS
from capsim.capsearch.experiments.schema import workload_words
from capsim.capsearch.experiments.slo_flags import SLO_FLAGS, defaults_words, flag_convention, slos_and_defaults
from capsim.capsearch.report.capacity import (
    capacity_table,
    parallel_words,
    scheduler_words,
)
from capsim.capsearch.report.figures import import_pyplot_in_background
from capsim.capsearch.report.results_dir import results_dir
from capsim.sim import SimulationError, SystemSpec
from capsim.traces import TraceError

console = Console(width=None if sys.stdout.isatty() else 180)  # files and pipes get wide tables
DEFAULT_CONFIGS = ("mistral7b_strict", "mistral7b_relaxed")
# With a config, these name the configs' own jobs: refused rather than guessed at.
JOB_FLAGS = {
    "model": "models",
    "tp": "parallel_spec",
    "pp": "parallel_spec",
    "scheduler": "schedulers",
    "token_budget": "schedulers' chunk_size",
    "trace": "traces",
}
SYSTEM_FLAGS = ("model", "hardware", "tp", "pp", "replicas", "scheduler", "max_batch_size", "token_budget", "trace")
# With a config, these replace the value of every job, and the output says so.
SYSTEM_OVERRIDES = {
    "hardware": "hardware",
    "replicas": "replicas",
    "max_batch_size": "max_batch_size",
    "block_size": "block_size",
    "max_model_len": "max_model_len",
    "memory_utilization": "memory_utilization",
    "num_kv_blocks": "num_kv_blocks",
    "router": "router",
    "prefix_caching": "prefix_caching",
    "pipeline_scheduling": "pipeline_scheduling",
    "engine": "engine",
    "profile_path": "profile",
    "host_time": "host_time",
    "async_scheduling": "async_scheduling",
    "quant": "quant",
    "kv_cache_dtype": "kv_cache_dtype",
}
WORKLOAD_OVERRIDES = {
    "format_": "format",
    "num_requests": "num_requests",
    "seed": "seed",
    "max_total_tokens": "max_total_tokens",
    "prompt_scale": "prompt_scale",
    "output_scale": "output_scale",
    "shuffle": "shuffle",
    "arrival": "arrival",
    "cv": "cv",
    "cap_gaps": "cap_gaps",
}
JOB_OVERRIDES = ("start_qps", "granularity", "min_search_granularity", "max_trials", "time_limit")


def builtin_config(name: str) -> Path | None:
    folder = resources.files("capsim.capsearch.experiments").joinpath("configs")
    candidate = folder.joinpath(name if name.endswith((".yml", ".yaml")) else f"{name}.yml")
    return Path(str(candidate)) if candidate.is_file() else None


def builtin_config_names() -> list[str]:
    folder = resources.files("capsim.capsearch.experiments").joinpath("configs")
    return sorted(p.name.removesuffix(".yml") for p in folder.iterdir() if p.name.endswith(".yml"))


def search_options(command):
    options = [
        click.option(
            "--config-path",
            "config_paths",
            multiple=True,
            help=f"Experiment YAML: Sarathi-Serve's OSDI schema or Etalon's capacity-search schema, or a built-in one: "
            f"{', '.join(builtin_config_names())}. Repeatable. With no config and none of --model, --hardware, --tp, "
            f"--pp, --replicas, --scheduler, --max-batch-size, --chunk-size, --trace: {' + '.join(DEFAULT_CONFIGS)}; "
            "the other options then apply to it as to any config.",
        ),
        TRACE,
        START_QPS,
        click.option(
            "--granularity",
            type=float,
            default=0.025,
            show_default=True,
            help="Stop when the bracket is this close (relative; the QPS grid's step).",
        ),
        click.option(
            "--min-search-granularity",
            type=float,
            default=None,
            help="The peers' spelling of --granularity, in percent (2.5 = 0.025).",
        ),
        click.option(
            "--max-iterations",
            "--max-trials",
            "max_trials",
            type=click.IntRange(1, MAX_TRIALS),
            default=20,
            show_default=True,
        ),
        time_limit(
            "m",
            "Simulated time a trial may run, then requests still running are left out of its score, as "
            "Sarathi-Serve scores a trial cut by its time limit [default: arrivals plus as long again, at least "
            "2 minutes, unfinished requests counting as violations]",
        ),
        click.option(
            "--profile-dir",
            default=None,
            help="Etalon's prefill-profile folder: in simulation the first-token deadline starts after the simulated "
            "system's own predicted prefill time instead, and the output says so.",
        ),
        EARLY_STOP,
        SCREEN,
        parallel_options,
    ]

    for option in reversed(options):
        command = option(command)
    return system_options(disaggregated=True)(workload_options(slo_options(command)))


@dataclasses.dataclass
class Plan:
    jobs: list[SearchJob]
    notes: list[str]
    etalon: bool = (
        False  # an Etalon config: -o gets a subfolder a SLO type, as Etalon's commands share one --output-dir
    )


def plan_jobs(ctx: click.Context, system, make_spec, options: dict) -> Plan:
    """The searches to run, from configs or from the one-system flags, every input checked and
    every option given either applied (with a note) or refused."""
    given = option_given
    if not options["start_qps"] > 0 or not math.isfinite(options["start_qps"]):
        raise ConfigError(f"--start-qps must be a positive number, got {options['start_qps']}")
    flags_convention = flag_convention(options, given)
    explicit = options.get("slo_defaults")
    slos_given = any(given(f) for f in SLO_FLAGS)
    granularity = _granularity(options, given)
    limits = _trial_limits(options)
    notes = []
    if options.get("profile_dir") is not None:
        notes.append(
            f"--profile-dir {options['profile_dir']}: Etalon's measured prefill predictor is for a real engine; in "
            "simulation each first-token deadline starts after the simulated system's own predicted prefill time"
        )
    configs = options["config_paths"]
    if not configs and not any(given(f) for f in SYSTEM_FLAGS) and not given("disagg"):
        configs = DEFAULT_CONFIGS
        notes.append(f"no config and no system flag: the built-in {' + '.join(DEFAULT_CONFIGS)} experiment")
    if configs:
        paths = [
            builtin_config(name) if not Path(name).exists() and builtin_config(name) else Path(name) for name in configs
        ]
        for path in paths:
            if not path.is_file():
                raise ConfigError(
                    f"{path}: no such config file"
                    + ("" if path.exists() else f" (nor a built-in one: {', '.join(builtin_config_names())})")
                )
        refused = [_flag(name) if name != "token_budget" else "--chunk-size" for name in JOB_FLAGS if given(name)]
        if refused:
            raise ConfigError(
                f"{', '.join(refused)} cannot apply to a config, whose "
                f"{', '.join(sorted({JOB_FLAGS[n] for n in JOB_FLAGS if given(n)}))} "
                "define its searches: edit the config, or leave out the config (and --config-path) for a one-system "
                "search"
            )
        jobs, etalon = [], False
        filled = {}  # convention -> the SLO fields its defaults filled

        def cli_slos(convention):
            slos, filled[convention] = slos_and_defaults(options, convention)
            return slos

        for path in paths:
            experiment = load_config(
                path,
                slos=(lambda c: cli_slos(explicit or flags_convention or c)) if slos_given else None,
                slo_defaults=explicit,
            )
            etalon |= experiment.convention == "etalon"
            notes += experiment.notes
            convention = explicit or flags_convention or experiment.convention
            source = experiment.slo_source + (
                defaults_words(filled.get(convention, []), convention)
                if experiment.slo_source == "the command line"
                else ""
            )
            jobs += [dataclasses.replace(j, conventions=(("SLOs", source), *j.conventions)) for j in experiment.jobs]
        jobs, override_notes = _apply_overrides(jobs, system, make_spec, options, given, granularity, limits)
        return Plan(jobs, notes + override_notes, etalon=etalon)
    convention = explicit or flags_convention or "capsim"
    slos, filled = slos_and_defaults(options, convention)
    labels = (
        ("model", system.model),
        ("scheduler", system.scheduler),
        ("trace", options["trace"]),
        ("parallel", system.parallel_label),
    )
    workload = make_spec(options["trace"])
    workload.requests()  # fail now on a bad trace, not in a worker
    source = "the command line" + defaults_words(filled, convention) if slos_given else f"{WORDS[convention]} defaults"
    conventions = (("SLOs", source), ("workload", workload_words(workload)))
    return Plan(
        [
            SearchJob(
                system,
                workload,
                tuple(slos),
                options["start_qps"],
                labels,
                granularity,
                options["max_trials"],
                options["early_stop"],
                limits,
                conventions,
            )
        ],
        notes,
    )


def _granularity(options: dict, given) -> float:
    if options.get("min_search_granularity") is not None:
        if given("granularity"):
            raise ConfigError("--granularity and --min-search-granularity set the same thing: give one")
        percent = options["min_search_granularity"]
        if not 0 < percent < 100:
            raise ConfigError(f"--min-search-granularity is a percentage in (0, 100), got {percent}")
        return percent / 100
    if not 0 < options["granularity"] < 1:
        raise ConfigError(f"--granularity must be a fraction in (0, 1), got {options['granularity']}")
    return options["granularity"]


def _trial_limits(options: dict) -> TrialLimits:
    minutes = options.get("time_limit")
    if minutes is None:
        return TrialLimits()
    if not 0 < minutes < math.inf:
        raise ConfigError(f"--time-limit is a positive number of minutes, got {minutes}")
    return TrialLimits(time_limit_s=minutes * 60, completed_only=True)


def _apply_overrides(jobs, system, make_spec, options, given, granularity, limits) -> tuple[list[SearchJob], list[str]]:
    """Options given with a config replace that value in every job, each said in a note."""
    synthetic = [_flag(f) for f in ("random_input_len", "random_output_len", "random_range_ratio") if given(f)]
    if synthetic:
        raise ConfigError(
            f"{', '.join(synthetic)} make the `random` trace, and a config names its own traces: edit the config, "
            "or search one system without it"
        )
    spec = make_spec("chat")  # the workload flags' values; the trace is the config's
    system_changes = {field: getattr(system, field) for flag, field in SYSTEM_OVERRIDES.items() if given(flag)}
    workload_changes = {field: getattr(spec, field) for flag, field in WORKLOAD_OVERRIDES.items() if given(flag)}
    if given("burstiness"):  # vLLM's gamma shape: it sets the arrival process and its CV
        workload_changes |= {"arrival": spec.arrival, "cv": spec.cv, "cap_gaps": False}
    job_changes = {
        field: value
        for field, value, flags in (
            ("start_qps", options["start_qps"], ("start_qps",)),
            ("granularity", granularity, ("granularity", "min_search_granularity")),
            ("max_trials", options["max_trials"], ("max_trials",)),
        )
        if any(map(given, flags))
    }
    values = {
        **{f: getattr(system, field) for f, field in SYSTEM_OVERRIDES.items()},
        **{f: getattr(spec, field) for f, field in WORKLOAD_OVERRIDES.items()},
        **{f: options[f] for f in JOB_OVERRIDES},
    }
    notes = [
        f"{_flag(f)} {('on' if v else 'off') if isinstance(v, bool) else f'{v:g}' if isinstance(v, float) else v}: "
        "applied to every search of the config"
        for f, v in values.items()
        if given(f)
    ]
    if given("burstiness"):
        notes.append(
            f"--burstiness: {spec.arrival} arrivals"
            + (f" (cv {spec.cv:.3g})" if spec.cv else "")
            + " applied to every search of the config"
        )
    if workload_changes.get("arrival", "poisson") != "poisson" and not given("cap_gaps"):
        workload_changes["cap_gaps"] = False  # the peers' cap is for Poisson gaps only
    changed = []
    for job in jobs:
        try:
            new_system = (
                dataclasses.replace(job.system, **system_changes)
                if isinstance(job.system, SystemSpec)
                else job.system.with_pools(**system_changes)
            )
            new_workload = dataclasses.replace(job.workload, **workload_changes)
        except (SimulationError, TraceError) as error:
            raise ConfigError(f"with the options given: {error}") from None
        trial = dataclasses.replace(limits, send_window_s=job.trial.send_window_s) if given("time_limit") else job.trial
        conventions = dict(job.conventions) | {"workload": workload_words(new_workload)}
        changed.append(
            dataclasses.replace(
                job,
                system=new_system,
                workload=new_workload,
                trial=trial,
                conventions=tuple(conventions.items()),
                **job_changes,
            )
        )
    return changed, notes


def _flag(name: str) -> str:
    """The command-line spelling of an option's parameter name."""
    return "--" + name.removesuffix("_path").rstrip("_").replace("_", "-")


def run_searches(jobs: list[SearchJob], options: dict) -> api.Capacities:
    if not options["early_stop"]:
        jobs = [dataclasses.replace(j, early_stop=False) for j in jobs]
    if not options["screen"]:
        jobs = [dataclasses.replace(j, screen=False) for j in jobs]
    searches = sum(len(j.slos) for j in jobs)
    pool = pool_size(options["executor"], options["workers"], len(jobs))
    left = [len(jobs)]
    with Progress(
        TextColumn("searching capacity"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("search", total=searches)

        def done(job: SearchJob) -> None:
            bar.advance(task, len(job.slos))
            left[0] -= 1
            if pool > 1 and left[0] == pool:  # the last searches are running: ready the plot beside them
                import_pyplot_in_background()

        return api.search_jobs(
            jobs,
            executor=options["executor"],
            workers=options["workers"],
            ray_address=options["ray_address"],
            cache_dir=options["cache_dir"],
            on_done=done,
        )


def print_plan(plan: Plan) -> None:
    """What will be searched, before the first trial."""
    table = Table(title="searching", box=box.SIMPLE_HEAD)
    for column in ("model", "GPU", "TP/PP", "scheduler", "trace", "workload", "start QPS", "engine"):
        table.add_column(column)
    for job in plan.jobs:
        labels = dict(job.labels)
        table.add_row(
            labels.get("model", job.system.model),
            job.system.hardware,
            parallel_words(job.system.to_dict()),
            scheduler_words(labels.get("scheduler"), job.system.to_dict()),
            labels.get("trace", job.workload.trace),
            dict(job.conventions).get("workload", ""),
            f"{job.start_qps:g}",
            job.system.engine,
        )
    console.print(table)
    for slo in dict.fromkeys(s for job in plan.jobs for s in job.slos):
        console.print(f"SLO {slo.name}: " + " and ".join(slo.clauses))
    for words in sorted({f"{k}: {v}" for job in plan.jobs for k, v in job.trial.describe().items()}):
        console.print(f"[dim]{words}[/]")
    for note in dict.fromkeys(plan.notes):
        console.print(f"[dim]{note}[/]")


def print_capacities(capacities: list) -> None:
    table = capacity_table(capacities)
    console.print(table)
    for source in sorted({c.latency_source for c in capacities}):
        colour = "yellow" if source.startswith("analytic") else "dim"
        console.print(f"[{colour}]latencies: {source}[/]")
    for words in sorted({f"{k}: {v}" for c in capacities for k, v in c.conventions.items() if k != "workload"}):
        console.print(f"[dim]{words}[/]")
    for c in capacities:
        if c.too_short:
            console.print(
                f"[yellow]{c.labels.get('model')} {c.labels.get('scheduler')} {c.labels.get('trace')}, {c.slo_name}: "
                f"{c.too_short}[/]"
            )


@click.command()
@search_options
@output_options("search")
@click.pass_context
def search(ctx: click.Context, system, make_spec, output_dir: Path | None, overwrite: bool, **options) -> None:
    """Find the capacity of every configuration under every SLO, in simulation.

    With no arguments: the Sarathi-Serve Mistral-7B experiment, strict and relaxed SLOs, on the
    paper's GPU. Give --config-path for other experiments (Sarathi-Serve's OSDI schema or Etalon's
    schema, read unchanged), or --model/--scheduler/--trace/... for one system. Trials are cached
    by content, so a second run, or another SLO, reuses them.
    """
    plan = plan_jobs(ctx, system, make_spec, options)
    start_workers(options, len(plan.jobs))
    api.check_feasible(plan.jobs)
    if output_dir is not None and plan.etalon:
        output_dir = output_dir / "_".join(sorted({slo.kind for job in plan.jobs for slo in job.slos}))
        plan.notes.append(
            f"an Etalon config: results in {output_dir}, a subfolder a SLO type, as Etalon's runs share one "
            f"--output-dir"
        )
    folder = results_dir(output_dir, "search", overwrite)
    print_plan(plan)
    capacities = run_searches(plan.jobs, options)
    print_capacities(capacities)
    capacities.write(folder)
    console.print(f"wrote {folder}/: capacity.csv, capacity.json, capacity.png")


SWEEP_PARAMETERS = {
    "tbt": "tbt",
    "ttft": "ttft",
    "tpot": "tpot",
    "e2el": "e2el",
    "miss_rate": "miss_rate",
    "attainment": "attainment",
}


@click.command()
@search_options
@click.option(
    "--parameter",
    type=click.Choice(list(SWEEP_PARAMETERS)),
    default="tbt",
    show_default=True,
    help="The SLO field to vary.",
)
@click.option(
    "--values",
    "values_text",
    default="0.025,0.05,0.1,0.2,0.5,1,2,5",
    show_default=True,
    help="Comma-separated values of it.",
)
@output_options("sweep")
@click.pass_context
def sweep(
    ctx: click.Context,
    system,
    make_spec,
    parameter: str,
    values_text: str,
    output_dir: Path | None,
    overwrite: bool,
    **options,
) -> None:
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
    plan = plan_jobs(ctx, system, make_spec, options)
    start_workers(options, len(plan.jobs) * len(values))
    swept = []
    for job in plan.jobs:
        base = job.slos[0]
        if not hasattr(base, parameter):
            raise ConfigError(f"a {base.kind} SLO has no {parameter!r}; choose --parameter among its fields")
        # one job a value, so that values run in parallel; the QPS grid lets them share trials
        swept += [dataclasses.replace(job, slos=(dataclasses.replace(base, **{parameter: v}),)) for v in values]
    api.check_feasible(swept)
    folder = results_dir(output_dir, "sweep", overwrite)
    print_plan(Plan(swept, plan.notes))
    capacities = run_searches(swept, options)
    print_capacities(capacities)
    capacities.write(folder, stem="sweep", sweep_parameter=parameter)
    console.print(f"wrote {folder}/: sweep.csv, sweep.json, sweep.png")
