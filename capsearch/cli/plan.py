"""`capsim plan`: which GPU, parallelism, engine, scheduler, chunk and batch limit to run, and how
many replicas, for a model, a trace and an SLO (plan/planner.py has the method)."""

from __future__ import annotations

import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch import api
from capsim.capsearch.cli.options.run import output_options, parallel_options, start_workers
from capsim.capsearch.cli.options.slo import slo_options
from capsim.capsearch.cli.options.system import HOST_TIME, ROUTER
from capsim.capsearch.cli.options.workload import TRACE, option_given, workload_options
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import MAX_BUDGET, MAX_REPLICAS, MAX_TARGET_QPS
from capsim.capsearch.experiments.slo_flags import flag_convention, slos_from_flags
from capsim.capsearch.plan.planner import (
    DEFAULT_BATCHES,
    DEFAULT_BUDGETS,
    DEFAULT_TPS,
    MOE_LAYOUTS,
    Candidate,
    found_score,
    read_prices,
)
from capsim.capsearch.report.plan import plan_table
from capsim.capsearch.report.results_dir import results_dir
from capsim.profiles.store import ENGINES

console = Console(width=None if sys.stdout.isatty() else 200)
SPACE_KEYS = ("hardware", "tp", "pp", "engine", "scheduler", "chunk_size", "max_batch_size", "moe_layout", "quant")


def _names(value: str) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _counts(value: str, name: str) -> list[int]:
    try:
        counts = [int(v) for v in _names(value)]
    except ValueError:
        raise ConfigError(f"--{name} {value!r}: whole numbers, comma-separated") from None
    if not counts or any(c < 1 for c in counts):
        raise ConfigError(f"--{name} {value!r}: whole numbers from 1, comma-separated")
    return counts


