"""Experiment configs, read as the peers wrote them: Sarathi-Serve's OSDI schema (here) and
Etalon's capacity-search schema (etalon.py), plus capsim's own optional keys.

Sarathi-Serve's keys: schedulers (name, scheduler: vllm | orca | sarathi, batch_size,
chunk_size), traces (name, trace_file, max_seq_len, num_requests, start_qps), parallel_spec
(name, tp_dimension, pp_dimension), models (name, identifier, parallel_specs, scheduler_specs,
traces; null = all). Read with Sarathi-Serve's conventions: its SLO defaults, Poisson gaps capped
at 3/QPS, the trace shuffled with seed 42 before the first num_requests are taken, and each model
on the paper's GPU (Mistral-7B, Yi-34B, Falcon-180B: A100 80GB PCIe; Llama-2-70B: A40).

capsim's keys, all optional: hardware (per model too); engine (whose latencies: vllm, sglang, trtllm
or reference; per model too); quant (auto, bf16, fp8, nvfp4) and kv_cache_dtype (auto, bf16, fp8;
per model too); speculative decoding: spec_tokens, spec_method (mtp, draft, ngram), acceptance (a
rate or a list), draft_cost (per model too); host_time and async_scheduling (true or false); profile
(a profile file); slos (a list of SLOs: kind tbt_ttft | ttft_tpot | deadline and its fields); seed;
shuffle; cap_gaps; arrival and cv (per trace); granularity; max_trials; replicas; block_size;
memory_utilization; num_kv_blocks; pipeline_scheduling; in a parallel_spec entry, ep_dimension and
attention_dp_dimension (a mixture of experts' EP and attention DP), disagg (xPyD: a disaggregated
deployment, its pools with the entry's TP but where prefill_tp, decode_tp, prefill_hardware,
decode_hardware, prefill_scheduler, decode_scheduler, prefill_chunk_size or decode_max_batch_size
say otherwise), kv_link (nvlink, ib, pcie), prefill_router and decode_router. A trace_file that does
not exist but names one of the peers' processed traces uses capsim's built-in trace of that name,
and says so.

Everything is checked on load, before any trial runs: unknown keys are named with their file.
"""

from __future__ import annotations

import math
from pathlib import Path

from capsim.capsearch.capacity.jobs import SearchJob
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import MAX_REPLICAS, MAX_TRIALS, PEER_SEED
from capsim.capsearch.experiments.schema import (
    SPECULATION_KEYS,
    Experiment,
    check_keys,
    config_slos,
    flag,
    integer,
    number,
    read_yaml,
    speculation,
    text,
    trace_source,
    workload_words,
)
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.memory import kv_capacity
from capsim.profiles.models import get_model
from capsim.sim import SimulationError, SystemSpec
from capsim.sim.disagg import POOL_OPTIONS, disaggregate
from capsim.traces import TraceError, WorkloadSpec, builtin_traces
from capsim.traces.spec import MAX_REQUESTS

SCHEDULER_NAMES = {
    "vllm": "vllm_v0",
    "vllm_v0": "vllm_v0",
    "orca": "orca",
    "sarathi": "sarathi",
    "vllm_v1": "vllm_v1",
    "faster_transformer": "faster_transformer",
}
PAPER_GPUS = {
    "Mistral-7B": "A100-80GB-PCIe",
    "Yi-34B": "A100-80GB-PCIe",
    "Falcon-180B": "A100-80GB-PCIe",
    "Llama-2-70B": "A40",
}
PAPER_DEFAULT_GPU = "A100-80GB-PCIe"
DISAGG_KEYS = (
    "kv_link",
    "prefill_router",
    "decode_router",
    *POOL_OPTIONS,
)  # a disagg parallel_spec's keys besides disagg
TOP_KEYS = {
    "schedulers",
    "traces",
    "parallel_spec",
    "models",
    "hardware",
    "engine",
    "profile",
    "slos",
    "seed",
    "shuffle",
    "cap_gaps",
    "granularity",
    "max_trials",
    "replicas",
    "block_size",
    "memory_utilization",
    "num_kv_blocks",
    "pipeline_scheduling",
    "quant",
    "kv_cache_dtype",
    "host_time",
    "async_scheduling",
    *SPECULATION_KEYS,
}
SECTION_KEYS = {
    "schedulers": {"name", "scheduler", "batch_size", "chunk_size"},
    "traces": {"name", "trace_file", "max_seq_len", "num_requests", "start_qps", "arrival", "cv"},
    "parallel_spec": {
        "name",
        "tp_dimension",
        "pp_dimension",
        "ep_dimension",
        "attention_dp_dimension",
        "disagg",
        *DISAGG_KEYS,
    },
    "models": {
        "name",
        "identifier",
        "parallel_specs",
        "scheduler_specs",
        "traces",
        "hardware",
        "engine",
        "profile",
        "quant",
        "kv_cache_dtype",
        *SPECULATION_KEYS,
    },
}


