"""Built-in traces, usable by name with no file: compact figures sampled from a seed.

Each built-in trace is stored as (data/builtin_traces.json, made by
scripts/derive_builtin_traces.py):
- the quantile table of prompt length (dense in the tails), and
- a coarse joint table: for each decile of prompt length, the quantile table of output length
  given that decile. This keeps the dependence between the two that matters for serving: long
  prompts with short answers under a total-length cap, say, which one correlation number misses.

Sampling draws u ~ U(0,1), reads the prompt length off its quantile table at u, then draws
v ~ U(0,1) and reads the output length off the table of u's prompt decile at v (linear
interpolation, rounded to whole tokens). A trace's total-length cap is then applied as the loader
options apply it (proportional shrink; it touches well under 1% of requests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from capsim.traces.errors import TraceError
from capsim.traces.seeding import rng_for
from capsim.traces.workload import Workload


@dataclass(frozen=True)
class BuiltinTrace:
    name: str
    description: str
    derived_from: str
    max_total_tokens: int | None
    probabilities: np.ndarray  # grid of the prompt quantile table
    prompt_quantiles: np.ndarray
    output_probabilities: np.ndarray  # grid of each conditional output table
    output_quantiles: np.ndarray  # one row per prompt decile
    interarrival_cv: float | None  # burstiness of the source's own arrivals, when it had any

    def sample(self, num_requests: int, seed: int = 0) -> Workload:
        """num_requests requests drawn from the tables; the same seed gives the same requests."""
        if num_requests <= 0:
            raise TraceError(f"number of requests must be positive, got {num_requests}")
        rng = rng_for(seed, "lengths")
        u = rng.random(num_requests)
        v = rng.random(num_requests)
        prompt = np.interp(u, self.probabilities, self.prompt_quantiles)
        bins = len(self.output_quantiles)
        decile = np.minimum((u * bins).astype(np.int64), bins - 1)
        output = np.empty(num_requests)
        for b in range(bins):
            rows = decile == b
            output[rows] = np.interp(v[rows], self.output_probabilities, self.output_quantiles[b])
        workload = Workload.from_arrays(
            np.maximum(1, np.rint(prompt)),
            np.maximum(1, np.rint(output)),
            info={"source": self.name, "seed": seed},
        )
        return workload.capped(self.max_total_tokens) if self.max_total_tokens else workload


@cache
def builtin_traces() -> dict[str, BuiltinTrace]:
    text = resources.files("capsim.traces").joinpath("data/builtin_traces.json").read_text()
    traces = {}
    for name, entry in json.loads(text)["traces"].items():
        traces[name] = BuiltinTrace(
            name=name,
            description=entry["description"],
            derived_from=entry["derived_from"],
            max_total_tokens=entry["max_total_tokens"],
            probabilities=np.asarray(entry["prompt"]["p"]),
            prompt_quantiles=np.asarray(entry["prompt"]["q"]),
            output_probabilities=np.asarray(entry["output_given_prompt_decile"]["p"]),
            output_quantiles=np.asarray(entry["output_given_prompt_decile"]["q"]),
            interarrival_cv=entry.get("interarrival_cv"),
        )
    return traces


def get_builtin(name: str) -> BuiltinTrace:
    traces = builtin_traces()
    if name not in traces:
        raise TraceError(f"unknown built-in trace {name!r}; built-in traces: {', '.join(traces)}")
    return traces[name]
