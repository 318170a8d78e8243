"""Latency against load: the loads of a sweep, one trial each, and a row of figures per load.

A load is an open loop at a QPS (Poisson or the workload's process), optionally under a cap on
requests in flight (`vllm bench serve --max-concurrency`), or a closed loop of N users
(`--concurrency N`: every request due at once, N in flight: GuideLLM's concurrent mode).

`--qps auto` is GuideLLM's sweep: a synchronous run (one user) gives the lightest load's request
rate, a throughput run (every request at once) the most the deployment completes per second;
then Poisson loads evenly spaced from the first to 20% past the second (past saturation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from capsim.capsearch.load.metrics import MetricsError, serving_metrics

LOAD_KINDS = ("rate", "concurrency", "synchronous", "throughput")
PAST_SATURATION = 1.2  # the last rate of an automatic sweep, over the throughput run's


@dataclass(frozen=True)
class Load:
    qps: float  # inf: every request due at t = 0
    max_concurrency: int | None = None
    kind: str = "rate"  # one of LOAD_KINDS

    @property
    def label(self) -> str:
        if self.kind == "synchronous":
            return "synchronous"
        if self.kind == "throughput":
            return "throughput"
        if self.kind == "concurrency":
            return f"{self.max_concurrency} users"
        rate = "inf" if self.qps == math.inf else f"{self.qps:.4g}"
        return f"{rate} QPS" + (f", <= {self.max_concurrency} in flight" if self.max_concurrency else "")

    def arrivals(self, process: str) -> str:
        """How this load's requests arrive, given the workload's arrival process (poisson, ...)."""
        if self.kind == "synchronous":
            return "one at a time"
        if self.kind == "concurrency" or (self.qps == math.inf and self.max_concurrency):
            return "closed loop"
        if self.qps == math.inf:
            return "all at t = 0"
        return process

    @property
    def folder(self) -> str:
        """A subfolder name for the load's own files."""
        if self.kind in ("synchronous", "throughput"):
            return self.kind
        if self.kind == "concurrency":
            return f"users-{self.max_concurrency}"
        return f"qps-{'inf' if self.qps == math.inf else format(self.qps, 'g')}" + (
            f"-max{self.max_concurrency}" if self.max_concurrency else ""
        )


def parse_qps(value: str) -> list[float] | str:
    """`--qps 1,2,4`, `--qps inf`, or `auto`."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    try:
        rates = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MetricsError(
            f"--qps {value!r}: write requests per second, comma-separated (1,2,4), inf, or auto"
        ) from None
    if not rates or any(not r > 0 or math.isnan(r) for r in rates):
        raise MetricsError(f"--qps {value!r}: every rate must be positive (or inf)")
    if len(set(rates)) != len(rates):
        raise MetricsError(f"--qps {value!r}: a rate is given twice")
    return rates


def parse_counts(value: str, name: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise MetricsError(f"{name} {value!r}: write whole numbers of requests, comma-separated") from None
    if not counts or any(c < 1 or c >= 2**31 for c in counts) or len(set(counts)) != len(counts):
        raise MetricsError(f"{name} {value!r}: write distinct whole numbers from 1, comma-separated")
    return counts


def planned_loads(
    qps: list[float] | str | None, max_concurrency: int | None, concurrency: list[int] | None
) -> list[Load] | str:
    """The loads the options ask for; "auto" where they depend on the first two runs."""
    if concurrency is not None:
        if qps is not None or max_concurrency is not None:
            raise MetricsError(
                "--concurrency N runs N users with every request due at once: drop --qps and --max-concurrency"
            )
        return [Load(math.inf, c, "concurrency") for c in concurrency]
    if qps is None:
        raise MetricsError("say the load: --qps (or --request-rate) 1,2,4 | inf | auto, or --concurrency N")
    if qps == "auto":
        if max_concurrency is not None:
            raise MetricsError("--qps auto sweeps from one user to past saturation: drop --max-concurrency")
        return "auto"
    return [Load(r, max_concurrency) for r in qps]


def auto_loads(synchronous_rate: float, throughput_rate: float, points: int) -> list[Load]:
    """Poisson loads evenly spaced from the synchronous run's rate to past the throughput run's."""
    if not synchronous_rate > 0 or not throughput_rate > 0:
        raise MetricsError("the synchronous or throughput run completed no request: no rates to sweep")
    top = max(throughput_rate * PAST_SATURATION, synchronous_rate * 1.01)
    rates = np.linspace(synchronous_rate, top, points)
    return [Load(float(f"{r:.4g}")) for r in rates]


def load_row(load: Load, result, percentiles, metrics, goodput_ms, cdf: dict | None = None) -> dict:
    """One row of the sweep: the load, then vLLM's figures (and the CDFs into `cdf`, if given)."""
    return {
        "load": load.label,
        "request_rate": load.qps,
        "max_concurrency": load.max_concurrency,
        "kind": load.kind,
        **serving_metrics(result, percentiles, metrics, goodput_ms, cdf),
    }


@dataclass(frozen=True)
class LoadRun:
    """What the options ask for."""

    loads: list[Load] | str  # "auto": GuideLLM's sweep, planned after two runs
    sweep_points: int
    metrics: tuple[str, ...]
    percentiles: tuple[float, ...]
    goodput_ms: dict
    save_result: bool
    result_dir: str | None
    result_filename: str | None
    label: str | None
    metadata: dict
    warmup: int = 0  # the first requests sent, left out of the figures
    cooldown: int = 0  # the last requests sent, left out of the figures

    def check_window(self, num_requests: int) -> None:
        """Refuse a warm-up and cool-down that leave no request to measure (before any load runs)."""
        if self.warmup + self.cooldown >= num_requests:
            raise MetricsError(
                f"--warmup-requests {self.warmup} and --cooldown-requests {self.cooldown} leave none of the "
                f"{num_requests} requests to measure: send more (-n) or leave out fewer"
            )

    def measured(self, result):
        """The run's requests that count: in send order, all but the warm-up and the cool-down."""
        if not (self.warmup or self.cooldown):
            return result
        order = np.argsort(result.column("id"), kind="stable")
        keep = np.zeros(len(order), dtype=bool)
        keep[order[self.warmup : len(order) - self.cooldown]] = True
        measured = result.only(keep)
        measured.info = result.info | {"left_out": f"the first {self.warmup} and last {self.cooldown} requests sent"}
        return measured

    @property
    def is_sweep(self) -> bool:
        return self.loads == "auto" or len(self.loads) > 1
