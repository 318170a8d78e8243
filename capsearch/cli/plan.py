"""`capsim plan`: which GPU, parallelism, engine, scheduler, chunk and batch limit to run, and how
many replicas, for a model, a trace and an SLO (plan/planner.py has the method)."""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from capsim.capsearch.cli.options.run import output_options, parallel_options
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
    VLLM_SCHEDULERS,
    Candidate,
    Goal,
    candidates,
    found_score,
    plan,
    read_prices,
)
from capsim.capsearch.report.plan import candidate_row, plan_table, write_rows
from capsim.capsearch.report.results_dir import ResultSet, results_dir
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.store import ENGINES
from capsim.sim import POLICIES, SystemSpec
from capsim.sim.policies import ENGINE_SCHEDULERS
from capsim.sim.system import QUANTS

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


def _moe_layouts(value: str | None, base: SystemSpec) -> list[str]:
    """The MoE layouts to plan over: all for a mixture of experts, tp alone for a dense model."""
    moe = base.model_spec.is_moe
    if value is None:
        return list(MOE_LAYOUTS) if moe else ["tp"]
    layouts = _names(value)
    bad = [layout for layout in layouts if layout not in MOE_LAYOUTS]
    if bad:
        raise ConfigError(f"unknown --moe-layout {', '.join(bad)}; choose among {', '.join(MOE_LAYOUTS)}")
    if not moe and layouts != ["tp"]:
        raise ConfigError(
            f"{base.model} is dense: expert and attention-data parallel layouts need a mixture of experts"
        )
    return layouts


