"""`capsim validate`: replay real measurements and report simulated against measured, row by row.

The real runs NVIDIA ships with its kernel database (silicon_sample.csv in the kernel-db
extra), or a file of the same columns. Rows capsim cannot price are counted with the reason.
A user's own `capsim bench` runs are replayed by `capsim simulate --against` (cli/simulate.py),
which has the deployment options.
Files: validation.csv (one row a run), validation.json (rows, groups, what was left out, how),
validation.png (predicted against measured TTFT and TPOT, with the y = x line).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from capsim.capsearch import api
from capsim.capsearch.api import check_dataset_entries, validation_runs
from capsim.capsearch.cli.options.run import output_options
from capsim.capsearch.cli.options.system import HOST_TIME
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.validate import summary
from capsim.capsearch.report.results_dir import results_dir
from capsim.profiles.host_time import host_time as shipped_host_time
from capsim.traces.client import ClosedLoop

console = Console(width=None if sys.stdout.isatty() else 200)


def _choices(value: str | None) -> set[str] | None:
    return None if value is None else {v.strip() for v in value.split(",") if v.strip()}


@click.command()
@click.option(
    "--measurements",
    "measurements_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A silicon-sample CSV [default: the one in the installed aiconfigurator-core]. A `capsim bench` folder "
    "is replayed by `capsim simulate --against DIR` on the deployment it measured.",
)
@click.option("--engine", default=None, help="Only these engines (vllm, sglang, trtllm; comma-separated).")
@click.option("--model", default=None, help="Only these catalog models (comma-separated).")
@click.option("--hardware", default=None, help="Only these GPUs (comma-separated).")
@click.option("--quant", default=None, help="Only these weight precisions (bf16, fp8).")
@HOST_TIME
@click.option(
    "--dataset-entries",
    type=click.IntRange(1, 10**6),
    default=None,
    help="aiperf runs: the client cycles through this many distinct prompts, which the engines' prefix caches "
    "then serve (aiperf's default is 100) [default: every prompt new].",
)
@click.option("--limit", type=click.IntRange(1, 10**6), default=None, help="The first N matching runs only.")
@output_options("validate")
def validate(
    measurements_path: Path | None,
    engine: str | None,
    model: str | None,
    hardware: str | None,
    quant: str | None,
    host_time: str,
    dataset_entries: int | None,
    limit: int | None,
    output_dir: Path | None,
    overwrite: bool,
) -> None:
    """Replay real closed-loop runs (vLLM, SGLang, TensorRT-LLM) in simulation: TTFT and TPOT, sim against real.

    Each run is simulated as it was measured: its engine's own batching policy and serve
    defaults on that GPU, the kernel database's step times plus the engine's host time, and
    the client that measured it (aiperf: all users at once, 20 requests a user, warm-up left
    out). Errors are simulated / measured - 1. Runs the host time was fitted on are marked.
    """
    if measurements_path is not None and measurements_path.is_dir():
        raise ConfigError(
            f"{measurements_path} is a folder: replay a `capsim bench` folder with `capsim simulate --against "
            f"{measurements_path}` and the deployment it measured (--model, --hardware, --tp, --engine, ...); "
            "--measurements takes a silicon-sample CSV"
        )
    folder = results_dir(output_dir, "validate", overwrite)
    measurements, skipped = validation_runs(
        measurements_path,
        engine=_choices(engine),
        model=_choices(model),
        hardware=_choices(hardware),
        quant=_choices(quant),
    )
    measurements = measurements[:limit] if limit else measurements
    check_dataset_entries(measurements, dataset_entries)
    aiperf = sum(m.client == "aiperf" for m in measurements)
    console.print(
        f"[dim]{len(measurements)} runs to replay from "
        f"{measurements_path or 'silicon_sample.csv (aiconfigurator-core)'}; "
        f"{sum(skipped.values())} left out: " + "; ".join(f"{n} {reason}" for reason, n in skipped.items()) + "[/]"
    )
    for name in sorted({m.engine for m in measurements}):
        shipped = shipped_host_time(name)
        console.print(f"[dim]{shipped.words if shipped and host_time == 'on' else f'{name}: no host time added'}[/]")
    if dataset_entries is not None and aiperf:
        console.print(
            f"[yellow]aiperf runs ({aiperf}): prompts repeat, {dataset_entries} distinct ones, served from the "
            f"engines' prefix caches[/]"
        )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=len(measurements))
        result = api.validate(
            host_time=host_time == "on",
            dataset_entries=dataset_entries,
            runs=measurements,
            skipped=skipped,
            progress=lambda _: progress.advance(task),
        )
    failed = [r for r in result.rows if r["why_not"]]
    _print(result.groups, host_time == "on")
    _print_systems(result.replays, result.rows)
    if failed:
        console.print(
            f"[yellow]{len(failed)} runs could not be simulated, e.g. {failed[0]['id']}: {failed[0]['why_not']}[/]"
        )
    result.write(folder)
    console.print(f"wrote {folder}/: validation.csv, validation.json, validation.png")


def _print(groups: dict, host_on: bool) -> None:
    table = Table(
        title="simulated against measured (median signed error, median |error|, %)"
        + ("" if host_on else "; host time off")
    )
    for column in ("engine", "runs", "set", "TTFT median", "TTFT median |err|", "TPOT median", "TPOT median |err|"):
        table.add_column(column, justify="left" if column in ("engine", "set") else "right")
    for row in groups["engine_fitted"]:
        table.add_row(
            row["engine"],
            str(row["rows"]),
            row["rows_set"],
            f"{row['ttft_median_error_pct']:+.1f}",
            f"{row['ttft_median_abs_error_pct']:.1f}",
            f"{row['tpot_median_error_pct']:+.1f}",
            f"{row['tpot_median_abs_error_pct']:.1f}",
        )
    console.print(table)


def _print_systems(replays, rows: list[dict]) -> None:
    """Per system: what was simulated (kernels, scheduler, client) and how close it came."""
    table = Table(title="per system: simulated / measured - 1, median signed, median |error| (%)")
    for column in ("engine, model, GPU, weights", "runs", "client", "scheduler", "kernels", "TTFT", "TPOT"):
        table.add_column(column, justify="right" if column == "runs" else "left")
    keys = ("engine", "model", "hardware", "quant")
    for group in summary(replays, keys):
        members = [r for r in rows if tuple(r[k] for k in keys) == tuple(group[k] for k in keys) and not r["why_not"]]
        kernels = sorted({r["latency_source"].split(" + ")[0] for r in members})
        table.add_row(
            ", ".join(str(group[k]) for k in keys),
            str(group["rows"]),
            ", ".join(sorted({r["client"] for r in members})),
            ", ".join(sorted({r["scheduler"] for r in members})),
            "; ".join(kernels),
            f"{group['ttft_median_error_pct']:+.1f} / {group['ttft_median_abs_error_pct']:.1f}",
            f"{group['tpot_median_error_pct']:+.1f} / {group['tpot_median_abs_error_pct']:.1f}",
        )
    console.print(table)
    for name, client in (("aiperf", ClosedLoop.aiperf(8)), ("inferencemax", ClosedLoop.inferencemax(8))):
        if any(r["client"] == name for r in rows):
            console.print(f"[dim]client {name}, as it runs 8 users: {client.words}[/]")
