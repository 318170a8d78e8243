"""WorkloadSpec: everything that decides a workload, so a trial can be named by its content.

The lengths are fixed by the trace, the seed and the length options; the QPS only scales the
arrival times (see arrivals.py). Order of the length options, for files: shuffle, take the first
N, scale, cap the total. Built-in traces are sampled (already in random order), then scaled and
capped the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from capsim.traces.arrivals import PROCESSES, arrival_times
from capsim.traces.builtin import builtin_traces, get_builtin
from capsim.traces.errors import TraceError
from capsim.traces.loaders import load_trace
from capsim.traces.seeding import rng_for
from capsim.traces.workload import Workload

MAX_REQUESTS = 10_000_000  # requests a workload: beyond this is a typo, not an experiment
RANDOM = "random"  # vLLM's random dataset: uniform lengths around --random-input-len / --random-output-len
RANDOM_DEFAULTS = (1024, 128)  # vllm bench serve's input and output lengths


@dataclass(frozen=True)
class WorkloadSpec:
    trace: str  # a built-in trace's name or a trace file's path
    num_requests: int = 2048
    seed: int = 0
    format: str | None = None  # file format; detected from the file when None
    max_total_tokens: int | None = None
    prompt_scale: float = 1.0
    output_scale: float = 1.0
    shuffle: bool = False
    arrival: str = "poisson"
    cv: float | None = None  # burstiness of the gamma process
    cap_gaps: bool = False  # Poisson gaps capped at 3/QPS (Sarathi-Serve, Etalon)
    random_input_len: int | None = None  # trace "random": lengths uniform in len * [1 - ratio, 1 + ratio]
    random_output_len: int | None = None
    random_range_ratio: float = 0.0

    def __post_init__(self):
        if self.trace == RANDOM:
            for name in ("random_input_len", "random_output_len"):
                value = getattr(self, name)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31
                ):
                    raise TraceError(f"{name.replace('_', ' ')} must be a whole number of tokens from 1, got {value!r}")
            ratio = self.random_range_ratio
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                raise TraceError(f"random range ratio must be in [0, 1), got {ratio!r}")
        elif (self.random_input_len, self.random_output_len, self.random_range_ratio) != (None, None, 0.0):
            raise TraceError(
                f"random lengths apply to the {RANDOM!r} trace, not to {self.trace!r}: drop --trace, or the "
                f"--random-* options"
            )
        if (
            isinstance(self.num_requests, bool)
            or not isinstance(self.num_requests, int)
            or not 0 < self.num_requests <= MAX_REQUESTS
        ):
            raise TraceError(
                f"number of requests must be a whole number from 1 to {MAX_REQUESTS:,}, got {self.num_requests}"
            )
        if self.arrival not in PROCESSES:
            raise TraceError(f"unknown arrival process {self.arrival!r}; choose one of {', '.join(PROCESSES)}")
        if self.cap_gaps and self.arrival != "poisson":
            raise TraceError(f"capping gaps applies to the poisson process only, not to {self.arrival}")
        if self.cv is not None and self.arrival != "gamma":
            raise TraceError(f"a CV applies to the gamma process only, not to {self.arrival}")

    @property
    def is_builtin(self) -> bool:
        return self.trace == RANDOM or self.trace in builtin_traces()

    def requests(self) -> Workload:
        """The requests (lengths, and the file's own arrival times if any), before any QPS."""
        return _requests(self)

    def at_qps(self, qps: float) -> Workload:
        """The requests arriving at the given QPS under the spec's arrival process."""
        requests = self.requests()
        timestamps = requests.arrival_s if requests.has_arrivals else None
        times = arrival_times(
            self.arrival, len(requests), qps, self.seed, cv=self.cv, cap_gaps=self.cap_gaps, timestamps=timestamps
        )
        return requests.with_arrivals(times, qps=qps, arrival=self.arrival)

    def to_dict(self) -> dict:
        """The spec as plain data, a file trace named by its resolved path."""
        data = asdict(self)
        if self.trace != RANDOM:  # what names other traces stays as it was (trial cache keys)
            for name in ("random_input_len", "random_output_len", "random_range_ratio"):
                del data[name]
        if not self.is_builtin:
            data["trace"] = str(Path(self.trace).resolve())
        return data


def open_trace(trace: str, format: str | None = None, sample_size: int = 10_000, seed: int = 0) -> Workload:
    """A built-in trace's sample of sample_size requests, or a trace file whole."""
    if trace in builtin_traces():
        if format is not None:
            raise TraceError(f"{trace!r} is a built-in trace; --format applies to files only")
        return get_builtin(trace).sample(sample_size, seed)
    if not Path(trace).exists():
        raise TraceError(
            f"{trace!r} is neither a trace file nor a built-in trace; built-in traces: {', '.join(builtin_traces())}"
        )
    return load_trace(trace, format)


def random_lengths(spec: WorkloadSpec) -> Workload:
    """vLLM's random dataset: each length drawn uniformly from the whole numbers in
    [floor(len * (1 - ratio)), ceil(len * (1 + ratio))] (just len at ratio 0), from the seed."""
    if spec.format is not None:
        raise TraceError(f"{RANDOM!r} is a synthetic trace; --format applies to files only")
    rng = rng_for(spec.seed, "lengths")
    drawn = []
    for length in (spec.random_input_len or RANDOM_DEFAULTS[0], spec.random_output_len or RANDOM_DEFAULTS[1]):
        low, high = (
            max(1, math.floor(length * (1 - spec.random_range_ratio))),
            math.ceil(length * (1 + spec.random_range_ratio)),
        )
        drawn.append(rng.integers(low, high + 1, spec.num_requests))
    info = {
        "trace": RANDOM,
        "random_input_len": spec.random_input_len or RANDOM_DEFAULTS[0],
        "random_output_len": spec.random_output_len or RANDOM_DEFAULTS[1],
        "random_range_ratio": spec.random_range_ratio,
    }
    return Workload.from_arrays(*drawn, info=info, where="random lengths")


@lru_cache(maxsize=16)
def _requests(spec: WorkloadSpec) -> Workload:
    workload = (
        random_lengths(spec)
        if spec.trace == RANDOM
        else open_trace(spec.trace, spec.format, spec.num_requests, spec.seed)
    )
    if not spec.is_builtin:
        if spec.shuffle:
            workload = workload.shuffled(spec.seed)
        workload = workload.head(spec.num_requests)
    if (spec.prompt_scale, spec.output_scale) != (1.0, 1.0):
        workload = workload.scaled(spec.prompt_scale, spec.output_scale)
    if spec.max_total_tokens is not None:
        workload = workload.capped(spec.max_total_tokens)
    return workload