def plan_goal(target_qps, gpus, budget, disagg: bool) -> Goal:
    """What to plan for: exactly one of a target load, a GPU count, a budget."""
    for name, value in (("--target-qps", target_qps), ("--budget", budget)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite positive number, got {value}")
    goals = [
        Goal(kind, value)
        for kind, value in (("target_qps", target_qps), ("gpus", gpus), ("budget", budget))
        if value is not None
    ]
    if len(goals) != 1:
        raise ConfigError("say what to plan for: one of --target-qps, --gpus, --budget")
    if disagg and goals[0].kind != "gpus":
        raise ConfigError(
            "--disagg compares layouts of a GPU count on a GPU kind: give --gpus N and --hardware (not --target-qps "
            "or --budget)"
        )
    return goals[0]


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
    goal = plan_goal(target_qps, gpus, budget, disagg)
    if ray_address and executor != "ray":
        raise ConfigError("--ray-address joins a Ray cluster: add --executor ray")
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
    prices = read_prices(prices_path)
    kinds = [_gpu(name) for name in _names(given["hardware"])] if given["hardware"] else list(prices)
    unpriced = [k for k in kinds if k not in prices]
    if unpriced:
        raise ConfigError(
            f"no price for {', '.join(unpriced)}: give one with --prices (a YAML of `hardware: dollars per GPU-hour`)"
        )
    engines = _names(given["engine"]) if given["engine"] else ["vllm"]
    # Without --scheduler each engine brings its own batching: SGLang's and TRT-LLM's, or vLLM's three.
    by_engine = (
        {e: _names(given["scheduler"]) for e in engines}
        if given["scheduler"]
        else {e: [ENGINE_SCHEDULERS[e]] if e in ENGINE_SCHEDULERS else list(VLLM_SCHEDULERS) for e in engines}
    )
    schedulers = list(dict.fromkeys(s for names in by_engine.values() for s in names))
    for name, allowed, what in ((engines, ENGINES, "engine"), (schedulers, list(POLICIES), "scheduler")):
        bad = [n for n in name if n not in allowed]
        if bad:
            raise ConfigError(f"unknown {what} {', '.join(bad)}; choose among {', '.join(allowed)}")
    budgets = (
        {
            s: tuple(_counts(given["chunk_size"], "chunk-size"))
            if POLICIES[s].default_budget is not None  # a token budget, not whole prompts
            else (None,)
            for s in schedulers
        }
        if given["chunk_size"]
        else {s: DEFAULT_BUDGETS.get(s, (None,)) for s in schedulers}
    )
    base = SystemSpec(model=model, router=router, host_time=host_time == "on")
    layouts, quants = _moe_layouts(given["moe_layout"], base), _names(given["quant"]) if given["quant"] else ["auto"]
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise ConfigError(f"unknown --quant {', '.join(bad)}; choose among {', '.join(QUANTS)}")
    spec = make_spec(trace)
    pool = candidates(
        model,
        kinds,
        prices,
        _counts(given["tp"], "tp") if given["tp"] else DEFAULT_TPS,
        _counts(given["pp"], "pp") if given["pp"] else (1,),
        by_engine,
        budgets,
        _counts(given["max_batch_size"], "max-batch-size") if given["max_batch_size"] else DEFAULT_BATCHES,
        base,
        layouts,
        quants,
    )
    folder = results_dir(output_dir, "plan", overwrite)
    console.print(
        f"[bold]plan: {goal.words()}[/]; {base.model}, trace {spec.trace} ({spec.num_requests} requests, "
        f"{spec.arrival} arrivals); SLO {'; '.join(slo.clauses)}"
    )
    console.print(
        f"space: {len(pool)} candidates ({', '.join(kinds)}; engines {', '.join(engines)}; schedulers "
        f"{', '.join(schedulers)}); prices {'from ' + prices_path + ' over ' if prices_path else ''}the shipped table"
    )
    with console.status("planning") as status:
        searched = [0]

        def progress(candidate: Candidate) -> None:
            searched[0] += 1
            status.update(f"planning: {searched[0]} searches, last {candidate.label()}")

        plan(goal, pool, spec, slo, {}, workers, cache_dir, progress, executor, ray_address)
        if disagg:
            split_pool = disagg_splits(
                base, kinds, engines, gpus, given, budgets, spec, slo, executor, workers, cache_dir, ray_address, status
            )
    rows = [candidate_row(c, goal) for c in pool]
    with ResultSet(folder) as staging:
        write_rows(
            rows,
            staging,
            {
                "goal": dataclasses.asdict(goal),
                "model": base.model,
                "workload": spec.to_dict(),
                "slo": slo.clauses,
                "candidates": len(pool),
            },
        )
        from capsim.capsearch.report.plan import plot_capacity, plot_pareto

        plot_pareto(pool, goal, staging / "pareto.png", f"{base.model}, {spec.trace}: {goal.words()}")
        plot_capacity(pool, staging / "capacity.png", f"{base.model}, {spec.trace}: capacity of one replica")
        if disagg:
            from capsim.capsearch.report.disagg import plot_splits, write_splits

            write_splits(split_pool, staging)
            plot_splits(
                split_pool, pool, staging / "disagg.png", f"{base.model}, {spec.trace}, {gpus} GPUs: capacity a GPU"
            )
    print_plan(pool, goal)
    if disagg:
        from capsim.capsearch.report.disagg import print_splits

        print_splits(console, split_pool, pool)
    console.print(
        f"wrote {folder}/: plan.csv, plan.json, pareto.png, capacity.png"
        + (", disagg.csv, disagg.json, disagg.png" if disagg else "")
    )


def disagg_splits(
    base, kinds, engines, gpus, given, budgets, spec, slo, executor, workers, cache_dir, ray_address, status
):
    """The xPyD splits of `gpus` GPUs of each kind and engine, searched (plan/disagg.py)."""
    from capsim.capsearch.capacity.jobs import JobRunner
    from capsim.capsearch.plan.disagg import search_splits, splits

    tps = _counts(given["tp"], "tp") if given["tp"] else DEFAULT_TPS
    chunk = max(budgets.get("sarathi") or DEFAULT_BUDGETS["sarathi"])
    batches = _counts(given["max_batch_size"], "max-batch-size") if given["max_batch_size"] else DEFAULT_BATCHES
    pool = [
        split
        for kind in kinds
        for engine in engines
        for split in splits(dataclasses.replace(base, engine=engine), kind, gpus, tps, chunk, batches)
    ]
    console.print(
        f"disaggregated: {len(pool)} splits of {gpus} GPUs (TP only; prefill pool sarathi chunk {chunk}; decode pool "
        f"sarathi batch {', '.join(map(str, batches))})"
    )
    aggregated_only = [f"--{key.replace('_', '-')}" for key in ("pp", "scheduler") if given[key]] + (
        ["--router"] if option_given("router") else []
    )
    if aggregated_only:
        console.print(
            f"[dim]{', '.join(aggregated_only)}: applied to the aggregated candidates; the splits' pools are as "
            f"above[/]"
        )
    searched = [0]

    def progress(split) -> None:
        searched[0] += 1
        status.update(f"planning splits: {searched[0]} searches, last {split.words}")

    runner = JobRunner(executor, workers, cache_dir, ray_address)
    try:
        search_splits(pool, spec, slo, {}, runner, progress)
    finally:
        runner.close()
    return pool


def _gpu(name: str) -> str:
    try:
        return get_hardware(name).name
    except ProfileError as error:
        raise ConfigError(str(error)) from None


def print_plan(pool: list[Candidate], goal: Goal) -> None:
    ranked = [c for c in pool if c.status in ("recommended", "runner-up")]
    ranked.sort(key=lambda c: (c.status != "recommended", found_score(goal, c)))
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
    if best.system.engine == "vllm" and POLICIES[best.system.scheduler].served_by_vllm:
        from capsim.real.vllm import vllm_command

        argv, environment = vllm_command(best.system, dummy_weights=False)
        line = " ".join([*(f"{k}={v}" for k, v in environment.items()), shlex.join(argv)])
        console.print(
            f"recommended: {best.replicas} x [bold]{line}[/]" + (" behind a router" if best.replicas > 1 else "")
        )
    else:
        console.print(f"recommended: {best.replicas} x {best.label()} (no vLLM command for this engine or scheduler)")
