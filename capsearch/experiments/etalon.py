"""Etalon's capacity-search configs, read unchanged (etalon/capacity_search/config/*.yml).

Keys: servers (openai_server_engine, openai_api_key), models (name, identifier, tokenizer,
parallel_specs, traces), parallel_specs (name, tp_dimension, pp_dimension),
request_generator_configs (start_qps, interval and length generators, trace files, seed,
trace_file_name), request_configs (clients, timeout, completed-request count, max tokens).
Jobs are Etalon's product of models x parallel specs x generators x request configs x servers,
with its filters: a model's parallel_specs and traces, and its pairing of the sharegpt trace
with 8192 max tokens and arxiv with 16384.

How each key is simulated:
- server vllm: vLLM as Etalon starts it: the vllm_v0 scheduler with vLLM's defaults (256
  sequences, a token budget of the max model length); sarathi: vLLM with chunked prefill, a 512-
  token budget (sarathi scheduler, 256 sequences). Both with vLLM's latencies. Etalon starts both
  with RoPE scaling x4, so the max model length is four times the model's context.
- request_generator_configs: poisson (gaps capped at 3/QPS, as Etalon's generator does), gamma
  (with its cv) or static arrivals; lengths from the trace file, shuffled with the seed (42 by
  default), scaled by the prefill/decode scale factors.
- request_configs: max_num_completed_requests is the trial's request count,
  request_generator_max_tokens caps prompt + output, timeout stops sending requests that many
  seconds in; requests sent are scored when they finish (completed requests only). The client
  concurrency (num_ray_clients x num_concurrent_requests_per_client) is not modelled: arrivals
  stay open-loop, and the output says so.
- capsim's optional keys: hardware (default H100-SXM, as in Etalon's published runs), engine,
  profile, slos, granularity, max_trials.
"""

from __future__ import annotations

from pathlib import Path

from capsim.capsearch.capacity.jobs import SearchJob
from capsim.capsearch.capacity.trials import TrialLimits
from capsim.capsearch.errors import ConfigError
from capsim.capsearch.experiments.conventions import PEER_SEED
from capsim.capsearch.experiments.schema import (
    Experiment,
    check_keys,
    config_slos,
    integer,
    number,
    trace_source,
    workload_words,
)
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.memory import kv_capacity
from capsim.profiles.models import get_model
from capsim.sim import SimulationError, SystemSpec
from capsim.traces import TraceError, WorkloadSpec

ETALON_GPU = "H100-SXM"
ROPE_SCALING = 4  # Etalon's launcher passes --rope-scaling with factor 4.0 to every engine
SERVERS = {"vllm": ("vllm_v0", None), "sarathi": ("sarathi", 512)}
VLLM_MAX_NUM_SEQS = 256
INTERVALS = {"poisson": "poisson", "gamma": "gamma", "static": "constant"}
TOP_KEYS = {
    "servers",
    "models",
    "parallel_specs",
    "request_generator_configs",
    "request_configs",
    "hardware",
    "engine",
    "profile",
    "slos",
    "granularity",
    "max_trials",
}
SECTION_KEYS = {
    "servers": {"openai_server_engine", "openai_api_key", "port"},
    "models": {"name", "identifier", "tokenizer", "parallel_specs", "traces"},
    "parallel_specs": {"name", "tp_dimension", "pp_dimension"},
    "request_generator_configs": {
        "start_qps",
        "request_interval_generator_provider",
        "request_length_generator_provider",
        "gamma_request_interval_generator_cv",
        "trace_request_interval_generator_trace_file",
        "trace_request_interval_generator_start_time",
        "trace_request_interval_generator_end_time",
        "trace_request_interval_generator_time_scale_factor",
        "trace_request_length_generator_trace_file",
        "trace_request_length_generator_prefill_scale_factor",
        "trace_request_length_generator_decode_scale_factor",
        "fixed_request_generator_prefill_tokens",
        "fixed_request_generator_decode_tokens",
        "synthetic_request_generator_min_tokens",
        "synthetic_request_generator_prefill_to_decode_ratio",
        "zipf_request_length_generator_theta",
        "zipf_request_length_generator_scramble",
        "seed",
        "trace_file_name",
    },
    "request_configs": {
        "num_ray_clients",
        "num_clients",
        "num_concurrent_requests_per_client",
        "timeout",
        "max_num_completed_requests",
        "additional_sampling_params",
        "llm_api",
        "request_generator_max_tokens",
    },
}


