"""`capsim bench`: the load runs of `simulate`, measured on a running engine.

The same loads (a rate, a rate sweep, GuideLLM's automatic sweep, a concurrency cap, N users),
the same figures and files, so `capsim compare` can lay a measured sweep over a simulated one.
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch.cli.options.engine import endpoint
from capsim.capsearch.cli.options.load import load_options
from capsim.capsearch.cli.options.run import API_KEY, output_options, time_limit
from capsim.capsearch.cli.options.workload import TRACE, workload_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.replay import load_time_limit, record
from capsim.capsearch.load.sweep import Load, LoadRun
from capsim.capsearch.load.vllm_results import now_stamp
from capsim.capsearch.report.load import files_written, headline, print_rows, run_loads, save_results, write_loads
from capsim.capsearch.report.load_plots import SweepPlotter
from capsim.capsearch.report.results_dir import results_dir
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model
from capsim.real.client import EndpointError, check_completions, connect
from capsim.real.loadgen import LoadOptions, dominant_failure, prompt_ids, run_load

console = Console(width=None if sys.stdout.isatty() else 200)
MIN_TIME_LIMIT_S = 120.0


@click.command()
@endpoint("the engine to measure", required=True)
@click.option("--model", default=None, help="The served model name [default: the only one served].")
@click.option(
    "--vocab-size",
    type=click.IntRange(100, 2**31 - 1),
    default=None,
    help="Prompt token ids are drawn below this [default: the catalog model's vocabulary, when the served "
    "model is in the catalog].",
)
@API_KEY
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a stream may stay silent before the request fails.",
)
@TRACE
@load_options
@workload_options
@time_limit(
    "s",
    f"How long a load may run; the rest is unfinished [default: its arrivals plus as long again, at least "
    f"{MIN_TIME_LIMIT_S:g} s]",
)
@output_options("bench")
def bench(
    endpoint: str,
    model: str | None,
    vocab_size: int | None,
    api_key: str | None,
    timeout: float,
    trace: str,
    load_run: LoadRun,
    make_spec,
    time_limit: float | None,
    output_dir: Path | None,
    overwrite: bool,
) -> None:
    """Measure latency against load on a running engine, as `vllm bench serve` and GuideLLM do.

    Same loads, figures and files as `capsim simulate`: one load gives requests.parquet,
    summary.json and serving.json (vLLM's figures); several give a folder a load, plus
    load_sweep.csv/.json, load_curves.png and cdf.png. Prompts are random token ids of each
    request's length; outputs are fixed (ignore_eos, min_tokens = max_tokens).
    """
    spec = make_spec(trace)
    load_run.check_window(spec.num_requests)
    target = connect(endpoint, api_key, model, timeout)
    spec = fit_to_engine(spec, target)
    vocab = vocab_size or catalog_vocab(target.model)
    check_completions(target, prompt_ids(spec.seed, 0, 8, vocab))
    folder = results_dir(output_dir, "bench", overwrite)
    date = now_stamp()

    def run_one(load: Load):
        workload = spec.at_qps(load.qps)
        limit = load_time_limit(time_limit, MIN_TIME_LIMIT_S, float(workload.arrival_s[-1]))
        with console.status(f"measuring {load.label} on {target.url}") as status:
            result = run_load(
                target,
                workload,
                LoadOptions(vocab=vocab, time_limit_s=limit, max_concurrency=load.max_concurrency, seed=spec.seed),
                progress=lambda done, total: status.update(f"measuring {load.label}: {done}/{total} requests"),
            )
        failure = dominant_failure(result)
        if failure and not result.finished().any():
            reason, times, failed = failure
            raise EndpointError(
                f"every request at {load.label} failed ({failed} failed, the rest not sent); the commonest error "
                f"({times} of them): {reason}"
            )
        console.print(f"  {load.label}: {outcome_words(result)}")
        return result

    with SweepPlotter() if load_run.is_sweep else nullcontext() as plotter:
        replay = record(spec, load_run.warmup, load_run.cooldown, time_limit, MIN_TIME_LIMIT_S)
        runs, rows, cdfs = run_loads(load_run, run_one, replay)
        title = headline(runs[0][1].info, spec, runs)
        write_loads(load_run, runs, rows, cdfs, folder, title, "measured", plotter=plotter)
    saved = save_results(load_run, rows, runs, folder, spec, date) if load_run.save_result else []
    console.print(f"[bold]{title}[/]")
    for load, result in runs:
        failure = dominant_failure(result)
        if failure:
            console.print(
                f"[yellow]{load.label}: {failure[2]} requests failed with an error; the commonest ({failure[1]}): "
                f"{failure[0]}[/]"
            )
        if result.info.get("in_flight_cap_hits"):
            console.print(
                f"[yellow]{load.label}: {result.info['in_flight_cap_hits']} requests waited for the in-flight cap "
                "(their wait counts in TTFT)[/]"
            )
        if result.info.get("one_read_requests"):
            console.print(
                f"[yellow]{load.label}: {result.info['one_read_requests']} requests had all their tokens in one read "
                "(the client fell behind the engine: their gaps read as 0, their TTFT late); give the client a core of "
                "its own[/]"
            )
    print_rows(console, load_run, rows)
    console.print(f"wrote {folder}/: {files_written(load_run, False)}")
    for path in saved:
        console.print(f"wrote {path}")


def outcome_words(result) -> str:
    """Finished, failed with an error, and the rest (unfinished at the time limit, or never sent):
    counts that add up to the requests, as the table's `failed` (every request not completed) does."""
    status = result.column("status").astype(str)
    total, finished, errors = len(status), int((status == "finished").sum()), int((status == "failed").sum())
    rest = total - finished - errors
    return (
        f"{finished} of {total} finished; {errors} failed with an error"
        + (f", {rest} unfinished" if rest else "")
        + f" ({total - finished} not completed)"
    )


def fit_to_engine(spec, target):
    """The workload within the engine's advertised max_model_len (its /v1/models card): longer
    requests are shortened as --max-total-tokens does, and the count said; never sent to be refused."""
    limit = target.max_model_len
    if limit is None or (spec.max_total_tokens is not None and spec.max_total_tokens <= limit):
        return spec
    requests = spec.requests()
    over = int((requests.prompt_tokens + requests.output_tokens > limit).sum())
    if not over:
        return spec
    console.print(
        f"[yellow]{target.url} serves at most {limit} tokens a request (its max_model_len): {over} of {len(requests)} "
        f"requests shortened to fit, as --max-total-tokens {limit} does[/]"
    )
    return dataclasses.replace(spec, max_total_tokens=limit)


def catalog_vocab(served: str) -> int:
    try:
        return get_model(served).vocab
    except ProfileError:
        raise ConfigError(
            f"{served!r} is not a catalog model, so its vocabulary is unknown: pass --vocab-size "
            "(prompt token ids are drawn below it)"
        ) from None
