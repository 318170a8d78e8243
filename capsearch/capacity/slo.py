"""SLOs, scored after the fact from a RunResult (simulated or real alike).

Requests that never finished (time limit, early stop, rejection, error) are violations, never
missing data: a token that was never produced counts as an infinitely long gap, a first token
that never came as an infinite TTFT, a deadline never met as missed.

- tbt_ttft: P(x) of TBT over all tokens <= a, and P(y) of TTFT (or of scheduling delay, as
  Sarathi-Serve scores it: P99 TBT plus P50 scheduling delay <= 2 s) <= b.
- ttft_tpot: P(y) TTFT <= b and P(z) of per-request TPOT <= c.
- goodput: DistServe's attainment on vLLM's goodput limits: >= X% of the requests sent finish
  within every given limit of TTFT, TPOT and E2E latency (a one-token request has TPOT 0).
- deadline: the fluidity index of Etalon/Metron. The first token is due at arrival + predicted
  prefill time + ttft_slack; each later token `tbt` after the previous deadline. A token that
  comes early banks the slack (the next deadline stays on the schedule, not on the token); a late
  token misses every deadline that passed before it came, and the schedule restarts from it.
  A request's miss rate is missed deadlines / deadlines, with Etalon's denominator: on-time tokens
  plus missed deadlines (`denominator="deadlines"`). capsim's stricter variant divides by output
  tokens (`denominator="tokens"`), so a token that misses two deadlines weighs twice. Pass when
  the P(q) miss rate <= m.

Percentiles are accepted as the peers write them: Etalon and Sarathi-Serve pass fractions
(0.99), capsim and vLLM percentages (99). A value in (0, 1] is a fraction (1 is 100%), one in
(1, 100] a percentage; both are stored, and echoed, as percentages (P99). Below P50 is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from capsim.sim.early_stop import EarlyStop
from capsim.sim.result import RunResult


class SLOError(ValueError):
    """An SLO that cannot be scored as given; the message says what to fix."""


def as_percentile(value: float, name: str = "percentile", low_ok: bool = False) -> float:
    """A percentile as a percentage: fractions in (0, 1] are scaled by 100 (1 is 100%), (1, 100]
    kept. One below 50 is refused with both readings: a limit on the fastest requests is a slip."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SLOError(f"{name} must be a number, got {value!r}")
    if not 0 < value <= 100:
        raise SLOError(f"{name} must be a fraction in (0, 1] or a percentage in (1, 100], got {value}")
    percent = round(value * 100, 10) if value <= 1 else float(value)
    if percent < 50 and not low_ok:  # a share of requests (goodput's attainment) may be low; a percentile not
        readings = (
            f"P{percent:g} read as a fraction, P{value:g} as a percentage"
            if value <= 1
            else f"P{percent:g} read as a percentage (above 1, so no fraction)"
        )
        raise SLOError(
            f"{name} {value:g} is {readings}: below the median, a limit that holds only the fastest requests; "
            "give a tail as 0.99 or 99"
        )
    return percent


