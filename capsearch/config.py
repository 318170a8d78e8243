"""Experiment configs: the Sarathi-Serve OSDI YAML schema as it is, plus capsim's own keys.

Sarathi-Serve's keys: schedulers (name, scheduler: vllm | orca | sarathi, batch_size,
chunk_size), traces (name, trace_file, max_seq_len, num_requests, start_qps), parallel_spec
(name, tp_dimension, pp_dimension), models (name, identifier, parallel_specs, scheduler_specs,
traces; null = all).

capsim's keys, all optional: hardware (default A100-80GB-SXM, as in the paper), per model too;
engine (whose latencies: vllm, the default, sglang, trtllm or reference), per model too; profile (a profile file); slos (a list of SLOs: kind tbt_ttft | ttft_tpot | deadline and its
fields); seed; granularity; max_trials; replicas; block_size; memory_utilization; num_kv_blocks. A trace_file
that does not exist but names one of the paper's processed traces uses capsim's built-in trace of
that name.

Everything is checked on load, before any trial runs: unknown keys are named with their file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from capsim.capsearch.experiment import SearchJob
from capsim.capsearch.slo import SLOError, slo_from_dict
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.memory import kv_capacity
from capsim.profiles.models import get_model
from capsim.sim import SimulationError, SystemSpec
from capsim.traces import TraceError, WorkloadSpec, builtin_traces


class ConfigError(ValueError):
    """A config that cannot be run; the message names the file and the key."""


SCHEDULER_NAMES = {"vllm": "vllm_v0", "vllm_v0": "vllm_v0", "orca": "orca", "sarathi": "sarathi", "vllm_v1": "vllm_v1",
                   "faster_transformer": "faster_transformer"}
KNOWN_TRACE_FILES = {
    "sharegpt_8k_filtered_stats_llama2_tokenizer.csv": "chat",
    "arxiv_summarization_filtered_stats_llama2_tokenizer.csv": "arxiv",
    "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv": "arxiv4k",
    "bwb_stats_llama2_tokenizer_filtered_v2.csv": "bwb",
    "splitwise_code.csv": "azure-code",
    "splitwise_conv.csv": "azure-conv",
}
TOP_KEYS = {"schedulers", "traces", "parallel_spec", "models", "hardware", "engine", "profile", "slos", "seed", "granularity",
            "max_trials", "replicas", "block_size", "memory_utilization", "num_kv_blocks"}
SECTION_KEYS = {
    "schedulers": {"name", "scheduler", "batch_size", "chunk_size"},
    "traces": {"name", "trace_file", "max_seq_len", "num_requests", "start_qps", "arrival", "cv"},
    "parallel_spec": {"name", "tp_dimension", "pp_dimension"},
    "models": {"name", "identifier", "parallel_specs", "scheduler_specs", "traces", "hardware", "engine", "profile"},
}


@dataclass
class Experiment:
    path: Path
    jobs: list[SearchJob]
    notes: list[str]


def load_config(path: str | Path, slos: list | None = None, overrides: dict | None = None) -> Experiment:
    """The config's searches; `slos` (from the command line) replace the config's own."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping with schedulers, traces, parallel_spec and models")
    data |= overrides or {}
    _check_keys(data, TOP_KEYS, path, "the top level")
    for section, keys in SECTION_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"{path}: '{section}' must be a non-empty list")
        for entry in entries:
            if not isinstance(entry, dict) or "name" not in entry:
                raise ConfigError(f"{path}: every entry of '{section}' needs a name")
            _check_keys(entry, keys, path, f"{section} entry {entry['name']!r}")
    try:
        slo_list = slos or [slo_from_dict(s) for s in data.get("slos") or []]
    except SLOError as error:
        raise ConfigError(f"{path}: slos: {error}") from None
    if not slo_list:
        raise ConfigError(f"{path}: no SLO: add an 'slos' list, or give one on the command line (e.g. --tbt-slo-value 0.1)")
    notes: list[str] = []
    jobs = []
    for model in data["models"]:
        for scheduler in _pick(data["schedulers"], model.get("scheduler_specs"), path, "scheduler_specs", model["name"]):
            for trace in _pick(data["traces"], model.get("traces"), path, "traces", model["name"]):
                for parallel in _pick(data["parallel_spec"], model.get("parallel_specs"), path, "parallel_specs", model["name"]):
                    jobs.append(_job(data, model, scheduler, trace, parallel, tuple(slo_list), path, notes))
    return Experiment(path, jobs, sorted(set(notes)))