def check_sections(path: Path, data: dict) -> None:
    """Etalon's keys, at the top and in each entry of each section."""
    check_keys(data, TOP_KEYS, path, "the top level of an Etalon config")
    for section, keys in SECTION_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: '{section}' must be a non-empty list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ConfigError(f"{path}: entry {i + 1} of '{section}' must be a mapping")
            check_keys(entry, keys, path, f"{section} entry {i + 1}")


def load_etalon(path: Path, data: dict, slos, slo_defaults: str | None = None) -> Experiment:
    check_sections(path, data)
    slo_list, slo_source = config_slos(data, path, slos, slo_defaults or "etalon")
    parallel_by_name = {p.get("name"): p for p in data["parallel_specs"]}
    notes: list[str] = []
    jobs = []
    for model in data["models"]:
        specs = model.get("parallel_specs") or list(parallel_by_name)
        missing = [s for s in specs if s not in parallel_by_name]
        if missing:
            raise ConfigError(
                f"{path}: model {model.get('name')!r} names parallel_specs {', '.join(map(str, missing))}, "
                "which the config does not define"
            )
        for parallel in (parallel_by_name[s] for s in specs):
            for generator in data["request_generator_configs"]:
                if (
                    model.get("traces")
                    and generator.get("trace_request_interval_generator_trace_file") not in model["traces"]
                ):
                    continue  # Etalon matches a model's traces against the interval trace file
                for request in data["request_configs"]:
                    if _etalon_skips(generator, request):
                        continue
                    for server in data["servers"]:
                        jobs.append(
                            _job(data, model, parallel, generator, request, server, tuple(slo_list), path, notes)
                        )
    if not jobs:
        raise ConfigError(
            f"{path}: no job: every combination was filtered out (model parallel_specs/traces, or Etalon's "
            "pairing of sharegpt with 8192 max tokens and arxiv with 16384)"
        )
    clients = sorted({c for c in map(_concurrency, data["request_configs"]) if c})
    if clients:
        notes.append(
            f"Etalon's clients hold at most {', '.join(map(str, clients))} requests in flight; capsim's arrivals are "
            "open-loop (no client cap), so above capacity queues grow at the server instead of the client"
        )
    if any(r.get("additional_sampling_params") for r in data["request_configs"]):
        notes.append("additional_sampling_params do not change a simulated step's latency: not modelled")
    return Experiment(path, jobs, list(dict.fromkeys(notes)), "etalon", slo_source)


def _etalon_skips(generator: dict, request: dict) -> bool:
    """Etalon's own pairing: sharegpt runs with 8192 max tokens, arxiv with 16384."""
    name, tokens = generator.get("trace_file_name"), request.get("request_generator_max_tokens")
    return (name == "sharegpt" and tokens == 16384) or (name == "arxiv" and tokens == 8192)


def _concurrency(request: dict) -> int | None:
    clients = request.get("num_ray_clients", request.get("num_clients"))  # Etalon's two spellings, by version
    each = request.get("num_concurrent_requests_per_client")
    return clients * each if isinstance(clients, int) and isinstance(each, int) else None