def _check(slo, seconds: tuple[str, ...] = (), percentiles: tuple[str, ...] = (), shares: tuple[str, ...] = ()) -> None:
    """Limits in seconds must be positive; percentiles become percentages, and so do shares of
    requests (which, unlike a latency's percentile, may lie below 50%); errors name the field."""
    for field_name in seconds:
        value = getattr(slo, field_name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise SLOError(f"{field_name} must be a positive number of seconds, got {value!r}")
    for field_name in (*percentiles, *shares):
        value = as_percentile(getattr(slo, field_name), field_name.replace("_", " "), low_ok=field_name in shares)
        object.__setattr__(slo, field_name, value)


def _percentile(values: np.ndarray, p: float) -> float:
    """The P(p) of values, infinities included (NaN-free); inf when most are infinite."""
    if not len(values):
        return 0.0
    return float(np.percentile(values, p, method="higher"))


class SLO:
    """What every SLO answers; each kind below says what it limits. `prefill_seconds` (prompt token
    counts -> the predicted time to prefill each alone) is where a deadline SLO's first deadline
    starts; the other kinds need no prediction and take none."""

    kind = "slo"
    tbt_limit: float | None = None  # a limit on every token gap, where the SLO has one

    def early_stop(self, num_requests: int, total_output_tokens: int) -> EarlyStop | None:
        """Thresholds past which the SLO is certain to fail (lower bounds on its violations); None:
        no count seen while the trial runs can decide it."""
        return None

    def clause_lost_by(self, part: EarlyStop) -> str:
        """The clause a part of this SLO's early-stop rule decides (the part that cut a trial): here
        the first, the waiting clause of the kinds with a rule."""
        return self.clauses[0]

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        raise NotImplementedError

    def figures(self, result: RunResult, prefill_seconds) -> dict:
        """Figures of the capacity's trial that belong to this SLO, besides the latency percentiles."""
        return {}

    def observable(self) -> SLO:
        """The SLO as a client scores it, from token arrival times alone."""
        return self


def _late_allowed(share: float, count: int) -> int:
    """Violations a clause that `share` of `count` must meet can take: one more and it is lost."""
    return int((1 - share) * count)


@dataclass(frozen=True)
class TbtTtft(SLO):
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

    def waiting_limit(self) -> tuple[float, float] | None:
        """(seconds, share of requests): the clause that limits how long requests wait."""
        return self.ttft, self.ttft_percentile / 100

    @property
    def tbt_limit(self) -> float:
        return self.tbt

    def early_stop(self, num_requests: int, total_output_tokens: int) -> EarlyStop:
        return EarlyStop(
            max_tbt=self.tbt,
            max_tbt_violations=_late_allowed(self.tbt_percentile / 100, total_output_tokens),
            max_wait=self.ttft,
            max_wait_violations=_late_allowed(self.ttft_percentile / 100, num_requests),
        )

    def clause_lost_by(self, part: EarlyStop) -> str:
        return self.clauses[0] if part.max_tbt is not None else self.clauses[1]

    def observable(self) -> TbtTtft:
        """A client sees no scheduling delay: the same limit on TTFT, which is longer."""
        return replace(self, ttft_metric="ttft") if self.ttft_metric == "scheduling_delay" else self

    @property
    def name(self) -> str:
        first = "sched" if self.ttft_metric == "scheduling_delay" else "TTFT"
        return f"P{self.tbt_percentile:g} TBT<={self.tbt:g}s, P{self.ttft_percentile:g} {first}<={self.ttft:g}s"

    @property
    def clauses(self) -> list[str]:
        first = "sched delay" if self.ttft_metric == "scheduling_delay" else "TTFT"
        return [
            f"P{self.tbt_percentile:g} TBT <= {self.tbt:g} s",
            f"P{self.ttft_percentile:g} {first} <= {self.ttft:g} s",
        ]

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        tbt = _percentile(tbt_with_missing(result), self.tbt_percentile)
        first = request_metric(result, self.ttft_metric)
        ttft = _percentile(first, self.ttft_percentile)
        first = "sched delay" if self.ttft_metric == "scheduling_delay" else "TTFT"
        labels = (f"P{self.tbt_percentile:g} TBT {tbt:.3g} s", f"P{self.ttft_percentile:g} {first} {ttft:.3g} s")
        failed = [c for c, ok in zip(labels, (tbt <= self.tbt, ttft <= self.ttft)) if not ok]
        return {"passed": not failed, "tbt": tbt, self.ttft_metric: ttft, "failed_clauses": failed}


@dataclass(frozen=True)
class TtftTpot(SLO):
    ttft: float = 2.0
    ttft_percentile: float = 99
    tpot: float = 0.1
    tpot_percentile: float = 99
    kind = "ttft_tpot"

    def __post_init__(self):
        _check(self, seconds=("ttft", "tpot"), percentiles=("ttft_percentile", "tpot_percentile"))

    def waiting_limit(self) -> tuple[float, float] | None:
        return self.ttft, self.ttft_percentile / 100

    def early_stop(self, num_requests: int, total_output_tokens: int) -> EarlyStop:
        return EarlyStop(
            max_wait=self.ttft, max_wait_violations=_late_allowed(self.ttft_percentile / 100, num_requests)
        )

    @property
    def name(self) -> str:
        return f"P{self.ttft_percentile:g} TTFT<={self.ttft:g}s, P{self.tpot_percentile:g} TPOT<={self.tpot:g}s"

    @property
    def clauses(self) -> list[str]:
        return [
            f"P{self.ttft_percentile:g} TTFT <= {self.ttft:g} s",
            f"P{self.tpot_percentile:g} TPOT <= {self.tpot:g} s",
        ]

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        ttft = _percentile(request_metric(result, "ttft"), self.ttft_percentile)
        tpot = _percentile(request_metric(result, "tpot"), self.tpot_percentile)
        labels = (f"P{self.ttft_percentile:g} TTFT {ttft:.3g} s", f"P{self.tpot_percentile:g} TPOT {tpot:.3g} s")
        failed = [c for c, ok in zip(labels, (ttft <= self.ttft, tpot <= self.tpot)) if not ok]
        return {"passed": not failed, "ttft": ttft, "tpot": tpot, "failed_clauses": failed}


DENOMINATORS = ("deadlines", "tokens")


@dataclass(frozen=True)
class Deadline(SLO):
    tbt: float = 0.1
    ttft_slack: float = 0.5
    miss_rate: float = 0.1
    miss_rate_percentile: float = 99
    denominator: str = "deadlines"  # Etalon's: on-time tokens + missed deadlines; "tokens": output tokens
    kind = "deadline"

    def __post_init__(self):
        _check(self, seconds=("tbt",), percentiles=("miss_rate_percentile",))
        if (
            isinstance(self.ttft_slack, bool)
            or not isinstance(self.ttft_slack, (int, float))
            or not 0 <= self.ttft_slack < float("inf")
        ):
            raise SLOError(f"ttft slack must be zero or more seconds, got {self.ttft_slack!r}")
        if (
            isinstance(self.miss_rate, bool)
            or not isinstance(self.miss_rate, (int, float))
            or not 0 <= self.miss_rate < 1
        ):
            raise SLOError(f"deadline miss rate must be in [0, 1), got {self.miss_rate!r}")
        if self.denominator not in DENOMINATORS:
            raise SLOError(f"deadline denominator must be {' or '.join(DENOMINATORS)}, got {self.denominator!r}")

    def waiting_limit(self) -> tuple[float, float] | None:
        return None  # a late first token shifts the later deadlines: no one clause bounds the wait

    @property
    def tbt_limit(self) -> float:
        return self.tbt

    def figures(self, result: RunResult, prefill_seconds) -> dict:
        """Etalon's other fluidity figures."""
        return fluidity_figures(result, self.tbt, self.ttft_slack, prefill_seconds)

    @property
    def name(self) -> str:
        per = " per token" if self.denominator == "tokens" else ""
        limits = f"TBT {self.tbt:g}s, slack {self.ttft_slack:g}s"
        return f"P{self.miss_rate_percentile:g} miss{per}<={self.miss_rate:g} ({limits})"

    @property
    def clauses(self) -> list[str]:
        per = "output tokens" if self.denominator == "tokens" else "deadlines"
        return [
            f"P{self.miss_rate_percentile:g} deadline miss rate (of {per}) <= {self.miss_rate:g}, "
            f"deadlines: prefill + {self.ttft_slack:g} s, then every {self.tbt:g} s"
        ]

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        rates = deadline_miss_rates(result, self.tbt, self.ttft_slack, prefill_seconds, self.denominator)
        rate = _percentile(rates, self.miss_rate_percentile)
        failed = [] if rate <= self.miss_rate else [f"P{self.miss_rate_percentile:g} miss rate {rate:.3g}"]
        return {"passed": not failed, "miss_rate": rate, "failed_clauses": failed}


@dataclass(frozen=True)
class Goodput(SLO):
    """DistServe's attainment, on vLLM's goodput limits: at least `attainment` percent of the
    requests sent finish within every limit given (TTFT, TPOT, E2E latency; seconds)."""

    ttft: float | None = None
    tpot: float | None = None
    e2el: float | None = None
    attainment: float = 90
    kind = "goodput"

    def __post_init__(self):
        limits = tuple(name for name in ("ttft", "tpot", "e2el") if getattr(self, name) is not None)
        if not limits:
            raise SLOError("a goodput SLO needs at least one limit: --goodput ttft:MS tpot:MS e2el:MS")
        _check(self, seconds=limits, shares=("attainment",))

    @property
    def limits(self) -> list[tuple[str, float]]:
        return [(name, getattr(self, name)) for name in ("ttft", "tpot", "e2el") if getattr(self, name) is not None]

    def waiting_limit(self) -> tuple[float, float] | None:
        limits = [v for v in (self.ttft, self.e2el) if v is not None]
        return (min(limits), self.attainment / 100) if limits else None

    def early_stop(self, num_requests: int, total_output_tokens: int) -> EarlyStop | None:
        # a request still waiting past the TTFT limit is not good
        if self.ttft is None:
            return None
        return EarlyStop(max_wait=self.ttft, max_wait_violations=_late_allowed(self.attainment / 100, num_requests))

    @property
    def name(self) -> str:
        return f">={self.attainment:g}% within " + ", ".join(f"{GOODPUT_WORDS[n]}<={v:g}s" for n, v in self.limits)

    @property
    def clauses(self) -> list[str]:
        return [
            f">= {self.attainment:g}% of requests with "
            + " and ".join(f"{GOODPUT_WORDS[n]} <= {v:g} s" for n, v in self.limits)
        ]

    def score(self, result: RunResult, prefill_seconds=None) -> dict:
        good = result.finished()
        for name, limit in self.limits:
            values = result.e2e() if name == "e2el" else request_metric(result, name)
            good = good & (np.nan_to_num(values, nan=np.inf) <= limit)
        attained = 100.0 * good.sum() / max(len(good), 1)
        failed = [] if attained >= self.attainment else [f"{attained:.3g}% within the limits"]
        return {"passed": not failed, "attainment": attained, "failed_clauses": failed}


GOODPUT_WORDS = {"ttft": "TTFT", "tpot": "TPOT", "e2el": "E2E"}
SLO_KINDS = {"tbt_ttft": TbtTtft, "ttft_tpot": TtftTpot, "deadline": Deadline, "goodput": Goodput}


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


def deadline_miss_rates(
    result: RunResult, tbt: float, ttft_slack: float, prefill_seconds=None, denominator: str = "deadlines"
) -> np.ndarray:
    """Per request, the fraction of its deadlines it missed; tokens never made are missed ones.

    denominator "deadlines" (Etalon): missed / (on-time tokens + missed deadlines);
    "tokens" (stricter): missed / output tokens, at most 1.
    """
    missed, on_time = deadline_counts(
        result, np.full(result.requests.num_rows, float(tbt)), first_deadlines(result, ttft_slack, prefill_seconds)
    )
    if denominator == "tokens":
        return np.minimum(1.0, missed / np.maximum(result.column("output_tokens"), 1))
    return miss_ratio(missed, on_time)


def first_deadlines(result: RunResult, ttft_slack: float, prefill_seconds=None) -> np.ndarray:
    """When each request's first token is due: arrival + predicted prefill time + slack."""
    arrival = result.column("arrival_s")
    prefill = prefill_seconds(result.column("prompt_tokens")) if prefill_seconds is not None else 0.0
    return arrival + prefill + ttft_slack


def miss_ratio(missed: np.ndarray, on_time: np.ndarray) -> np.ndarray:
    """Etalon's miss rate: missed deadlines / (on-time tokens + missed deadlines); 0 with none."""
    total = missed + on_time
    return np.divide(missed, total, out=np.zeros(len(total)), where=total > 0)


def deadline_counts(result: RunResult, tbt: np.ndarray, first_due: np.ndarray | None, skip_first: bool = False):
    """Per request: (missed deadlines, tokens on time), for a per-request `tbt`.

    Vectorized over all tokens. Measure token j (0-based) against the ideal cadence:
    e_j = t_j - j * tbt. The schedule restarts at every late token, so the deadline of token j is
    d_j = j * tbt + D_j with D_j = max(first deadline, e_0 .. e_{j-1}) (an on-time token never
    raises the maximum, a late one sets it); token j is late when e_j > D_j and then misses
    floor((e_j - D_j) / tbt) + 1 deadlines. Tokens a request never made are missed deadlines.
    With skip_first (Etalon's per-request deadline search), the first token sets the schedule
    and is not a deadline itself.
    """
    output = result.column("output_tokens")
    values, offsets = result.token_times
    counts = np.diff(offsets)
    n = len(counts)
    owner = np.repeat(np.arange(n), counts)
    position = np.arange(len(values)) - offsets[:-1][owner]
    step = tbt[owner]
    e = values - position * step
    if skip_first:  # the first token's own time starts the schedule
        first_due = np.full(n, -np.inf)
        first_due[counts > 0] = e[offsets[:-1][counts > 0]]
    # A segmented running maximum: lift each request's values above every earlier request's.
    finite_due = first_due[np.isfinite(first_due)]
    lift = 2 * (np.abs(e).max(initial=0) + np.abs(finite_due).max(initial=0)) + 1
    running = np.maximum.accumulate(e + owner * lift) - owner * lift
    before = np.empty_like(running)
    before[1:] = running[:-1]
    before[offsets[:-1][counts > 0]] = -np.inf
    schedule = np.maximum(before, first_due[owner])
    late = e > schedule
    missed_each = np.where(late, np.floor((e - schedule) / step) + 1, 0)
    counted = np.ones(len(values), dtype=bool)
    if skip_first:
        counted[offsets[:-1][counts > 0]] = False
    missed = np.bincount(owner, weights=missed_each, minlength=n) + np.maximum(output - counts, 0)
    on_time = np.bincount(owner, weights=(~late & counted).astype(float), minlength=n)
    return missed, on_time


def fluidity_figures(
    result: RunResult,
    tbt: float,
    ttft_slack: float,
    prefill_seconds=None,
    target_miss_rate: float = 0.1,
    quantile: float = 99,
) -> dict:
    """Etalon's other fluidity figures, over finished requests as Etalon scores them:
    the service-level miss rate (all missed / all deadlines), the per-request minimum TBT
    deadline that keeps its miss rate <= target (first token ignored) at P99, and the
    throughputs Etalon derives: 1 / that deadline, 1 / P99 TBT, 1 / mean TPOT (tokens/s a request)."""
    done = result.only(result.finished())
    if not done.requests.num_rows:
        return {}
    missed, on_time = deadline_counts(
        done, np.full(done.requests.num_rows, float(tbt)), first_deadlines(done, ttft_slack, prefill_seconds)
    )
    service = float(missed.sum() / max(missed.sum() + on_time.sum(), 1))
    minimum = min_tbt_deadlines(done, target_miss_rate)
    p_deadline = _percentile(minimum, quantile)
    tbt_values = done.tbt()
    p_tbt = float(np.percentile(tbt_values, quantile)) if len(tbt_values) else 0.0
    tpot = done.tpot()
    mean_tpot = float(np.nanmean(tpot)) if np.isfinite(tpot).any() else 0.0
    return {
        "service_miss_rate": service,
        f"p{quantile:g}_min_tbt_deadline_s": p_deadline,
        "deadline_based_throughput": 1 / p_deadline if p_deadline > 0 else None,
        "tbt_based_throughput": 1 / p_tbt if p_tbt > 0 else None,
        "tpot_based_throughput": 1 / mean_tpot if mean_tpot > 0 else None,
    }


def min_tbt_deadlines(result: RunResult, target_miss_rate: float, resolution: float = 1e-4) -> np.ndarray:
    """Per request, the smallest TBT deadline whose miss rate (first token ignored) is <= the
    target: a bisection run for all requests at once, to `resolution` seconds."""
    counts = np.diff(result.token_times[1])
    gaps = result.tbt()  # request by request, count - 1 gaps each
    high = np.zeros(len(counts))
    np.maximum.at(high, np.repeat(np.arange(len(counts)), np.maximum(counts - 1, 0)), gaps)
    high = high + resolution  # at the longest gap no token is late
    low = np.zeros(len(counts))
    for _ in range(int(np.ceil(np.log2(high.max(initial=resolution) / resolution))) + 1):
        middle = (low + high) / 2
        meets = miss_ratio(*deadline_counts(result, middle, None, skip_first=True)) <= target_miss_rate
        high = np.where(meets, middle, high)
        low = np.where(meets, low, middle)
    return np.where(counts >= 2, high, 0.0)