def read_space(path: str | None) -> dict:
    """A YAML of limits on the space: any of hardware, tp, pp, engine, scheduler, chunk_size,
    max_batch_size, each a list (or one value)."""
    if path is None:
        return {}
    from capsim.capsearch.experiments.schema import load_yaml_file

    data = load_yaml_file(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: write keys among {', '.join(SPACE_KEYS)}, each a list")
    unknown = set(data) - set(SPACE_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown keys {', '.join(sorted(map(str, unknown)))}; the space has {', '.join(SPACE_KEYS)}"
        )
    return {key: ",".join(map(str, value if isinstance(value, list) else [value])) for key, value in data.items()}


def plan_slo(slo_flags: dict):
    """The one SLO a plan meets, from the SLO flags."""
    convention = slo_flags.get("slo_defaults") or flag_convention(slo_flags, option_given) or "capsim"
    slos = slos_from_flags(slo_flags, convention)
    if len(slos) != 1:
        raise ConfigError("plan meets one SLO: give one --tbt-slo")
    return slos[0]


@click.command()
@click.option(
    "--model",
    default="Llama-3.1-8B",
    show_default=True,
    help="Catalog model, Hugging Face id, or YAML / config.json path.",
)
@TRACE
@click.option(
    "--target-qps",
    type=click.FloatRange(min=0, min_open=True, max=MAX_TARGET_QPS),
    default=None,
    help="Find the cheapest deployment that meets the SLO at this load.",
)
@click.option(
    "--gpus",
    type=click.IntRange(1, MAX_REPLICAS),
    default=None,
    help="Find the most capacity on at most this many GPUs.",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True, max=MAX_BUDGET),
    default=None,
    help="Find the most capacity for at most this many dollars an hour.",
)
@click.option(
    "--hardware", default=None, help="GPU kinds to consider, comma-separated [default: every one with a price]."
)
@click.option(
    "--tp",
    default=None,
    help=f"Tensor-parallel sizes [default: {','.join(map(str, DEFAULT_TPS))}, those that divide the heads].",
)
@click.option("--pp", default=None, help="Pipeline stages [default: 1].")
@click.option(
    "--engine", default=None, help=f"Engines whose step times to use, among {', '.join(ENGINES)} [default: vllm]."
)
@click.option(
    "--scheduler",
    default=None,
    help="Schedulers [default: each engine's own: sarathi, vllm_v1, vllm_v0 for vllm; sglang; trtllm].",
)
@click.option(
    "--chunk-size",
    "--max-num-batched-tokens",
    "chunk_size",
    default=None,
    help="Token budgets of the chunked schedulers [default: sarathi 512,1024,2048; vllm_v1 2048,8192].",
)
@click.option(
    "--max-batch-size",
    "--max-num-seqs",
    "max_batch_size",
    default=None,
    help=f"Batch limits [default: {','.join(map(str, DEFAULT_BATCHES))}].",
)
@click.option(
    "--moe-layout",
    default=None,
    help=f"Mixture of experts: layouts of each TP size's GPUs, among {', '.join(MOE_LAYOUTS)} (tp: experts split "
    "by matrix; ep: by expert, EP = TP; dp_ep: TP 1 x attention DP, EP over all) [default: all three for a MoE "
    "model].",
)
@click.option(
    "--quant",
    default=None,
    help="Weight precisions to consider, among auto (the checkpoint's own), bf16, fp8, nvfp4 [default: auto].",
)
@click.option(
    "--space",
    "space_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help=f"A YAML of limits on the space ({', '.join(SPACE_KEYS)}: lists); a flag for the same key is refused.",
)
@click.option(
    "--prices",
    "prices_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A YAML of `hardware: dollars per GPU-hour`, over the shipped table.",
)
@ROUTER
@HOST_TIME
@click.option(
    "--disagg/--no-disagg",
    default=False,
    show_default=True,
    help="Also search disaggregated deployments (xPyD: the P:D split, each pool's TP, the decode batch limit) on the "
    "same GPUs (--gpus, --hardware), and set the best beside the best aggregated one.",
)
@workload_options
@slo_options
@parallel_options
@output_options("plan")
def plan_command(
    model: str,
    trace: str,
    target_qps,
    gpus,
    budget,
    hardware,
    tp,
    pp,
    engine,
    scheduler,
    chunk_size,
    max_batch_size,
    moe_layout,
    quant,
    space_path,
    prices_path,
    router,
    host_time: str,
    disagg: bool,
    make_spec,
    executor,
    workers,
    ray_address,
    cache_dir,
    output_dir: Path | None,
    overwrite: bool,
    **slo_flags,
) -> None:
    """The cheapest deployment that meets an SLO at a target load, and the Pareto front.

    Candidates are one replica of every GPU kind with a price x TP x PP x engine x scheduler x
    token budget x batch limit asked for. Configurations that cannot fit are dropped; an upper
    bound on one replica's QPS orders the rest and skips those that cannot beat what is found;
    the others get a capacity search (cached, in parallel), and the best are searched again as
    whole deployments with their replicas. Writes plan.csv and plan.json (every candidate and
    why), pareto.png and capacity.png, and prints the recommended deployment's `vllm serve`.
    """
    goal = api.plan_goal(target_qps, gpus, budget, disagg)
    if ray_address and executor != "ray":
        raise ConfigError("--ray-address joins a Ray cluster: add --executor ray")
    start_workers({"executor": executor, "workers": workers}, jobs=2)  # a plan searches many candidates
    slo = plan_slo(slo_flags)
    space = read_space(space_path)
    flags = {
        "hardware": hardware,
        "tp": tp,
        "pp": pp,
        "engine": engine,
        "scheduler": scheduler,
        "chunk_size": chunk_size,
        "max_batch_size": max_batch_size,
        "moe_layout": moe_layout,
        "quant": quant,
    }
    both = [key for key in SPACE_KEYS if flags[key] is not None and key in space]
    if both:
        raise ConfigError(
            f"{', '.join('--' + k.replace('_', '-') for k in both)} given twice, as a flag and in {space_path}: keep "
            f"one"
        )
    given = {key: flags[key] if flags[key] is not None else space.get(key) for key in SPACE_KEYS}
    empty = [key for key, value in given.items() if value is not None and not _names(value)]
    if empty:
        raise ConfigError(
            f"{', '.join('--' + k.replace('_', '-') for k in empty)} names nothing: give values, or leave it out for "
            "the default space"
        )
    if disagg and not given["hardware"]:
        raise ConfigError(
            "--disagg compares layouts of a GPU count on a GPU kind: give --hardware (or hardware: in --space)"
        )
    counts = {"tp", "pp", "chunk_size", "max_batch_size"}
    choices = {
        key: (_counts(value, key.replace("_", "-")) if key in counts else _names(value))
        for key, value in given.items()
        if value is not None
    }
    plan_space = api.plan_space(
        model, **choices, prices=read_prices(prices_path), router=router, host_time=host_time == "on"
    )
    spec = make_spec(trace)
    pool = plan_space.candidates()
    folder = results_dir(output_dir, "plan", overwrite)
    console.print(
        f"[bold]plan: {goal.words()}[/]; {plan_space.base.model}, trace {spec.trace} ({spec.num_requests} requests, "
        f"{spec.arrival} arrivals); SLO {'; '.join(slo.clauses)}"
    )
    console.print(
        f"space: {len(pool)} candidates ({', '.join(plan_space.kinds)}; engines {', '.join(plan_space.engines)}; "
        f"schedulers {', '.join(plan_space.schedulers)}); prices "
        f"{'from ' + prices_path + ' over ' if prices_path else ''}the shipped table"
    )
    if disagg:
        _say_disagg(plan_space, gpus, given)
    with console.status("planning") as status:
        started, searches = time.monotonic(), [0]

        def progress(item) -> None:
            searches[0] += 1
            words = (
                progress_words(pool, goal, time.monotonic() - started)
                if isinstance(item, Candidate)
                else f"splits: {searches[0]} searches, last {item.words}"
            )
            status.update(f"planning: {words}")

        result = api.plan(
            model,
            spec,
            slo,
            target_qps,
            gpus,
            budget,
            space=plan_space,
            disagg=disagg,
            executor=executor,
            workers=workers,
            cache_dir=cache_dir,
            ray_address=ray_address,
            progress=progress,
        )
    written = result.write(folder)
    print_plan(result)
    if disagg:
        from capsim.capsearch.report.disagg import print_splits

        print_splits(console, result.splits, result.candidates)
    console.print(f"wrote {folder}/: {', '.join(written)}")


