"""What every experiment config shares, whoever's schema it is: the searches it asks for (Experiment), YAML
read with limits, numbers and keys checked where they are read, SLOs and trace files named in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from capsim.capsearch.capacity.jobs import SearchJob
from capsim.capsearch.capacity.slo import SLOError, slo_from_dict
from capsim.capsearch.errors import ConfigError
from capsim.traces import TraceError, WorkloadSpec, builtin_traces

KNOWN_TRACE_FILES = {
    "sharegpt_8k_filtered_stats_llama2_tokenizer.csv": "chat",
    "arxiv_summarization_filtered_stats_llama2_tokenizer.csv": "arxiv",
    "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv": "arxiv4k",
    "bwb_stats_llama2_tokenizer_filtered_v2.csv": "bwb",
    "splitwise_code.csv": "azure-code",
    "splitwise_conv.csv": "azure-conv",
}


@dataclass
class Experiment:
    path: Path
    jobs: list[SearchJob]
    notes: list[str]
    convention: str  # whose SLO defaults and workload generation: sarathi or etalon
    slo_source: str  # where the SLOs came from, in words


MAX_YAML_BYTES = 1 << 20  # a config, a space or a price list: a few KB

MAX_YAML_DEPTH = 32


def load_yaml_file(path: Path):
    """A small YAML file's data, checked before it is built: UTF-8 text of at most 1 MiB, nesting
    at most 32 deep, and no anchors or aliases (a few lines of aliases can stand for gigabytes)."""
    try:
        raw = Path(path).read_bytes()
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {len(raw):,} bytes; a config is at most 1 MiB")
        text = raw.decode("utf-8-sig")
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(
                    f"{path}, line {event.start_mark.line + 1}: YAML anchors and aliases (&, *) are not accepted; "
                    "write the values out"
                )
            depth += isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
            depth -= isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent))
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{path}, line {event.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} deep")
        return yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder: give a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None


def read_yaml(path: Path) -> dict:
    data = load_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config is a mapping (Sarathi-Serve's schedulers, traces, parallel_spec, models; "
            "or Etalon's servers, models, parallel_specs, request_generator_configs, request_configs)"
        )
    return data


def config_slos(data: dict, path: Path, slos, convention: str) -> tuple[list, str]:
    """(SLOs, where they came from): the command line's, else the config's, else `convention`'s defaults."""
    from capsim.capsearch.experiments.conventions import WORDS
    from capsim.capsearch.experiments.slo_flags import default_slos

    given = slos(convention) if slos else None
    if given:
        return given, "the command line"
    entries = data.get("slos")
    if entries is not None and not isinstance(entries, list):
        raise ConfigError(
            f"{path}: slos must be a list of SLOs, each with a kind (tbt_ttft, ttft_tpot, deadline) and its fields"
        )
    try:
        listed = [slo_from_dict(s) if isinstance(s, dict) else slo_from_dict({"kind": s}) for s in entries or []]
    except SLOError as error:
        raise ConfigError(f"{path}: slos: {error}") from None
    if listed:
        return listed, "the config"
    return default_slos(convention), f"{WORDS[convention]} defaults"


def check_keys(entry: dict, known: set, path: Path, where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(str, unknown))} in {where}; known keys: {', '.join(sorted(known))}"
        )


def integer(value, name: str, minimum: int = 1, maximum: int = 2**31 - 1) -> int:
    """A YAML integer, refused (not truncated) when it is a float, a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def text(value, name: str) -> str:
    """A YAML string (a name, a path); numbers pass as their text, anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return str(value)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def workload_words(workload: WorkloadSpec) -> str:
    arrival = workload.arrival + (", gaps capped at 3/QPS" if workload.cap_gaps else "")
    order = (
        "a random sample (built-in trace)"
        if workload.is_builtin
        else ("shuffled" if workload.shuffle else "in file order")
    )
    return f"{workload.num_requests} requests, {order}, seed {workload.seed}; {arrival} arrivals"


def trace_source(source: str, path: Path, notes: list[str]) -> str:
    source = str(source)
    if source in builtin_traces():
        return source
    file = Path(source) if Path(source).is_absolute() else path.parent / source
    if file.is_file():
        return str(file)
    builtin = KNOWN_TRACE_FILES.get(Path(source).name)
    if builtin is None:
        raise TraceError(f"trace file {source} not found (relative paths are read from the config's folder)")
    notes.append(
        f"{Path(source).name} is not here: using capsim's built-in '{builtin}' trace (its shipped length distribution)"
    )
    return builtin


SPECULATION_KEYS = ("spec_tokens", "spec_method", "acceptance", "draft_cost")


def speculation(model: dict, data: dict) -> dict:
    """SystemSpec's speculative-decoding fields from a config (a model's entry over the file's):
    spec_tokens K, spec_method, acceptance (a rate, or a list of one a draft position), draft_cost."""

    def given(key):
        return model.get(key) if model.get(key) is not None else data.get(key)

    fields = {}
    if given("spec_tokens") is not None:
        fields["spec_tokens"] = integer(given("spec_tokens"), "spec_tokens", 0, 16)
    if given("spec_method") is not None:
        fields["spec_method"] = text(given("spec_method"), "spec_method")
    if given("acceptance") is not None:
        rates = given("acceptance") if isinstance(given("acceptance"), list) else [given("acceptance")]
        fields["acceptance"] = tuple(number(rate, "acceptance") for rate in rates)
    if given("draft_cost") is not None:
        cost = given("draft_cost")
        fields["draft_cost"] = 0.0 if cost == 0 and not isinstance(cost, bool) else number(cost, "draft_cost")
    return fields
