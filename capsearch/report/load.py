"""A load run's files and tables, simulated or measured alike: the loads run in order (an
automatic sweep planned after its first two), a row of vLLM's figures a load, each load's
files, the sweep's table and plots, vLLM-style result files, and what is printed."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from capsim.capsearch.load.metrics import WORDS, percentile_word
from capsim.capsearch.load.sweep import Load, LoadRun, auto_loads, load_row
from capsim.capsearch.load.vllm_results import result_filename, vllm_result, write_result
from capsim.capsearch.report.results_dir import ResultSet, record, write_csv, write_json
from capsim.sim import POLICIES
from capsim.sim.disagg import describe
from capsim.sim.system import moe_layout_words, precision_words, speculation_words


def run_loads(
    load_run: LoadRun, run_one, replay: dict | None = None
) -> tuple[list[tuple[Load, object]], list[dict], dict]:
    """Every load asked for, `run_one(load) -> RunResult` each, sorted light to heavy; their rows,
    and the CDFs of their latencies. `replay` (load/replay.py's record) goes into each run's info."""
    runs = []

    def run(load: Load):
        result = load_run.measured(run_one(load))
        if replay is not None:
            result.info["replay"] = replay
        workload = result.info.get("workload")
        if isinstance(workload, dict) and "arrival" in workload:  # what happened, not the workload's process
            result.info["workload"] = workload | {"arrival": load.arrivals(workload["arrival"])}
        runs.append((load, result))
        return result

    if load_run.loads == "auto":
        synchronous, throughput = Load(math.inf, 1, "synchronous"), Load(math.inf, None, "throughput")
        light = load_row(synchronous, run(synchronous), (), (), None)["request_throughput"]
        most = load_row(throughput, run(throughput), (), (), None)["request_throughput"]
        loads = auto_loads(light, most, load_run.sweep_points)
    else:
        loads = load_run.loads
    for load in loads:
        run(load)
    runs.sort(key=lambda pair: sort_key(pair[0]))
    rows, cdfs = [], {}
    for load, result in runs:
        cdfs[load.label] = {}
        rows.append(
            load_row(load, result, load_run.percentiles, load_run.metrics, load_run.goodput_ms, cdfs[load.label])
        )
    return runs, rows, cdfs


def write_loads(
    load_run: LoadRun,
    runs,
    rows,
    cdfs,
    folder: Path,
    title: str,
    series: str,
    chrome_trace: bool = False,
    plotter=None,
    also=None,
) -> None:
    """Each load's files (in its own folder when several), and a sweep's table and plots, as one
    set; a sweep's plots drawn by `plotter` (load_plots.SweepPlotter) while the files are written;
    `also(staging)` writes more files into the set."""
    sweep = load_run.is_sweep
    with ResultSet(folder) as staging:
        if sweep:
            args = (
                load_run.label or series,
                rows,
                cdfs,
                staging,
                load_run.metrics,
                load_run.percentiles,
                load_run.goodput_ms,
                title,
            )
            if plotter is not None:
                plotter.draw(*args)
            else:
                from capsim.capsearch.report.load_plots import draw_sweep

                draw_sweep(*args)
        for (load, result), row in zip(runs, rows):
            place = staging / load.folder if sweep else staging
            place.mkdir(exist_ok=True)
            result.write(place)
            write_json(place / "serving.json", row)
            if chrome_trace:
                result.write_chrome_trace(place / "batches.trace.json")
        if sweep:
            write_sweep_table(rows, staging, info=sweep_info(runs[0][1], load_run, title))
        if also is not None:
            also(staging)
        if sweep and plotter is not None:
            plotter.wait()


def files_written(load_run: LoadRun, batches: bool, chrome_trace: bool = False) -> str:
    if load_run.is_sweep:
        return "load_sweep.csv, load_sweep.json, load_curves.png, cdf.png, and a folder a load"
    return (
        "requests.parquet, "
        + ("batches.parquet, " if batches else "")
        + "summary.json, serving.json"
        + (", batches.trace.json" if chrome_trace else "")
    )


def print_rows(console, load_run: LoadRun, rows: list[dict]) -> None:
    if load_run.warmup or load_run.cooldown:
        console.print(
            f"left out of every figure: the first {load_run.warmup} and the last {load_run.cooldown} requests sent "
            "(--warmup-requests, --cooldown-requests)"
        )
    if load_run.goodput_ms:
        console.print(
            "goodput: requests/s meeting "
            + ", ".join(f"{WORDS[k]} <= {v:g} ms" for k, v in load_run.goodput_ms.items())
        )
    console.print(sweep_table(rows, load_run) if load_run.is_sweep else load_table(rows[0], load_run))


def sort_key(load: Load) -> tuple:
    order = {"synchronous": 0, "rate": 1, "concurrency": 1, "throughput": 2}[load.kind]
    return order, (load.max_concurrency if load.kind == "concurrency" else load.qps)


def headline(info: dict, spec, runs=()) -> str:
    """What was run: the deployment (simulated) or the endpoint (measured), and the workload,
    with its arrivals as the loads sent them (a closed loop is no Poisson process)."""
    kinds = list(dict.fromkeys(load.arrivals(spec.arrival) for load, _ in runs)) or [spec.arrival]
    arrivals = " / ".join(f"{k} arrivals" if k == spec.arrival else k for k in kinds)
    workload = (
        f"trace {info['workload'].get('trace', spec.trace)} ({spec.num_requests} requests, {arrivals}"
        + (f", cv {spec.cv:g}" if spec.cv and spec.arrival in kinds else "")
        + ")"
    )
    if info.get("kind") == "real":
        return f"{info['model']} at {info['endpoint']}, measured; {workload}"
    system = info["system"]
    if system.get("disagg"):
        precision = precision_words(system)
        return (
            f"{system['model']}{f' ({precision})' if precision else ''}, disaggregated {describe(system)}, "
            f"{system['engine']} "
            f"step times, simulated; {workload}"
        )
    chunk = system.get("token_budget") or POLICIES[system["scheduler"]].default_budget
    budget = f" chunk {chunk}" if chunk else ""
    precision = precision_words(system)
    return (
        f"{system['model']}{f' ({precision})' if precision else ''} on {system['hardware']} TP{system['tp']} "
        f"PP{system['pp']}{moe_layout_words(system)} "
        f"x{system['replicas']}, "
        f"{system['engine']} step times, {system['scheduler']}{budget} batch {system['max_batch_size']}"
        f"{speculation_words(system)}, simulated; "
        f"{workload}"
    )


def load_table(row: dict, load_run: LoadRun) -> Table:
    """vLLM's result block as tables: the throughputs, then a row a latency."""
    table = Table(
        title=f"{row['load']}: {row['completed']} completed, {row['failed']} not, over {row['duration']:.1f} s; "
        f"{row['request_throughput']:.3f} req/s"
        + (f", goodput {row['request_goodput']:.3f} req/s" if row["request_goodput"] is not None else "")
        + f"; tokens/s: {row['input_throughput']:.0f} in, {row['output_throughput']:.0f} out, "
        f"{row['total_token_throughput']:.0f} total; peaks in a second: {row['max_output_tokens_per_s']:.0f} "
        f"output tokens, {row['max_concurrent_requests']} requests in flight"
    )
    stats = ["mean", "median", "std"] + [f"p{percentile_word(p)}" for p in load_run.percentiles]
    table.add_column("latency (ms)")
    for stat in stats:
        table.add_column(stat.upper() if stat.startswith("p") else stat, justify="right")
    for metric in load_run.metrics:
        table.add_row(WORDS[metric], *(f"{row[f'{stat}_{metric}_ms']:.2f}" for stat in stats))
    return table


def sweep_table(rows: list[dict], load_run: LoadRun) -> Table:
    """One row a load."""
    table = Table(title="latency against load (ms)")
    columns = ["load", "req/s"] + (["good req/s"] if load_run.goodput_ms else []) + ["in tok/s", "out tok/s"]
    columns += [f"{WORDS[m]} P{percentile_word(p)}" for m in load_run.metrics for p in load_run.percentiles] + [
        "failed"
    ]
    for column in columns:
        table.add_column(column, justify="left" if column == "load" else "right", no_wrap=column == "load")
    for row in rows:
        cells = [row["load"], f"{row['request_throughput']:.2f}"]
        if load_run.goodput_ms:
            cells.append(f"{row['request_goodput']:.2f}")
        cells += [f"{row['input_throughput']:.0f}", f"{row['output_throughput']:.0f}"]
        cells += [short(row[f"p{percentile_word(p)}_{m}_ms"]) for m in load_run.metrics for p in load_run.percentiles]
        cells.append(str(row["failed"]))
        table.add_row(*cells)
    return table


def short(ms: float) -> str:
    """A latency in at most 6 characters: 4 significant digits, none after the point from 1,000."""
    return f"{ms:.0f}" if ms >= 1000 else f"{ms:.4g}"


def engine_line(summary: dict) -> str:
    extra = [f"preemptions {summary['preemptions']}"]
    if "batches" in summary:
        extra.append(f"{summary['batches']['count']} batches, mean size {summary['batches']['size']['mean']:.1f}")
    if "kv_use" in summary:
        extra.append(f"KV use mean {summary['kv_use']['mean']:.0%}, max {summary['kv_use']['max']:.0%}")
    return "; ".join(extra)


def disagg_line(disagg: dict) -> str:
    """The KV moves of a disaggregated run: the link, and how long requests waited and moved."""

    def p50_p99(key: str) -> str:
        stats = disagg[key]
        return f"{stats['p50'] * 1e3:.3g}/{stats['p99'] * 1e3:.3g} ms" if stats.get("count") else "none"

    return (
        f"KV link: {disagg['kv_link']}; {disagg['transfers']} transfers, P50/P99: waiting for decode KV "
        f"{p50_p99('decode_queue_s')}, "
        f"for the link {p50_p99('link_wait_s')}, moving {p50_p99('transfer_s')}"
    )


def sweep_info(result, load_run: LoadRun, title: str) -> dict:
    """What the sweep computed: the run's own description, less its one QPS."""
    keep = (
        "kind",
        "system",
        "endpoint",
        "model",
        "workload",
        "latency_source",
        "latency_source_words",
        "latency_profile",
        "replay",
    )
    info = {k: result.info[k] for k in keep if k in result.info}
    info["workload"] = {k: v for k, v in info["workload"].items() if k != "qps"}
    return info | {
        "title": title,
        "goodput_ms": load_run.goodput_ms,
        "percentiles": list(load_run.percentiles),
        "metrics": list(load_run.metrics),
    }


def write_sweep_table(rows: list[dict], folder: Path, info: dict) -> None:
    write_json(folder / "load_sweep.json", {"info": info, "loads": rows})
    write_csv(folder / "load_sweep.csv", rows, rows[0])


def save_results(load_run: LoadRun, rows, runs, folder: Path, spec, date: str) -> list[Path]:
    """vLLM-style result JSONs, one a load."""
    where = Path(load_run.result_dir) if load_run.result_dir else folder
    label = load_run.label or ("capsim-real" if runs[0][1].info.get("kind") == "real" else "capsim-sim")
    burstiness = (
        1.0 if spec.arrival == "poisson" else (round(1 / spec.cv**2, 12) if spec.cv else None)
    )  # vLLM's gamma shape
    paths = []
    for row, (load, result) in zip(rows, runs):
        info = result.info
        model = info["system"]["model"] if "system" in info else info["model"]
        keep = ("kind", "system", "endpoint", "model", "workload", "latency_source", "latency_source_words")
        capsim = {k: info[k] for k in keep if k in info} | {"load": load.label, "goodput_ms": load_run.goodput_ms}
        result_json = vllm_result(
            row,
            label=label,
            model_id=model,
            num_prompts=spec.num_requests,
            burstiness=burstiness,
            metadata=load_run.metadata,
            capsim=capsim,
            date=date,
        )
        name = load_run.result_filename or result_filename(label, load.qps, load.max_concurrency, model, date)
        paths.append(write_result(result_json, where, name))
    if where == folder:
        record(folder, paths)
    return paths
