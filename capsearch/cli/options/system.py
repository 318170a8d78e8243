"""Command-line options that describe a deployment (a SystemSpec), shared by simulate, search, serve and confirm."""

from __future__ import annotations

import functools

import click

from capsim.capsearch.cli.options.workload import option_given
from capsim.capsearch.experiments.conventions import MAX_REPLICAS
from capsim.profiles.store import ENGINES
from capsim.sim import POLICIES, ROUTERS, DisaggSpec, SimulationError, SystemSpec
from capsim.sim.disagg import DECODE_ROUTERS, POOL_OPTIONS, PREFILL_ROUTERS, disaggregate
from capsim.sim.kv_link import LINKS
from capsim.sim.policies import ENGINE_SCHEDULERS
from capsim.sim.spec_decode import METHODS as SPEC_METHODS
from capsim.sim.system import KV_QUANTS, PIPELINE_SCHEDULING, QUANTS

# A disaggregated deployment's own options: --disagg xPyD, and what differs between its pools.
DISAGG_FLAGS = (*POOL_OPTIONS, "kv_link", "prefill_router", "decode_router")
DISAGG_OPTIONS = [
    click.option(
        "--disagg",
        default=None,
        metavar="xPyD",
        help="Disaggregated serving: x prefill and y decode instances (e.g. 2P4D), the KV cache moving between them. "
        "The system options apply to both pools; --prefill-* and --decode-* set one.",
    ),
    click.option(
        "--prefill-tp",
        type=click.IntRange(1, 1024),
        default=None,
        help="With --disagg: TP of a prefill instance [--tp].",
    ),
    click.option(
        "--decode-tp", type=click.IntRange(1, 1024), default=None, help="With --disagg: TP of a decode instance [--tp]."
    ),
    click.option("--prefill-hardware", default=None, help="With --disagg: the prefill pool's GPU [--hardware]."),
    click.option("--decode-hardware", default=None, help="With --disagg: the decode pool's GPU [--hardware]."),
    click.option(
        "--prefill-scheduler", type=click.Choice(list(POLICIES)), default=None, help="With --disagg [--scheduler]."
    ),
    click.option(
        "--decode-scheduler", type=click.Choice(list(POLICIES)), default=None, help="With --disagg [--scheduler]."
    ),
    click.option(
        "--prefill-chunk-size",
        type=click.IntRange(1, 2**31 - 1),
        default=None,
        help="With --disagg: tokens a prefill batch at most [--chunk-size].",
    ),
    click.option(
        "--decode-max-batch-size",
        type=click.IntRange(1, 2**31 - 1),
        default=None,
        help="With --disagg: requests a decode instance runs at most [--max-batch-size].",
    ),
    click.option(
        "--decode-ep",
        type=click.IntRange(1, 1024),
        default=None,
        help="With --disagg: EP of a decode instance [--ep] (wide EP: with --decode-dp-attention).",
    ),
    click.option(
        "--decode-dp-attention",
        type=click.IntRange(1, 1024),
        default=None,
        help="With --disagg: attention-DP ranks of a decode instance [--dp-attention].",
    ),
    click.option(
        "--kv-link",
        type=click.Choice(LINKS),
        default=None,
        help="With --disagg: what moves the KV cache [NVLink where both pools fit one NVLink domain, else ib].",
    ),
    click.option(
        "--prefill-router",
        type=click.Choice(PREFILL_ROUTERS),
        default=None,
        help="With --disagg: the prefill instance a request goes to [least_tokens: the fewest prompt tokens to "
        "compute].",
    ),
    click.option(
        "--decode-router",
        type=click.Choice(DECODE_ROUTERS),
        default=None,
        help="With --disagg: the decode instance a prefilled request goes to [least_kv: the most free KV, queued "
        "counted].",
    ),
]


def disagg_system(system: SystemSpec, disagg: str, options: dict, config_paths) -> DisaggSpec:
    """The disaggregated deployment the flags describe; options that cannot apply to one are refused."""
    if config_paths:
        raise click.UsageError(
            "--disagg describes one deployment and a config names its own systems: drop --config-path "
            "(a config gives disagg: xPyD in a parallel_spec entry)"
        )
    for flag in ("replicas", "router", "pipeline_scheduling"):
        if option_given(flag):
            raise click.UsageError(
                f"--{flag.replace('_', '-')} does not apply with --disagg, whose xPyD gives the instances "
                "(a request goes to the prefill instance with the least prompt work, then to the decode "
                "instance with the most free KV): drop it"
            )
    pools = {name: value for name, value in options.items() if name in POOL_OPTIONS}
    try:
        return disaggregate(
            system, disagg, options["kv_link"], options["prefill_router"], options["decode_router"], **pools
        )
    except SimulationError as error:
        raise click.UsageError(str(error)) from None


