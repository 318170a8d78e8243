"""SLOs, scored after the fact from a RunResult (simulated or real alike).

Requests that never finished (time limit, early stop, rejection, error) are violations, never
missing data: a token that was never produced counts as an infinitely long gap, a first token
that never came as an infinite TTFT, a deadline never met as missed.

- tbt_ttft: P(x) of TBT over all tokens <= a, and P(y) of TTFT (or of scheduling delay, as
  Sarathi-Serve scores it: P99 TBT plus P50 scheduling delay <= 2 s) <= b.
- ttft_tpot: P(y) TTFT <= b and P(z) of per-request TPOT <= c.
- deadline: the fluidity index of Etalon/Metron. The first token is due at arrival + predicted
  prefill time + ttft_slack; each later token `tbt` after the previous deadline. A token that
  comes early banks the slack (the next deadline stays on the schedule, not on the token); a late
  token misses every deadline that passed before it came, and the schedule restarts from it.
  A request's miss rate is missed deadlines / deadlines; pass when the P(q) miss rate <= m.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from capsim.sim.result import RunResult


class SLOError(ValueError):
    """An SLO that cannot be scored as given; the message says what to fix."""


def _check(slo, seconds: tuple[str, ...] = (), percentiles: tuple[str, ...] = ()) -> None:
    """Limits in seconds must be positive, percentiles in (0, 100]; errors name the field."""
    for field_name in seconds:
        if not getattr(slo, field_name) > 0:
            raise SLOError(f"{field_name} must be a positive number of seconds, got {getattr(slo, field_name)}")
    for field_name in percentiles:
        if not 0 < getattr(slo, field_name) <= 100:
            raise SLOError(f"{field_name.replace('_', ' ')} must be a percentile in (0, 100], got {getattr(slo, field_name)}")


def _percentile(values: np.ndarray, p: float) -> float:
    """The P(p) of values, infinities included (NaN-free); inf when most are infinite."""
    if not len(values):
        return 0.0
    return float(np.percentile(values, p, method="higher"))


@dataclass(frozen=True)
class TbtTtft:
    tbt: float = 0.1
    tbt_percentile: float = 99
    ttft: float = 2.0
    ttft_percentile: float = 50
    ttft_metric: str = "scheduling_delay"  # or "ttft"
    kind = "tbt_ttft"

    def __post_init__(self):
        _check(self, seconds=("tbt", "ttft"), percentiles=("tbt_percentile", "ttft_percentile"))
        if self.ttft_metric not in ("ttft", "scheduling_delay"):
            raise SLOError(f"ttft_metric must be ttft or scheduling_delay, got {self.ttft_metric!r}")

    @property
    def name(self) -> str:
        """Short: the Sarathi-Serve second part (P50 scheduling delay <= 2 s) goes unsaid."""
        name = f"P{self.tbt_percentile:g} TBT<={self.tbt:g}s"
        if (self.ttft_percentile, self.ttft, self.ttft_metric) != (50, 2.0, "scheduling_delay"):
            first = "sched" if self.ttft_metric == "scheduling_delay" else "TTFT"
            name += f", P{self.ttft_percentile:g} {first}<={self.ttft:g}s"
        return name

    def score(self, result: RunResult) -> dict:
        tbt = _percentile(tbt_with_missing(result), self.tbt_percentile)
        first = request_metric(result, self.ttft_metric)
        ttft = _percentile(first, self.ttft_percentile)
        return {"passed": tbt <= self.tbt and ttft <= self.ttft, "tbt": tbt, self.ttft_metric: ttft}


@dataclass(frozen=True)
class TtftTpot:
    ttft: float = 2.0
    ttft_percentile: float = 99
    tpot: float = 0.1
    tpot_percentile: float = 99
    kind = "ttft_tpot"

    def __post_init__(self):
        _check(self, seconds=("ttft", "tpot"), percentiles=("ttft_percentile", "tpot_percentile"))

    @property
    def name(self) -> str:
        return f"P{self.ttft_percentile:g} TTFT<={self.ttft:g}s, P{self.tpot_percentile:g} TPOT<={self.tpot:g}s"

    def score(self, result: RunResult) -> dict:
        ttft = _percentile(request_metric(result, "ttft"), self.ttft_percentile)
        tpot = _percentile(request_metric(result, "tpot"), self.tpot_percentile)
        return {"passed": ttft <= self.ttft and tpot <= self.tpot, "ttft": ttft, "tpot": tpot}


@dataclass(frozen=True)
class Deadline:
    tbt: float = 0.1
    ttft_slack: float = 0.5
    miss_rate: float = 0.1
    miss_rate_percentile: float = 99
    kind = "deadline"

    def __post_init__(self):
        _check(self, seconds=("tbt",), percentiles=("miss_rate_percentile",))
        if self.ttft_slack < 0:
            raise SLOError(f"ttft slack must be zero or more seconds, got {self.ttft_slack}")
        if not 0 <= self.miss_rate < 1:
            raise SLOError(f"deadline miss rate must be in [0, 1), got {self.miss_rate}")

    @property
    def name(self) -> str:
        return f"P{self.miss_rate_percentile:g} miss<={self.miss_rate:g} (TBT {self.tbt:g}s, slack {self.ttft_slack:g}s)"

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        rates = deadline_miss_rates(result, self.tbt, self.ttft_slack, prefill_seconds)
        rate = _percentile(rates, self.miss_rate_percentile)
        return {"passed": rate <= self.miss_rate, "miss_rate": rate}


SLO_KINDS = {"tbt_ttft": TbtTtft, "ttft_tpot": TtftTpot, "deadline": Deadline}


def slo_from_dict(data: dict):
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in SLO_KINDS:
        raise SLOError(f"an SLO needs kind: one of {', '.join(SLO_KINDS)}; got {kind!r}")
    try:
        return SLO_KINDS[kind](**data)
    except TypeError as error:
        raise SLOError(f"{kind} SLO: {error}") from None


def slo_to_dict(slo) -> dict:
    return {"kind": slo.kind, **asdict(slo)}


# ---- metrics with violations filled in ---------------------------------------------------------


def tbt_with_missing(result: RunResult) -> np.ndarray:
    """Every TBT gap, plus an infinite gap for every token an unfinished request never produced."""
    gaps = result.tbt()
    missing = np.maximum(result.column("output_tokens") - np.maximum(np.diff(result.token_times[1]), 1), 0)
    missing = int(missing[~result.finished()].sum())
    return np.concatenate([gaps, np.full(missing, np.inf)]) if missing else gaps


def request_metric(result: RunResult, name: str) -> np.ndarray:
    """Per-request TTFT, scheduling delay or TPOT, infinite where the request did not finish."""
    values = {"ttft": result.ttft, "scheduling_delay": result.scheduling_delay, "tpot": result.tpot}[name]()
    if name == "tpot":
        values = np.where(np.isnan(values), 0.0, values)  # one-token requests have no TPOT to miss
    values = np.where(np.isnan(values), np.inf, values)
    if name != "scheduling_delay":
        values = np.where(result.finished(), values, np.inf)
    return values


def deadline_miss_rates(result: RunResult, tbt: float, ttft_slack: float, prefill_seconds=None) -> np.ndarray:
    """Per request, the fraction of its output tokens' deadlines it missed (unfinished: the rest).

    Vectorized over all tokens. Measure token j (0-based) against the ideal cadence:
    e_j = t_j - j * tbt. The schedule restarts at every late token, so the deadline of token j is
    d_j = j * tbt + D_j with D_j = max(first deadline, e_0 .. e_{j-1}) (an on-time token never
    raises the maximum, a late one sets it); token j is late when e_j > D_j and then misses
    floor((e_j - D_j) / tbt) + 1 deadlines.
    """
    arrival, prompt = result.column("arrival_s"), result.column("prompt_tokens")
    output = result.column("output_tokens")
    prefill = prefill_seconds(prompt) if prefill_seconds is not None else np.zeros(len(arrival))
    first_due = arrival + prefill + ttft_slack
    values, offsets = result.token_times
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(arrival)), counts)
    position = np.arange(len(values)) - offsets[:-1][owner]
    e = values - position * tbt
    # A segmented running maximum: lift each request's values above every earlier request's.
    lift = 2 * (np.abs(e).max(initial=0) + np.abs(first_due).max(initial=0)) + 1
    running = np.maximum.accumulate(e + owner * lift) - owner * lift
    before = np.empty_like(running)
    before[1:] = running[:-1]
    before[offsets[:-1][counts > 0]] = -np.inf
    schedule = np.maximum(before, first_due[owner])
    late = e > schedule
    missed = np.where(late, np.floor((e - schedule) / tbt) + 1, 0)
    per_request = np.bincount(owner, weights=missed, minlength=len(arrival)) + (output - counts)
    return np.minimum(1.0, per_request / output)