def _say_disagg(space, gpus: int, given: dict) -> None:
    """What the disaggregated splits will be, and which flags apply to the aggregated candidates only."""
    chunk = max(space.budgets.get("sarathi") or DEFAULT_BUDGETS["sarathi"])
    console.print(
        f"disaggregated: {len(api.split_candidates(space, gpus))} splits of {gpus} GPUs (TP only; prefill pool "
        f"sarathi chunk {chunk}; decode pool "
        f"sarathi batch {', '.join(map(str, space.batches))})"
    )
    aggregated_only = [f"--{key.replace('_', '-')}" for key in ("pp", "scheduler") if given[key]] + (
        ["--router"] if option_given("router") else []
    )
    if aggregated_only:
        console.print(
            f"[dim]{', '.join(aggregated_only)}: applied to the aggregated candidates; the splits' pools are as "
            f"above[/]"
        )


def progress_words(pool: list[Candidate], goal, elapsed_s: float) -> str:
    """Candidates done, left and cut, the best so far, and the time left at this pace."""
    counts = Counter(c.status for c in pool)
    left = counts["candidate"]
    done = len(pool) - left - counts["cut by the bound"] - counts["does not fit"] - counts["no latency model"]
    found = [c for c in pool if c.capacity]
    words = f"{done} searched, {left} left, {counts['cut by the bound']} cut by the bound"
    if found:
        best = min(found, key=lambda c: found_score(goal, c))
        cost = f", ${best.cost_per_hour:.2f}/h" if best.cost_per_hour else ""
        words += f"; best so far {best.replicas} x {best.label()}{cost}"
    if done >= 3 and left:
        words += f"; at most ~{elapsed_s / done * left:.0f} s left (the bound cuts most)"
    return words


def print_plan(result) -> None:
    pool, goal, ranked = result.candidates, result.goal, result.ranked
    counts = {}
    for c in pool:
        counts[c.status] = counts.get(c.status, 0) + 1
    console.print("candidates: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: -x[1])))
    if not ranked:
        console.print("[red]no candidate meets the SLO at this goal[/]: see plan.csv for each one's capacity and why")
        return
    table = plan_table(ranked, goal)
    console.print(table)
    best = ranked[0]
    run, why = result.launch()
    if run is None:
        console.print(f"recommended: {best.replicas} x {best.label()} (no launch command: {why})")
        return
    line = " ".join([*(f"{k}={v}" for k, v in run.environment.items()), shlex.join(run.argv)])
    options = f" (with {', '.join(run.files)} in launch.sh)" if run.files else ""
    console.print(
        f"recommended: {best.replicas} x [bold]{line}[/]{options}" + (" behind a router" if best.replicas > 1 else "")
    )