def _check_keys(entry: dict, known: set, path: Path, where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(sorted(known))}")


def _pick(entries: list[dict], names, path: Path, key: str, model: str) -> list[dict]:
    if names is None:
        return entries
    by_name = {e["name"]: e for e in entries}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"{path}: model {model!r} names {key} {', '.join(missing)}, which the config does not define")
    return [by_name[n] for n in names]


def _job(data, model, scheduler, trace, parallel, slos, path, notes) -> SearchJob:
    where = f"{path}: model {model['name']!r}, scheduler {scheduler['name']!r}, trace {trace['name']!r}, parallel {parallel['name']!r}"
    policy = SCHEDULER_NAMES.get(str(scheduler.get("scheduler")))
    if policy is None:
        raise ConfigError(f"{where}: unknown scheduler {scheduler.get('scheduler')!r}; known: {', '.join(SCHEDULER_NAMES)}")
    max_len = trace.get("max_seq_len")
    try:
        model_spec = get_model(str(model.get("identifier") or model["name"]))
        hardware = get_hardware(str(model.get("hardware") or data.get("hardware") or "A100-80GB-SXM"))
        system = SystemSpec(
            model=model_spec.name, hardware=hardware.name, tp=int(parallel.get("tp_dimension", 1)),
            pp=int(parallel.get("pp_dimension", 1)), replicas=int(data.get("replicas", 1)), scheduler=policy,
            max_batch_size=int(scheduler.get("batch_size", 128)), token_budget=scheduler.get("chunk_size"),
            block_size=int(data.get("block_size", 16)), max_model_len=max_len,
            memory_utilization=float(data.get("memory_utilization", 0.9)),
            num_kv_blocks=int(data["num_kv_blocks"]) if data.get("num_kv_blocks") else None, profile=model.get("profile") or data.get("profile"),
            engine=str(model.get("engine") or data.get("engine") or "vllm"),
        )
        kv_capacity(model_spec, hardware, system.tp, system.pp, system.block_size, system.memory_utilization)  # fits?
        workload = WorkloadSpec(
            trace=_trace_source(trace, path, notes), num_requests=int(trace.get("num_requests", 2048)),
            seed=int(data.get("seed", 0)), max_total_tokens=max_len, arrival=trace.get("arrival", "poisson"), cv=trace.get("cv"),
        )
        start_qps = float(trace.get("start_qps", 1.0))
    except (ProfileError, SimulationError, TraceError, TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None
    if not start_qps > 0:
        raise ConfigError(f"{where}: start_qps must be positive, got {start_qps}")
    labels = (("model", model["name"]), ("scheduler", scheduler["name"]), ("trace", trace["name"]), ("parallel", parallel["name"]))
    return SearchJob(system, workload, slos, start_qps, labels, float(data.get("granularity", 0.025)), int(data.get("max_trials", 20)))


def _trace_source(trace: dict, path: Path, notes: list[str]) -> str:
    source = trace.get("trace_file") or trace["name"]
    if source in builtin_traces():
        return source
    file = Path(source) if Path(source).is_absolute() else path.parent / source
    if file.is_file():
        return str(file)
    builtin = KNOWN_TRACE_FILES.get(Path(source).name)
    if builtin is None:
        raise TraceError(f"trace file {source} not found (relative paths are read from the config's folder)")
    notes.append(f"{Path(source).name} is not here: using capsim's built-in '{builtin}' trace")
    return builtin