def is_etalon(data: dict) -> bool:
    return any(key in data for key in ("servers", "request_generator_configs", "request_configs", "parallel_specs"))


def load_config(path: str | Path, slos=None, slo_defaults: str | None = None) -> Experiment:
    """The config's searches. `slos(convention)` gives the command line's SLOs, fields not given
    from that convention (None: no SLO flag given); a plain list is taken as it is. They replace
    the config's own; without either, the defaults of `slo_defaults` or of the config's peer apply."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(slos, list):
        listed = slos
        slos = lambda convention: listed  # noqa: E731
    if is_etalon(data):
        from capsim.capsearch.experiments.etalon import load_etalon

        return load_etalon(path, data, slos, slo_defaults)
    check_keys(data, TOP_KEYS, path, "the top level")
    for section, keys in SECTION_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: '{section}' must be a non-empty list")
        for entry in entries:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), (str, int))
                or isinstance(entry.get("name"), bool)
            ):
                raise ConfigError(f"{path}: every entry of '{section}' needs a name (a string)")
            check_keys(entry, keys, path, f"{section} entry {entry['name']!r}")
        names = [str(e["name"]) for e in entries]
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(
                f"{path}: two entries of '{section}' are named {twice!r}; names label the results, so each must be "
                f"unique"
            )
    slo_list, slo_source = config_slos(data, path, slos, slo_defaults or "sarathi")
    notes: list[str] = []
    jobs = []
    for model in data["models"]:
        for scheduler in pick(data["schedulers"], model.get("scheduler_specs"), path, "scheduler_specs", model["name"]):
            for trace in pick(data["traces"], model.get("traces"), path, "traces", model["name"]):
                for parallel in pick(
                    data["parallel_spec"], model.get("parallel_specs"), path, "parallel_specs", model["name"]
                ):
                    jobs.append(_job(data, model, scheduler, trace, parallel, tuple(slo_list), path, notes))
    return Experiment(path, jobs, list(dict.fromkeys(notes)), "sarathi", slo_source)


def pick(entries: list[dict], names, path: Path, key: str, model: str) -> list[dict]:
    if names is None:
        return entries
    if not isinstance(names, list):
        raise ConfigError(f"{path}: model {model!r}: {key} must be a list of names, or null for all")
    if not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
        raise ConfigError(f"{path}: model {model!r}: {key} must list names (strings)")
    by_name = {str(e["name"]): e for e in entries}
    names = [str(n) for n in names]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"{path}: model {model!r} names {key} {', '.join(map(str, missing))}, which the config does not define"
        )
    return [by_name[n] for n in names]


def paper_gpu(model_name: str, notes: list[str]) -> str:
    gpu = PAPER_GPUS.get(model_name)
    if gpu is None:
        notes.append(
            f"{model_name} was not in the Sarathi-Serve paper: it runs on the paper's {PAPER_DEFAULT_GPU}; "
            "add hardware: to the config to choose"
        )
        return PAPER_DEFAULT_GPU
    notes.append(f"{model_name} on {gpu}, the Sarathi-Serve paper's GPU for it (add hardware: to the config to choose)")
    return gpu


def _job(data, model, scheduler, trace, parallel, slos, path, notes) -> SearchJob:
    where = (
        f"{path}: model {model['name']!r}, scheduler {scheduler['name']!r}, trace {trace['name']!r}, "
        f"parallel {parallel['name']!r}"
    )
    policy = SCHEDULER_NAMES.get(scheduler.get("scheduler")) if isinstance(scheduler.get("scheduler"), str) else None
    if policy is None:
        raise ConfigError(
            f"{where}: unknown scheduler {scheduler.get('scheduler')!r}; known: {', '.join(SCHEDULER_NAMES)}"
        )
    try:
        max_len = integer(trace["max_seq_len"], "max_seq_len", 2) if trace.get("max_seq_len") is not None else None
        model_spec = get_model(text(model.get("identifier") or model["name"], "identifier"))
        gpu = model.get("hardware") or data.get("hardware") or paper_gpu(model_spec.name, notes)
        hardware = get_hardware(text(gpu, "hardware"))
        rope = rope_scaling(model_spec, max_len, notes)
        system = SystemSpec(
            model=model_spec.name,
            hardware=hardware.name,
            tp=integer(parallel.get("tp_dimension", 1), "tp_dimension"),
            pp=integer(parallel.get("pp_dimension", 1), "pp_dimension"),
            ep=integer(parallel.get("ep_dimension", 1), "ep_dimension"),
            dp_attention=integer(parallel.get("attention_dp_dimension", 1), "attention_dp_dimension"),
            replicas=integer(data.get("replicas", 1), "replicas", maximum=MAX_REPLICAS),
            scheduler=policy,
            max_batch_size=integer(scheduler.get("batch_size", 128), "batch_size"),
            token_budget=integer(scheduler["chunk_size"], "chunk_size")
            if scheduler.get("chunk_size") is not None
            else None,
            block_size=integer(data.get("block_size", 16), "block_size"),
            max_model_len=max_len,
            rope_scaling=rope,
            memory_utilization=number(data.get("memory_utilization", 0.9), "memory_utilization"),
            num_kv_blocks=integer(data["num_kv_blocks"], "num_kv_blocks") if data.get("num_kv_blocks") else None,
            profile=text(model.get("profile") or data.get("profile"), "profile")
            if (model.get("profile") or data.get("profile"))
            else None,
            engine=text(model.get("engine") or data.get("engine") or "vllm", "engine"),
            pipeline_scheduling=text(data.get("pipeline_scheduling", "one_scheduler"), "pipeline_scheduling"),
            quant=text(model.get("quant") or data.get("quant") or "auto", "quant"),
            kv_cache_dtype=text(model.get("kv_cache_dtype") or data.get("kv_cache_dtype") or "auto", "kv_cache_dtype"),
            host_time=flag(data.get("host_time", True), "host_time"),
            async_scheduling=flag(data.get("async_scheduling", False), "async_scheduling"),
            **speculation(model, data),
        )
        kv_capacity(
            system.model_spec,
            hardware,
            system.tp,
            system.pp,
            system.block_size,
            system.memory_utilization,
            dp=system.dp_attention,
        )  # fits?
        if parallel.get("disagg") is not None:
            system = disaggregated(system, parallel, data)
        elif pools := sorted(key for key in DISAGG_KEYS if parallel.get(key) is not None):
            raise ValueError(
                f"{', '.join(pools)} set the pools of a disaggregated deployment: add disagg (xPyD) to this "
                "parallel_spec, or drop them"
            )
        source = trace_source(text(trace.get("trace_file") or trace["name"], "trace_file"), path, notes)
        arrival = text(trace.get("arrival", "poisson"), "arrival")
        workload = WorkloadSpec(
            trace=source,
            num_requests=integer(trace.get("num_requests", 2048), "num_requests", maximum=MAX_REQUESTS),
            seed=integer(data.get("seed", PEER_SEED), "seed", 0),
            max_total_tokens=max_len,
            arrival=arrival,
            cv=number(trace["cv"], "cv") if trace.get("cv") is not None else None,
            shuffle=flag(data.get("shuffle", source not in builtin_traces()), "shuffle"),
            cap_gaps=flag(data.get("cap_gaps", arrival == "poisson"), "cap_gaps"),
        )
        start_qps = number(trace.get("start_qps", 1.0), "start_qps")
        granularity = number(data.get("granularity", 0.025), "granularity")
        if granularity >= 1:
            raise ValueError(f"granularity is a fraction in (0, 1) (0.025: 2.5%), got {granularity:g}")
        max_trials = integer(data.get("max_trials", 20), "max_trials", maximum=MAX_TRIALS)
    except (ProfileError, SimulationError, TraceError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None
    labels = (
        ("model", model["name"]),
        ("scheduler", scheduler["name"]),
        ("trace", trace["name"]),
        ("parallel", parallel["name"]),
    )
    conventions = (("workload", workload_words(workload)),)
    return SearchJob(system, workload, slos, start_qps, labels, granularity, max_trials, conventions=conventions)


def disaggregated(system: SystemSpec, parallel: dict, data: dict):
    """A parallel_spec entry with disagg: xPyD: the job's system split into pools (its other keys set one pool)."""
    if data.get("replicas") is not None:
        raise ValueError("replicas does not apply to a disagg parallel_spec, whose xPyD gives the instances")
    pools = {key: parallel[key] for key in POOL_OPTIONS if parallel.get(key) is not None}
    for key in (
        "prefill_tp",
        "decode_tp",
        "prefill_chunk_size",
        "decode_max_batch_size",
        "decode_ep",
        "decode_dp_attention",
    ):
        if key in pools:
            pools[key] = integer(pools[key], key)
    for key in ("prefill_hardware", "decode_hardware"):
        if key in pools:
            pools[key] = get_hardware(text(pools[key], key)).name
    for key in ("prefill_scheduler", "decode_scheduler"):
        if key in pools:
            pools[key] = SCHEDULER_NAMES.get(text(pools[key], key)) or text(pools[key], key)
    link, prefill_router, decode_router = (
        text(parallel[key], key) if parallel.get(key) is not None else None
        for key in ("kv_link", "prefill_router", "decode_router")
    )
    return disaggregate(system, text(parallel["disagg"], "disagg"), link, prefill_router, decode_router, **pools)


def rope_scaling(model, max_len: int | None, notes: list[str]) -> float:
    """The RoPE scaling a max_seq_len beyond the model's context needs (the OSDI configs ask 8192
    of Llama-2-70B's 4096 and Falcon-180B's 2048): a power of two, and said in the output."""
    if max_len is None or max_len <= model.max_context:
        return 1.0
    factor = 2.0 ** math.ceil(math.log2(max_len / model.max_context))
    notes.append(
        f"{model.name} holds {model.max_context} tokens; max_seq_len {max_len} runs with RoPE scaling x{factor:g}"
    )
    return factor
