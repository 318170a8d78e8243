"""Workloads: real trace files, built-in traces, arrival processes."""

from capsim.traces.arrivals import PROCESSES, arrival_times
from capsim.traces.builtin import builtin_traces, get_builtin
from capsim.traces.errors import TraceError
from capsim.traces.loaders import FORMATS, load_trace
from capsim.traces.spec import WorkloadSpec
from capsim.traces.workload import Workload

__all__ = [
    "FORMATS",
    "PROCESSES",
    "TraceError",
    "Workload",
    "WorkloadSpec",
    "arrival_times",
    "builtin_traces",
    "get_builtin",
    "load_trace",
]