def _job(data, model, parallel, generator, request, server, slos, path, notes) -> SearchJob:
    engine_name = server.get("openai_server_engine")
    trace_name = (
        generator.get("trace_file_name") or Path(str(generator.get("trace_request_length_generator_trace_file"))).stem
    )
    where = (
        f"{path}: server {engine_name!r}, model {model.get('name')!r}, parallel {parallel.get('name')!r}, "
        f"trace {trace_name!r}"
    )
    if engine_name not in SERVERS:
        raise ConfigError(f"{where}: server engine {engine_name!r} is not modelled; known: {', '.join(SERVERS)}")
    policy, chunk = SERVERS[engine_name]
    try:
        model_spec = get_model(str(model.get("identifier") or model.get("name")))
        hardware = get_hardware(str(data.get("hardware") or ETALON_GPU))
        max_len = model_spec.max_context * ROPE_SCALING
        system = SystemSpec(
            model=model_spec.name,
            hardware=hardware.name,
            tp=integer(parallel.get("tp_dimension", 1), "tp_dimension"),
            pp=integer(parallel.get("pp_dimension", 1), "pp_dimension"),
            scheduler=policy,
            max_batch_size=VLLM_MAX_NUM_SEQS,
            token_budget=chunk,
            max_model_len=max_len,
            rope_scaling=ROPE_SCALING,
            profile=data.get("profile"),
            engine=str(data.get("engine") or "vllm"),
        )
        kv_capacity(model_spec, hardware, system.tp, system.pp, system.block_size, system.memory_utilization)  # fits?
        workload = WorkloadSpec(
            trace=_lengths(generator, path, notes),
            num_requests=integer(request.get("max_num_completed_requests", 1000), "max_num_completed_requests"),
            seed=integer(generator.get("seed", PEER_SEED), "seed", 0),
            shuffle=True,
            max_total_tokens=integer(request["request_generator_max_tokens"], "request_generator_max_tokens", 2)
            if request.get("request_generator_max_tokens") is not None
            else None,
            prompt_scale=_scale(generator, "prefill"),
            output_scale=_scale(generator, "decode"),
            **_intervals(generator),
        )
        timeout = request.get("timeout")
        limits = TrialLimits(
            send_window_s=number(timeout, "timeout") if timeout is not None else None, completed_only=True
        )
        start_qps = number(generator.get("start_qps", 1.0), "start_qps")
        granularity = number(data.get("granularity", 0.025), "granularity")
        max_trials = integer(data.get("max_trials", 20), "max_trials")
    except (ProfileError, SimulationError, TraceError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None
    if not data.get("hardware"):
        notes.append(
            f"Etalon's configs name no GPU: {hardware.name}, as in Etalon's published runs (add hardware: to choose)"
        )
    notes.append(
        f"Etalon starts {engine_name} with RoPE scaling x{ROPE_SCALING}: max model length {max_len} for "
        f"{model_spec.name}"
    )
    labels = (
        ("model", str(model.get("name"))),
        ("scheduler", engine_name),
        ("trace", trace_name),
        ("parallel", str(parallel.get("name"))),
    )
    conventions = (("workload", workload_words(workload)),)
    return SearchJob(
        system, workload, slos, start_qps, labels, granularity, max_trials, trial=limits, conventions=conventions
    )


def _lengths(generator: dict, path: Path, notes: list[str]) -> str:
    provider = generator.get("request_length_generator_provider", "trace")
    if provider != "trace":
        raise ValueError(
            f"request_length_generator_provider {provider!r} is not modelled: capsim draws lengths from a trace"
        )
    source = generator.get("trace_request_length_generator_trace_file")
    if not source:
        raise ValueError("trace_request_length_generator_trace_file is missing")
    return trace_source(source, path, notes)


def _scale(generator: dict, side: str) -> float:
    value = generator.get(f"trace_request_length_generator_{side}_scale_factor")
    return 1.0 if value is None else number(value, f"trace_request_length_generator_{side}_scale_factor")


def _intervals(generator: dict) -> dict:
    provider = generator.get("request_interval_generator_provider", "poisson")
    if provider not in INTERVALS:
        raise ValueError(
            f"request_interval_generator_provider {provider!r} is not modelled; known: {', '.join(INTERVALS)}"
        )
    arrival = INTERVALS[provider]
    cv = generator.get("gamma_request_interval_generator_cv") if arrival == "gamma" else None
    return {"arrival": arrival, "cv": cv, "cap_gaps": arrival == "poisson"}