HOST_TIME = click.option(
    "--host-time",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="Add each engine's fitted host time (per step, per sequence, per request) to kernel-database "
    "and roofline step times (off: kernel time only); measured profiles hold it already.",
)
ROUTER = click.option(
    "--router",
    type=click.Choice(ROUTERS),
    default="round_robin",
    show_default=True,
    help="How requests are spread over the replicas.",
)


def _acceptance(text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        return tuple(float(part) for part in text.replace(" ", ",").split(",") if part)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give a rate such as 0.7, or rates a draft position such as 0.8,0.6",
            param_hint="--acceptance-rate",
        ) from None


def system_options(command=None, *, default_engine: str = "vllm", disaggregated: bool = False):
    """Add the deployment options; the command receives `system` (a SystemSpec, or with
    `disaggregated` and --disagg a DisaggSpec).

    Use as @system_options, or @system_options(default_engine="reference") for the commands
    that run capsim's own engine."""
    if command is None:
        return functools.partial(system_options, default_engine=default_engine, disaggregated=disaggregated)
    options = [
        click.option(
            "--model",
            default="Llama-3-8B",
            show_default=True,
            help="Catalog model, Hugging Face id, or YAML / config.json path.",
        ),
        click.option(
            "--hardware", default="H100-SXM", show_default=True, help="GPU kind (see `capsim profiles list`)."
        ),
        click.option(
            "--tp", type=click.IntRange(1, 1024), default=1, show_default=True, help="Tensor-parallel GPUs a replica."
        ),
        click.option(
            "--pp", type=click.IntRange(1, 1024), default=1, show_default=True, help="Pipeline stages a replica."
        ),
        click.option("--replicas", type=click.IntRange(1, MAX_REPLICAS), default=1, show_default=True),
        click.option(
            "--ep",
            "--ep-size",
            "--expert-parallel-size",
            "ep",
            type=click.IntRange(1, 1024),
            default=1,
            show_default=True,
            help="Mixture of experts: GPUs the experts are split over by expert (it divides TP x DP; the rest split "
            "each expert's matrices).",
        ),
        click.option(
            "--enable-expert-parallel",
            is_flag=True,
            default=False,
            help="vLLM's flag: EP = TP x DP (every GPU of the replica holds its own experts).",
        ),
        click.option(
            "--dp-attention",
            "--attention-dp",
            "dp_attention",
            type=click.IntRange(1, 1024),
            default=1,
            show_default=True,
            help="Mixture of experts: attention data-parallel ranks a replica, TP GPUs each, each scheduling its own "
            "requests (vLLM --data-parallel-size, SGLang --enable-dp-attention --dp, TensorRT-LLM "
            "enable_attention_dp).",
        ),
        click.option(
            "--scheduler",
            type=click.Choice(list(POLICIES)),
            default=None,
            help="Batching policy [default: the engine's own for sglang and trtllm, else sarathi].",
        ),
        click.option(
            "--max-batch-size",
            "--max-num-seqs",
            "max_batch_size",
            type=click.IntRange(1, 2**31 - 1),
            default=128,
            show_default=True,
            help="Running requests at most.",
        ),
        click.option(
            "--chunk-size",
            "--token-budget",
            "--max-num-batched-tokens",
            "token_budget",
            type=click.IntRange(1, 2**31 - 1),
            default=None,
            help="Tokens a batch at most (sarathi: 512; vllm_v1: 2048; sglang, trtllm: 8192; vllm_v0, orca: the max "
            "model length).",
        ),
        click.option(
            "--block-size",
            type=click.IntRange(1, 2**31 - 1),
            default=16,
            show_default=True,
            help="KV-cache block size in tokens.",
        ),
        click.option(
            "--max-model-len",
            type=click.IntRange(2, 2**31 - 1),
            default=None,
            help="Prompt + output at most [default: the model's context, <= 16384].",
        ),
        click.option(
            "--memory-utilization", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True
        ),
        click.option(
            "--num-kv-blocks",
            type=click.IntRange(1, 2**31 - 1),
            default=None,
            help="Fix the KV blocks of a replica instead of deriving them from memory (vLLM's "
            "--num-gpu-blocks-override).",
        ),
        ROUTER,
        click.option(
            "--prefix-caching/--no-prefix-caching",
            default=False,
            show_default=True,
            help="vllm_v1, sglang (its radix cache) and trtllm (KV block reuse) only.",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default=default_engine,
            show_default=True,
            help="Whose step latencies: vllm, sglang, trtllm (NVIDIA's kernel database) or capsim's own `reference` "
            "engine.",
        ),
        click.option(
            "--pipeline-scheduling",
            type=click.Choice(PIPELINE_SCHEDULING),
            default="one_scheduler",
            show_default=True,
            help="With --pp > 1: one scheduler over all micro-batches (Sarathi-Serve, Vidur) "
            "or vLLM's virtual engines.",
        ),
        HOST_TIME,
        click.option(
            "--async-scheduling/--no-async-scheduling",
            default=False,
            show_default=True,
            help="vLLM's asynchronous scheduling: host time per step overlaps the kernels (--engine vllm).",
        ),
        click.option(
            "--quant",
            "--quantization",
            "quant",
            type=click.Choice(QUANTS),
            default="auto",
            show_default=True,
            help="Weights: the model's own (auto), bf16, fp8 (Hopper and Blackwell), or nvfp4 (Blackwell); kernel "
            "database or roofline.",
        ),
        click.option(
            "--kv-cache-dtype",
            type=click.Choice(KV_QUANTS),
            default="auto",
            show_default=True,
            help="KV cache: auto (16-bit, as vLLM's auto for an FP8 checkpoint without KV scales), bf16 or fp8.",
        ),
        click.option(
            "--spec-tokens",
            "--num-speculative-tokens",
            "spec_tokens",
            type=click.IntRange(0, 16),
            default=0,
            show_default=True,
            help="Speculative decoding: draft tokens a step, verified together (0: none).",
        ),
        click.option(
            "--spec-method",
            type=click.Choice(SPEC_METHODS),
            default="mtp",
            show_default=True,
            help="With --spec-tokens: who drafts: the model's MTP head, a draft model, or n-gram lookup.",
        ),
        click.option(
            "--acceptance-rate",
            "acceptance",
            default=None,
            metavar="A[,A...]",
            help="With --spec-tokens: a draft token's acceptance rate in (0, 1], or one a draft position (0.8,0.6).",
        ),
        click.option(
            "--draft-cost",
            type=click.FloatRange(0, 1),
            default=None,
            help="With --spec-tokens: a draft token's time as a fraction of a decode step [MTP: 1/layers; ngram: 0; "
            "draft: required].",
        ),
        click.option(
            "--profile",
            "profile_path",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Latency profile file [default: the engine's measured profile, else its kernel-database profile, "
            "else a calibrated analytic estimate].",
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *args,
        model,
        hardware,
        tp,
        pp,
        replicas,
        ep,
        enable_expert_parallel,
        dp_attention,
        scheduler,
        max_batch_size,
        token_budget,
        block_size,
        max_model_len,
        memory_utilization,
        num_kv_blocks,
        router,
        prefix_caching,
        pipeline_scheduling,
        engine,
        host_time,
        async_scheduling,
        quant,
        kv_cache_dtype,
        spec_tokens,
        spec_method,
        acceptance,
        draft_cost,
        profile_path,
        **kwargs,
    ):
        if pp == 1 and not kwargs.get("config_paths") and option_given("pipeline_scheduling"):
            raise click.UsageError(
                "--pipeline-scheduling applies with --pp > 1 (several micro-batches in flight): drop it, or set --pp"
            )
        scheduler = scheduler or ENGINE_SCHEDULERS.get(engine, "sarathi")
        if enable_expert_parallel:
            if option_given("ep") and ep != tp * dp_attention:
                raise click.UsageError(
                    f"--enable-expert-parallel sets EP = TP x DP = {tp * dp_attention}: drop --ep {ep}, or the flag"
                )
            ep = tp * dp_attention
        acceptance = _acceptance(acceptance)
        if spec_tokens == 0 and option_given("spec_method"):
            raise click.UsageError("--spec-method applies with --spec-tokens K: add it, or drop --spec-method")
        if kwargs.get("disagg") and spec_tokens:
            raise click.UsageError(
                "speculative decoding is not modelled in disaggregated pools yet: drop --spec-tokens, or --disagg"
            )
        system = SystemSpec(
            model=model,
            hardware=hardware,
            tp=tp,
            pp=pp,
            replicas=replicas,
            ep=ep,
            dp_attention=dp_attention,
            scheduler=scheduler,
            max_batch_size=max_batch_size,
            token_budget=token_budget,
            block_size=block_size,
            max_model_len=max_model_len,
            memory_utilization=memory_utilization,
            num_kv_blocks=num_kv_blocks,
            router=router,
            prefix_caching=prefix_caching,
            pipeline_scheduling=pipeline_scheduling,
            engine=engine,
            profile=profile_path,
            host_time=host_time == "on",
            async_scheduling=async_scheduling,
            quant=quant,
            kv_cache_dtype=kv_cache_dtype,
            spec_tokens=spec_tokens,
            spec_method=spec_method,
            acceptance=acceptance,
            draft_cost=draft_cost,
        )
        if disaggregated:
            disagg, pools = kwargs.pop("disagg"), {flag: kwargs.pop(flag) for flag in DISAGG_FLAGS}
            if disagg is not None:
                system = disagg_system(system, disagg, pools, kwargs.get("config_paths"))
            elif given := [f"--{flag.replace('_', '-')}" for flag in DISAGG_FLAGS if option_given(flag)]:
                raise click.UsageError(
                    f"{', '.join(given)} set a pool of a disaggregated deployment: add --disagg xPyD, or drop them"
                )
        return command(*args, system=system, **kwargs)

    if disaggregated:
        options += DISAGG_OPTIONS
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
