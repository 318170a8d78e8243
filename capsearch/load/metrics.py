"""The figures of `vllm bench serve`, from a RunResult (simulated or measured alike).

Same names and meanings as vLLM's result files, so their dashboards read capsim's:
- completed, failed, duration (first send to last response), total input and output tokens of
  completed requests, request_throughput, output_throughput, total_token_throughput (and
  capsim's input_throughput), max_output_tokens_per_s and max_concurrent_requests (per
  one-second bucket, as vLLM counts them);
- request_goodput: completed requests per second that meet every given limit of
  `--goodput ttft:MS tpot:MS e2el:MS` (vLLM's definition; a one-token request has TPOT 0);
- for each of ttft, tpot, itl, e2el: mean_X_ms, median_X_ms, std_X_ms and pN_X_ms at the
  chosen percentiles, over completed requests (itl: every gap between two tokens).
"""

from __future__ import annotations

import math
import re

import numpy as np

from capsim.sim.result import RunResult

METRICS = ("ttft", "tpot", "itl", "e2el")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
CDF_POINTS = 1001  # quantiles that draw a CDF as well as a million points
WORDS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}


class MetricsError(ValueError):
    """A metric, percentile or goodput limit that cannot be used as given."""


def parse_goodput(values) -> dict[str, float]:
    """`ttft:200 tpot:50` (vLLM's form: milliseconds), repeated or in one string, comma or space
    separated, into {metric: milliseconds}."""
    limits: dict[str, float] = {}
    for value in values:
        for item in re.split(r"[\s,]+", value.strip()):
            if not item:
                continue
            name, _, number = item.partition(":")
            name = name.strip().lower()
            if name not in GOODPUT_METRICS:
                raise MetricsError(
                    f"goodput limit {item!r}: write METRIC:MILLISECONDS with METRIC one of {', '.join(GOODPUT_METRICS)}"
                )
            try:
                ms = float(number)
            except ValueError:
                raise MetricsError(f"goodput limit {item!r}: {number!r} is not a number of milliseconds") from None
            if not 0 < ms < math.inf:
                raise MetricsError(f"goodput limit {item!r}: milliseconds must be positive")
            if name in limits:
                raise MetricsError(f"goodput limit {name} given twice")
            limits[name] = ms
    return limits


