"""WorkloadSpec: everything that decides a workload, so a trial can be named by its content.

The lengths are fixed by the trace, the seed and the length options; the QPS only scales the
arrival times (see arrivals.py). Order of the length options, for files: shuffle, take the first
N, scale, cap the total. Built-in traces are sampled (already in random order), then scaled and
capped the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from capsim.traces.arrivals import PROCESSES, arrival_times
from capsim.traces.builtin import builtin_traces, get_builtin
from capsim.traces.errors import TraceError
from capsim.traces.loaders import load_trace
from capsim.traces.workload import Workload

MAX_REQUESTS = 10_000_000  # requests a workload: beyond this is a typo, not an experiment


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

    def __post_init__(self):
        if isinstance(self.num_requests, bool) or not isinstance(self.num_requests, int) or not 0 < self.num_requests <= MAX_REQUESTS:
            raise TraceError(f"number of requests must be a whole number from 1 to {MAX_REQUESTS:,}, got {self.num_requests}")
        if self.arrival not in PROCESSES:
            raise TraceError(f"unknown arrival process {self.arrival!r}; choose one of {', '.join(PROCESSES)}")
        if self.cap_gaps and self.arrival != "poisson":
            raise TraceError(f"capping gaps applies to the poisson process only, not to {self.arrival}")
        if self.cv is not None and self.arrival != "gamma":
            raise TraceError(f"a CV applies to the gamma process only, not to {self.arrival}")

    @property
    def is_builtin(self) -> bool:
        return self.trace in builtin_traces()

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
        raise TraceError(f"{trace!r} is neither a trace file nor a built-in trace; built-in traces: {', '.join(builtin_traces())}")
    return load_trace(trace, format)


@lru_cache(maxsize=16)
def _requests(spec: WorkloadSpec) -> Workload:
    workload = open_trace(spec.trace, spec.format, spec.num_requests, spec.seed)
    if not spec.is_builtin:
        if spec.shuffle:
            workload = workload.shuffled(spec.seed)
        workload = workload.head(spec.num_requests)
    if (spec.prompt_scale, spec.output_scale) != (1.0, 1.0):
        workload = workload.scaled(spec.prompt_scale, spec.output_scale)
    if spec.max_total_tokens is not None:
        workload = workload.capped(spec.max_total_tokens)
    return workload
