"""Capacity search: the highest QPS that meets an SLO, by binary search on a QPS grid.

Every search tries QPS values of one geometric grid, q_k = (1 + granularity)^k, so searches
with different SLOs land on the same QPS values and share their cached trials: a sweep over SLO
values, or a rescoring of a finished one, is mostly cache reads.

The invariant: the highest QPS known to pass only ever rises and the lowest known to fail only
ever falls; every later trial lies strictly between them. So a passing QPS is never lost, even
where the latencies are not monotone in QPS. The search doubles the QPS while trials pass, halves
it while they fail (a confirmation moves by a smaller factor), then bisects the bracket, and stops
when the bracket is one grid step (the granularity) or after max_trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_QPS = 1e-3  # the search looks no lower: below it a deployment has no capacity for the SLO
JUDGE_TOLERANCE = 0.1  # a passing trial must be able to fail a deployment this much slower


@dataclass
class Capacity:
    labels: dict  # model, scheduler, trace, parallel: the names of the experiment
    slo: dict
    slo_name: str
    capacity_qps: float | None  # highest passing QPS; None when no QPS tried passed
    failing_qps: float | None  # lowest failing QPS; None when the search never saw a failure
    trials: list[dict] = field(default_factory=list)
    source: str = "simulated"  # or "confirmed" on a real engine
    latency_source: str = "analytic"
    system: dict = field(default_factory=dict)
    workload: dict = field(default_factory=dict)
    converged: bool = False  # a pass and a fail one grid step apart
    failed_clauses: list[str] = field(default_factory=list)  # the SLO clauses that failed at failing_qps
    at_capacity: dict = field(default_factory=dict)  # latency figures of the trial at the capacity
    conventions: dict = field(default_factory=dict)  # how the search was run: SLO defaults, scoring, time limit
    too_short: str | None = None  # why the trial at the capacity was too short to judge that load, if it was

    @property
    def bracket(self) -> str:
        """Where the capacity lies: [pass, fail), >= pass (no failure seen) or < fail (no pass seen)."""
        if self.capacity_qps is None:
            return f"< {self.failing_qps:.3g}" if self.failing_qps is not None else "no trial"
        if self.failing_qps is None:
            return f">= {self.capacity_qps:.3g}"
        return f"[{self.capacity_qps:.3g}, {self.failing_qps:.3g})"

    @property
    def outcome(self) -> str:
        """In words: converged, or what the search could not establish."""
        if self.capacity_qps is None:
            return (
                f"not found below {self.failing_qps:.3g} QPS"
                if self.failing_qps is not None
                else "not found: no trial ran"
            )
        if self.failing_qps is None:
            return f"above {self.capacity_qps:.3g} QPS: no failing QPS found"
        if self.too_short:
            return "not converged: trials too short to judge this load"
        return "converged" if self.converged else "not converged: trial limit reached"


def grid_qps(k: int, granularity: float) -> float:
    return round((1 + granularity) ** k, 6)


def grid_index(qps: float, granularity: float) -> int:
    return round(math.log(qps) / math.log(1 + granularity))


def find_capacity(
    trial,
    slo,
    start_qps: float,
    granularity: float = 0.025,
    max_trials: int = 20,
    expand: float = 2.0,
    gallop: bool = False,
    enough=None,
    known=(),
) -> tuple[float, float | None, list[dict]]:
    """Binary search with `trial(qps) -> (passed, details)`; returns (capacity, failing, trials),
    capacity None when no QPS passed, failing None when none failed.

    Until it holds a pass and a fail, it moves the QPS by the factor `expand` (doubling or
    halving; a confirmation on a real engine, starting at the prediction, moves by less). With
    `gallop`, a search that starts at an estimate moves by `expand` first and doubles the move
    each time it has to go on the same way: a good estimate is bracketed in two trials, a poor
    one costs a few more, never a walk of small steps. `enough(qps)`, where given, ends the search
    at the first pass it is true for (a planner that cannot rank a capacity that high).

    `known`: QPS values whose trials cost nothing (already run in full for another SLO, only
    scored again). Their highest pass and the lowest fail above it open the search's bracket
    (both are listed among its trials); from start_qps the search moves as it would without them,
    halving that bracket instead where a move would leave it."""
    if not start_qps > 0:
        raise ValueError(f"start QPS must be positive, got {start_qps}")
    if not 0 < granularity < 1:
        raise ValueError(f"granularity must be a fraction in (0, 1), got {granularity}")
    double = max(1, round(math.log(expand) / math.log(1 + granularity)))  # grid steps that multiply the QPS by `expand`
    floor_k = grid_index(MIN_QPS, granularity)
    passing, failing, trials = _bracket_of_known(trial, known, granularity)
    k = _first_inside(grid_index(start_qps, granularity), passing, failing, double, granularity)
    seen = set()  # the outcomes of this search's own trials: it moves by `double` until it has both
    while len(trials) < max_trials and k is not None:
        qps = grid_qps(k, granularity)
        passed, details = trial(qps)
        trials.append({"qps": qps, "passed": passed, **details})
        seen.add(passed)
        if passed:
            passing = k
            if enough is not None and enough(qps):
                break
        else:
            failing = k
            if passing is None and k <= floor_k:
                break
        if passing is not None and failing is not None and failing - passing <= 1:
            break
        if len(seen) == 2:
            k = (passing + failing) // 2
            continue
        k = k + double if passed else max(floor_k, k - double)  # expand while it passes, shrink while it fails
        double = double * 2 if gallop else double
        if passing is not None and failing is not None and not passing < k < failing:
            k = (passing + failing) // 2  # the move would leave the known bracket: halve it instead
    capacity = grid_qps(passing, granularity) if passing is not None else None
    return capacity, (grid_qps(failing, granularity) if failing is not None else None), trials


def _bracket_of_known(trial, known, granularity: float) -> tuple[int | None, int | None, list[dict]]:
    """The bracket the known trials give: their highest pass, and their lowest fail above it."""
    outcomes = {}
    for qps in known:
        k = grid_index(qps, granularity)
        if k not in outcomes and grid_qps(k, granularity) == qps:  # off the grid: not this search's trial
            outcomes[k] = trial(qps)
    passes = [k for k, (passed, _) in outcomes.items() if passed]
    passing = max(passes, default=None)
    above = passing if passing is not None else -math.inf  # grid index 0 (1 QPS) is a pass like any other
    failing = min((k for k, (passed, _) in outcomes.items() if not passed and k > above), default=None)
    kept = sorted(k for k in (passing, failing) if k is not None)
    trials = [{"qps": grid_qps(k, granularity), "passed": outcomes[k][0], **outcomes[k][1]} for k in kept]
    return passing, failing, trials


def _first_inside(k: int, passing: int | None, failing: int | None, double: int, granularity: float) -> int | None:
    """The first trial: at k if it lies strictly inside the bracket known so far, else a move of
    `double` steps beyond the known end it lies past, or the middle; None when nothing is left."""
    if passing is not None and failing is not None:
        return None if failing - passing <= 1 else (k if passing < k < failing else (passing + failing) // 2)
    if passing is not None and k <= passing:
        return passing + double
    if failing is not None and k >= failing:
        return max(grid_index(MIN_QPS, granularity), failing - double)
    return k


def too_short(slo, num_requests: int, qps: float) -> str | None:
    """Why a trial of num_requests that passed at qps cannot tell this deployment from one
    JUDGE_TOLERANCE slower, or None. Over capacity mu, request i of n queues about i (1/mu - 1/qps)
    more (plan.trial_bound); at mu = qps / (1 + tolerance) the request at the SLO's share p of the
    trial queues p n tolerance / qps. Where that stays under the SLO's waiting limit, the slower
    deployment would pass the same trial: the trial is too short to load the system."""
    clause = slo.waiting_limit()
    if clause is None or qps is None:
        return None
    limit, share = clause
    queued = share * num_requests * JUDGE_TOLERANCE / qps
    if queued >= limit:
        return None
    needed = math.ceil(limit * qps / (share * JUDGE_TOLERANCE))
    return (
        f"too short to judge {qps:.3g} QPS: its {num_requests} requests arrive in {num_requests / qps:.3g} s, so a "
        f"deployment "
        f"{JUDGE_TOLERANCE:.0%} slower would queue its P{share * 100:g} request only {queued:.2g} s, under the "
        f"{limit:g} s limit, "
        f"and pass too; give at least -n {needed}"
    )


def is_converged(capacity: float | None, failing: float | None, granularity: float) -> bool:
    """A pass and a fail at most one grid step apart."""
    if capacity is None or failing is None:
        return False
    return grid_index(failing, granularity) - grid_index(capacity, granularity) <= 1