def parse_metrics(value: str) -> tuple[str, ...]:
    """`ttft,tpot,itl` into the metrics vLLM knows, in the order given."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise MetricsError(f"percentile metrics {value!r}: choose from {', '.join(METRICS)}, comma-separated")
    return names


def parse_percentiles(value: str) -> tuple[float, ...]:
    """`50,90,99,99.9` (percentages, as vLLM's --metric-percentiles) into numbers."""
    try:
        numbers = tuple(dict.fromkeys(float(v) for v in value.split(",") if v.strip()))
    except ValueError:
        raise MetricsError(f"metric percentiles {value!r}: write numbers from 0 to 100, comma-separated") from None
    if not numbers or any(not 0 <= p <= 100 for p in numbers):
        raise MetricsError(f"metric percentiles {value!r}: write numbers from 0 to 100, comma-separated")
    return numbers


def percentile_word(p: float) -> str:
    """vLLM's key spelling: p99, p99.9."""
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def request_latencies(result: RunResult) -> dict[str, np.ndarray]:
    """Per completed request, in seconds: ttft, tpot (0 for one token), e2el; and every itl gap
    between two tokens of a completed request. From the run's arrays, no copy of its table."""
    finished = result.finished()
    values, offsets = result.token_times
    all_counts = np.diff(offsets)
    arrival = result.column("arrival_s")
    ttft = (result.column("first_token_s") - arrival)[finished]
    e2el = (result.column("finish_s") - arrival)[finished]
    counts = all_counts[finished]
    tpot = np.where(counts > 1, (e2el - ttft) / np.maximum(counts - 1, 1), 0.0)
    ends_a_gap = np.repeat(finished, all_counts)  # token j + 1 closes the gap j of its own request
    ends_a_gap[offsets[:-1][all_counts > 0]] = False  # a request's first token closes none
    itl = np.diff(values)[ends_a_gap[1:]] if len(values) > 1 else np.empty(0)
    itl = itl[itl > 0]  # tokens that arrive together (a speculative step's burst) are one chunk to vLLM's client
    return {"ttft": ttft, "tpot": tpot, "e2el": e2el, "itl": itl, "counts": counts}


def good_requests(latencies: dict[str, np.ndarray], goodput_ms: dict[str, float]) -> np.ndarray:
    """Which completed requests meet every limit."""
    good = np.ones(len(latencies["ttft"]), dtype=bool)
    for name, ms in goodput_ms.items():
        good &= latencies[name] <= ms / 1000
    return good


def serving_metrics(
    result: RunResult,
    percentiles=DEFAULT_PERCENTILES,
    metrics=METRICS,
    goodput_ms: dict | None = None,
    cdf: dict | None = None,
) -> dict:
    """vLLM's result figures of one run (see the module's docstring); `cdf`, if given, receives
    CDF_POINTS quantiles of each latency in ms (from the same sort as the percentiles)."""
    status = result.column("status")
    finished = status == "finished"
    arrival = result.column("arrival_s")
    values, _ = result.token_times
    ends = result.column("finish_s")[finished]
    last = max(float(values.max()) if len(values) else -math.inf, float(ends.max()) if len(ends) else -math.inf)
    start = float(arrival.min()) if len(arrival) else 0.0
    duration = last - start if last > start else 0.0
    latencies = request_latencies(result)
    total_input = int(result.column("prompt_tokens")[finished].sum())
    total_output = int(latencies["counts"].sum())
    per_s = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)
    figures = {
        "duration": duration,
        "completed": int(finished.sum()),
        "failed": int((~finished).sum()),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": per_s(int(finished.sum())),
        "request_goodput": per_s(int(good_requests(latencies, goodput_ms).sum())) if goodput_ms else None,
        "output_throughput": per_s(total_output),
        "input_throughput": per_s(total_input),
        "total_token_throughput": per_s(total_input + total_output),
        **peaks(result, start, finished),
    }
    if goodput_ms:
        figures["goodput_fraction"] = float(good_requests(latencies, goodput_ms).sum() / max(len(status), 1))
    for name in METRICS:
        if name not in metrics and cdf is None:
            continue
        ms = np.sort(latencies[name] * 1000)  # once: percentiles and CDF read the sorted values
        if cdf is not None and len(ms):
            cdf[name] = np.interp(
                np.linspace(0, len(ms) - 1, CDF_POINTS), np.arange(len(ms)), ms
            )  # quantiles of sorted values
        if name not in metrics:
            continue
        figures[f"mean_{name}_ms"] = float(ms.mean()) if len(ms) else 0.0
        figures[f"median_{name}_ms"] = float(np.median(ms)) if len(ms) else 0.0
        figures[f"std_{name}_ms"] = float(ms.std()) if len(ms) else 0.0
        for p in percentiles:
            figures[f"p{percentile_word(p)}_{name}_ms"] = float(np.percentile(ms, p)) if len(ms) else 0.0
    return figures


def peaks(result: RunResult, start: float, finished: np.ndarray) -> dict:
    """vLLM's peak figures: the most output tokens in one second, and the most requests in
    flight in one second (a request counts in every second bucket its life touches)."""
    values, offsets = result.token_times
    if not len(values):
        return {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}
    tokens = np.bincount(np.floor(values - start).astype(np.int64))
    sent = result.column("arrival_s")[finished] - start
    ended = result.column("finish_s")[finished] - start
    first, last = np.floor(sent).astype(np.int64), np.floor(ended).astype(np.int64)
    change = np.zeros(int(last.max(initial=0)) + 2, dtype=np.int64)
    np.add.at(change, first, 1)
    np.add.at(change, last + 1, -1)
    return {
        "max_output_tokens_per_s": float(tokens.max()),
        "max_concurrent_requests": int(np.cumsum(change).max(initial=0)),
    }
