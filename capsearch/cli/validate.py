"""`capsim validate`: replay real measurements and report simulated against measured, row by row.

The real runs NVIDIA ships with its kernel database (silicon_sample.csv in the kernel-db
extra), or a file of the same columns. Rows capsim cannot price are counted with the reason.
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

from capsim.capsearch.cli.options.run import output_options
from capsim.capsearch.cli.options.system import HOST_TIME
from capsim.capsearch.load.validate import GROUP_KEYS, replay_all, summary
from capsim.capsearch.report.results_dir import ResultSet, results_dir, write_csv, write_json
from capsim.profiles.errors import ProfileError
from capsim.profiles.host_time import host_time as shipped_host_time
from capsim.profiles.host_time import training_rows
from capsim.profiles.measurements import read_silicon_sample
from capsim.traces.client import ClosedLoop

console = Console(width=None if sys.stdout.isatty() else 200)
COLUMNS = (
    "id",
    "engine",
    "engine_version",
    "model",
    "hardware",
    "quant",
    "kv_quant",
    "tp",
    "isl",
    "osl",
    "concurrency",
    "concurrency_bucket",
    "fitted_on",
    "measured_ttft_ms",
    "simulated_ttft_ms",
    "ttft_error",
    "measured_tpot_ms",
    "simulated_tpot_ms",
    "tpot_error",
    "scheduler",
    "client",
    "latency_source",
    "why_not",
    "source",
)


def _choices(value: str | None) -> set[str] | None:
    return None if value is None else {v.strip() for v in value.split(",") if v.strip()}


@click.command()
@click.option(
    "--measurements",
    "measurements_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A silicon-sample CSV [default: the one in the installed aiconfigurator-core].",
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
    folder = results_dir(output_dir, "validate", overwrite)
    measurements, skipped = read_silicon_sample(measurements_path)
    if not measurements:
        raise ProfileError(
            f"{measurements_path or 'the silicon sample'}: no run capsim can replay ("
            + "; ".join(f"{n} {reason}" for reason, n in skipped.most_common(3))
            + "): give runs of dense models "
            "on aggregated deployments, 16-bit or FP8"
        )
    wanted = {
        "engine": _choices(engine),
        "model": _choices(model),
        "hardware": _choices(hardware),
        "quant": _choices(quant),
    }
    for key, values in wanted.items():
        if values is None:
            continue
        known = {getattr(m, key) for m in measurements}
        unknown = sorted(values - known)
        if unknown:
            raise ProfileError(
                f"--{key} {', '.join(unknown)}: no run capsim can replay has it; the runs have "
                f"{', '.join(sorted(map(str, known)))}"
            )
        measurements = [m for m in measurements if getattr(m, key) in values]
    measurements = measurements[:limit] if limit else measurements
    fitted = training_rows()
    aiperf = sum(m.client == "aiperf" for m in measurements)
    if dataset_entries is not None and not aiperf:
        raise ProfileError(
            "--dataset-entries shapes aiperf's prompts, and none of these runs was measured with aiperf: drop it"
        )
    console.print(
        f"[dim]{len(measurements)} runs to replay from "
        f"{measurements_path or 'silicon_sample.csv (aiconfigurator-core)'}; "
        f"{sum(skipped.values())} left out: "
        + "; ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        + "[/]"
    )
    for name in sorted({m.engine for m in measurements}):
        shipped = shipped_host_time(name)
        console.print(f"[dim]{shipped.words if shipped and host_time == 'on' else f'{name}: no host time added'}[/]")
    if dataset_entries is not None:
        console.print(
            f"[yellow]aiperf runs ({aiperf}): prompts repeat, {dataset_entries} distinct ones, served from the "
            f"engines' "
            "prefix caches[/]"
        )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=len(measurements))
        replays = replay_all(measurements, host_time == "on", lambda _: progress.advance(task), dataset_entries)
    rows = [r.row() | {"fitted_on": r.measurement.id in fitted} for r in replays]
    failed = [r for r in rows if r["why_not"]]
    groups = {
        "engine": summary(replays),
        "engine_fitted": _fitted_summary(replays, fitted),
        "engine_concurrency": summary(replays, ("engine", "concurrency_bucket")),
        "detailed": summary(replays, GROUP_KEYS),
    }
    _print(groups, host_time == "on")
    _print_systems(replays, rows)
    if failed:
        console.print(
            f"[yellow]{len(failed)} runs could not be simulated, e.g. {failed[0]['id']}: {failed[0]['why_not']}[/]"
        )
    with ResultSet(folder) as staging:
        write_csv(staging / "validation.csv", rows, COLUMNS)
        write_json(
            staging / "validation.json",
            {
                "what": "real closed-loop runs replayed in simulation; errors are simulated / measured - 1",
                "clients": {
                    "aiperf": ClosedLoop.aiperf(8).words + " (shown at 8 users)",
                    "inferencemax": ClosedLoop.inferencemax(8).words + " (shown at 8 users)",
                },
                "host_time": host_time,
                "dataset_entries": dataset_entries,
                "skipped": dict(skipped.most_common()),
                "not_simulated": len(failed),
                "groups": groups,
                "rows": rows,
            },
        )
        _plot(rows, staging / "validation.png")
    console.print(f"wrote {folder}/: validation.csv, validation.json, validation.png")


def _fitted_summary(replays, fitted: set[str]) -> list[dict]:
    out = []
    for label, keep in (("fitted on", True), ("not fitted on", False)):
        chosen = [r for r in replays if (r.measurement.id in fitted) == keep]
        out += [row | {"rows_set": label} for row in summary(chosen)]
    return out


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


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for axis, metric in zip(axes, ("ttft", "tpot")):
        values = [v for r in rows for v in (r[f"measured_{metric}_ms"], r[f"simulated_{metric}_ms"]) if v]
        low, high = (min(values) / 1.5, max(values) * 1.5) if values else (0.1, 1.0)
        for index, engine in enumerate(sorted({r["engine"] for r in rows})):
            for fitted in (True, False):  # filled: runs the host time was fitted on; hollow: the others
                points = [
                    (r[f"measured_{metric}_ms"], r[f"simulated_{metric}_ms"])
                    for r in rows
                    if r["engine"] == engine and r["fitted_on"] == fitted and r[f"simulated_{metric}_ms"] is not None
                ]
                if points:
                    x, y = zip(*points)
                    colour = f"C{index}"
                    axis.scatter(
                        x,
                        y,
                        s=12,
                        alpha=0.7,
                        label=f"{engine}, {'fitted on' if fitted else 'not fitted on'}",
                        facecolors=colour if fitted else "none",
                        edgecolors=colour,
                    )
        axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="y = x")
        axis.fill_between(
            [low, high], [low * 0.8, high * 0.8], [low * 1.2, high * 1.2], color="grey", alpha=0.15, label="within 20%"
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_xlabel(f"measured mean {metric.upper()} (ms)")
        axis.set_ylabel(f"simulated mean {metric.upper()} (ms)")
        axis.legend(fontsize=7)
    figure.suptitle("capsim against real closed-loop runs (silicon sample)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
