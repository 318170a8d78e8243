"""`capsim traces`: list the built-in traces, inspect, convert and sample workloads."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from capsim.capsearch.cli.options.workload import TRACE_FORMAT, workload_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.report.results_dir import new_file
from capsim.common.files import strict_dumps, write_atomically
from capsim.traces import FORMATS, WorkloadSpec, builtin_traces, get_builtin, load_trace
from capsim.traces.spec import MAX_REQUESTS, open_trace
from capsim.traces.summary import summarize

console = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes get wide tables


@click.group()
def traces() -> None:
    """Workloads: built-in traces and real trace files.

    A TRACE is a built-in trace's name (see `capsim traces list`) or a file: a Sarathi-Serve /
    Etalon / Vidur processed CSV, an Azure LLM inference CSV, a BurstGPT CSV, a Mooncake JSONL,
    or a Parquet workload written by capsim.
    """


@traces.command("list")
def list_traces() -> None:
    """The built-in traces and their length figures."""
    table = Table(title="built-in traces (lengths in tokens)")
    for column in ("name", "prompt P50", "prompt P90", "output P50", "output P90", "max total", "what it is"):
        table.add_column(
            column, justify="left" if column in ("name", "what it is") else "right", no_wrap=column == "name"
        )
    for name, trace in builtin_traces().items():
        quantile = lambda grid, values, p: f"{float(values[list(grid).index(p)]):.0f}"  # noqa: E731
        sample = trace.sample(20_000, seed=0)
        table.add_row(
            name,
            quantile(trace.probabilities, trace.prompt_quantiles, 0.5),
            quantile(trace.probabilities, trace.prompt_quantiles, 0.9),
            f"{_percentile(sample.output_tokens, 50):.0f}",
            f"{_percentile(sample.output_tokens, 90):.0f}",
            str(trace.max_total_tokens or "-"),
            trace.description,
        )
    console.print(table)
    console.print("`capsim traces show NAME` says what each was derived from.")
    console.print("Formats a trace file may have: " + "; ".join(f"[bold]{k}[/]: {v}" for k, v in FORMATS.items()))


@traces.command()
@click.argument("trace")
@TRACE_FORMAT
@click.option(
    "-n",
    "--num-requests",
    type=click.IntRange(1, MAX_REQUESTS),
    default=10_000,
    show_default=True,
    help="Sample size for a built-in trace (a file is shown whole).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a built-in trace's sample.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the figures to this JSON file.",
)
def show(trace: str, format_: str | None, num_requests: int, seed: int, json_path: Path | None) -> None:
    """Count, mean and P50/P90/P99 of prompt and output tokens, and the arrival rate."""
    workload = open_trace(trace, format_, num_requests, seed)
    if trace in builtin_traces():
        console.print(f"{trace}: {get_builtin(trace).description}; derived from {get_builtin(trace).derived_from}")
    summary = summarize(workload)
    table = Table(title=f"{trace}: {summary['requests']} requests")
    for column in ("tokens", "mean", "P50", "P90", "P99", "max"):
        table.add_column(column, justify="left" if column == "tokens" else "right")
    for name in ("prompt_tokens", "output_tokens"):
        s = summary[name]
        table.add_row(
            name.split("_")[0],
            f"{s['mean']:.1f}",
            f"{s['p50']:.0f}",
            f"{s['p90']:.0f}",
            f"{s['p99']:.0f}",
            str(s["max"]),
        )
    console.print(table)
    if "rate_qps" in summary:
        console.print(
            f"arrivals: {summary['rate_qps']:.3f} QPS over {summary['duration_s']:.1f} s, "
            f"inter-arrival CV {summary['interarrival_cv']:.2f}"
        )
    else:
        console.print("arrivals: none in the trace; an arrival process assigns them at a QPS")
    if "prefix_groups" in summary:
        console.print(
            f"shared prefixes: {summary['requests_with_shared_prefix']} requests in {summary['prefix_groups']} groups"
        )
    if summary.get("skipped_failed_requests"):
        console.print(f"skipped: {summary['skipped_failed_requests']} failed requests (0 response tokens)")
    if json_path:
        text = strict_dumps(summary, indent=2)
        write_atomically(json_path, lambda tmp: Path(tmp).write_text(text))


@traces.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The Parquet file to write."
)
@TRACE_FORMAT
@click.option("--overwrite", is_flag=True, help="Replace the -o file if it exists (never the input).")
def convert(path: Path, output: Path, format_: str | None, overwrite: bool) -> None:
    """Convert a trace file into a capsim Parquet workload, every row checked."""
    parquet_file(output, overwrite, inputs=[path])
    workload = load_trace(path, format_)
    workload.to_parquet(output)
    console.print(f"wrote {output}: {len(workload)} requests")


@traces.command()
@click.argument("trace")
@click.option("--qps", type=float, required=True, help="Target request rate (requests per second).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The Parquet file to write."
)
@click.option("--overwrite", is_flag=True, help="Replace the -o file if it exists (never the input).")
@workload_options
def sample(trace: str, qps: float, output: Path, overwrite: bool, make_spec) -> None:
    """Draw N requests of TRACE arriving at QPS, and write them as a Parquet workload."""
    parquet_file(output, overwrite, inputs=[trace])
    spec: WorkloadSpec = make_spec(trace)
    workload = spec.at_qps(qps)
    workload.to_parquet(output)
    console.print(f"wrote {output}: {len(workload)} requests at {qps:g} QPS ({spec.arrival}), seed {spec.seed}")


def parquet_file(output: Path, overwrite: bool, inputs) -> Path:
    """-o of a command that writes a Parquet workload: a name that says so, never an input, not an
    existing file unless --overwrite."""
    if output.suffix.lower() in (".csv", ".json", ".jsonl", ".txt", ".tsv"):
        raise ConfigError(f"-o {output}: capsim writes a Parquet workload; give a name ending in .parquet")
    return new_file(output, overwrite, inputs)


def _percentile(values, p) -> float:
    return float(np.percentile(values, p))
