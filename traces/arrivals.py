"""Arrival processes: when each request of a workload arrives, at a target QPS.

Every process first draws arrival times at a rate of one request per second from the seed, then
divides them by the QPS. So the same seed gives the same requests in the same order at every QPS
of a capacity search, and only the gaps between them scale. The first request arrives at t = 0.

- poisson: exponential gaps. With cap_gaps, each gap is capped at 3/QPS, as the Poisson
  generators of Sarathi-Serve and Etalon do. The cap shortens the mean gap to (1 - e^-3)/QPS, so
  the load offered is 5% above the nominal QPS, and a capacity read off a capped search is about
  5% lower (in nominal QPS) than the plain Poisson one. Off by default; on for the peers' configs.
- gamma: gamma-distributed gaps with a coefficient of variation `cv` (cv = 1 is Poisson; cv > 1 is
  burstier, as production traces are).
- constant: evenly spaced, 1/QPS apart.
- replay: the trace's own timestamps, stretched or squeezed uniformly to the target QPS
  (mean rate over the trace = QPS), keeping the trace's burst pattern.
At an infinite QPS every request arrives at t = 0, whatever the process (`vllm bench serve
--request-rate inf`); with a concurrency cap that is a closed loop of that many users.
"""

from __future__ import annotations

import numpy as np

from capsim.traces.errors import TraceError
from capsim.traces.seeding import rng_for

PROCESSES = ("poisson", "gamma", "constant", "replay")
POISSON_GAP_CAP = 3.0  # in units of the mean gap 1/QPS


def arrival_times(
    process: str,
    num_requests: int,
    qps: float,
    seed: int = 0,
    *,
    cv: float | None = None,
    cap_gaps: bool = False,
    timestamps: np.ndarray | None = None,
) -> np.ndarray:
    """Arrival times in seconds for num_requests requests at the given QPS; an infinite QPS
    sends every request at t = 0 (vLLM's --request-rate inf)."""
    if not qps > 0 or np.isnan(qps):
        raise TraceError(f"QPS must be a positive number, got {qps}")
    if qps == np.inf:
        unit_rate_arrivals(
            process, num_requests, seed, cv=cv, cap_gaps=cap_gaps, timestamps=timestamps
        )  # the same checks
        return np.zeros(num_requests)
    return unit_rate_arrivals(process, num_requests, seed, cv=cv, cap_gaps=cap_gaps, timestamps=timestamps) / qps


def unit_rate_arrivals(
    process: str,
    num_requests: int,
    seed: int = 0,
    *,
    cv: float | None = None,
    cap_gaps: bool = False,
    timestamps: np.ndarray | None = None,
) -> np.ndarray:
    """Arrival times at one request per second; divide by a QPS to get that QPS."""
    if process not in PROCESSES:
        raise TraceError(f"unknown arrival process {process!r}; choose one of {', '.join(PROCESSES)}")
    if num_requests <= 0:
        raise TraceError(f"number of requests must be positive, got {num_requests}")
    if cv is not None and process != "gamma":
        raise TraceError(f"a CV applies to the gamma process only, not to {process}")
    if cap_gaps and process != "poisson":
        raise TraceError(f"capping gaps applies to the poisson process only, not to {process}")
    rng = rng_for(seed, "arrivals")
    gaps_needed = num_requests - 1
    if process == "poisson":
        gaps = rng.exponential(1.0, gaps_needed)
        if cap_gaps:
            gaps = np.minimum(gaps, POISSON_GAP_CAP)
    elif process == "gamma":
        if cv is None or not cv > 0:
            raise TraceError(f"the gamma process needs a positive --cv (burstiness), got {cv}")
        shape = 1.0 / (cv * cv)
        gaps = rng.gamma(shape, 1.0 / shape, gaps_needed)
    elif process == "constant":
        gaps = np.ones(gaps_needed)
    else:
        return _replayed(timestamps, num_requests)
    return np.concatenate(([0.0], np.cumsum(gaps)))


def _replayed(timestamps: np.ndarray | None, num_requests: int) -> np.ndarray:
    if timestamps is None:
        raise TraceError(
            "replay needs a trace with its own timestamps (this one has none); use poisson, gamma or constant"
        )
    if len(timestamps) < num_requests:
        raise TraceError(f"the trace has only {len(timestamps)} timestamps for {num_requests} requests")
    times = np.asarray(timestamps[:num_requests], dtype=np.float64)
    times = times - times[0]
    if num_requests == 1:
        return times
    span = times[-1]
    if not span > 0:
        raise TraceError("replay needs timestamps that span some time; these are all equal")
    return times * ((num_requests - 1) / span)
