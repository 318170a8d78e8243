"""`capsim simulate`: one trial, a workload replayed on a deployment at a QPS."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from capsim.capsearch.results_dir import ResultSet, output_options, results_dir
from capsim.capsearch.system_options import system_options
from capsim.capsearch.workload_options import workload_options
from capsim.sim import simulate as run_simulation

console = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes get wide tables


@click.command()
@system_options
@click.option("--trace", default="chat", show_default=True, help="Built-in trace name or trace file.")
@click.option("--qps", type=float, required=True, help="Request rate (requests per second).")
@workload_options
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop at this simulated second; the rest is unfinished.")
@output_options("simulate")
@click.option("--chrome-trace/--no-chrome-trace", default=False, help="Also write the batches as a Perfetto/Chrome trace.")
def simulate(system, trace: str, qps: float, make_spec, time_limit: float | None, output_dir: Path | None, overwrite: bool,
             chrome_trace: bool) -> None:
    """Replay a workload on a deployment in simulation and summarize the latencies.

    Writes requests.parquet (every token's time), batches.parquet (every batch) and summary.json
    to the output folder.
    """
    workload = make_spec(trace).at_qps(qps)
    folder = results_dir(output_dir, "simulate", overwrite)
    result = run_simulation(system, workload, time_limit_s=time_limit)
    with ResultSet(folder) as staging:
        result.write(staging)
        if chrome_trace:
            result.write_chrome_trace(staging / "batches.trace.json")
    print_summary(result.summary())
    console.print(f"wrote {folder}/: requests.parquet, batches.parquet, summary.json" + (", batches.trace.json" if chrome_trace else ""))


def print_summary(summary: dict) -> None:
    info = summary["info"]
    system = info["system"]
    console.print(f"[bold]{system['model']}[/] on {system['hardware']} TP{system['tp']} PP{system['pp']} x{system['replicas']}, "
                  f"{system['scheduler']}, {summary['info']['qps']:g} QPS: {summary['requests']}")
    colour = "yellow" if info["latency_source"] in ("analytic", "custom") else "dim"
    console.print(f"[{colour}]latencies: {info['latency_source_words']}[/]")
    if info.get("extrapolation"):
        console.print(f"[yellow]{info['extrapolation']}[/]")
    table = Table()
    for column in ("metric (s)", "mean", "P50", "P90", "P99", "max"):
        table.add_column(column, justify="left" if column.startswith("metric") else "right")
    for name in ("ttft_s", "tbt_s", "tpot_s", "e2e_s", "scheduling_delay_s"):
        d = summary[name]
        if d.get("count"):
            table.add_row(name.removesuffix("_s"), *(f"{d[k]:.4f}" for k in ("mean", "p50", "p90", "p99", "max")))
    console.print(table)
    extra = [f"preemptions {summary['preemptions']}"]
    if "throughput" in summary:
        extra.append(f"{summary['throughput']['output_tokens_per_s']:.0f} output tokens/s")
    if "batches" in summary:
        extra.append(f"{summary['batches']['count']} batches, mean size {summary['batches']['size']['mean']:.1f}")
    if "kv_use" in summary:
        extra.append(f"KV use mean {summary['kv_use']['mean']:.0%}, max {summary['kv_use']['max']:.0%}")
    console.print("; ".join(extra))
