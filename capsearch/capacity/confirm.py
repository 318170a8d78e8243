"""Confirmation: a simulated capacity checked by a short bracketed binary search on a real engine.

The real search is the simulated one (search.find_capacity, on the same QPS grid) with a smaller
first move: it starts at the predicted capacity and steps by a factor (1 + step) up while trials
pass or down while they fail, until it holds a passing and a failing QPS; the trials left bisect
that bracket. Every trial runs the same workload as the simulation
(same seed and requests; fewer of them than a full search, with a time limit and the same
early-stop rule). At the measured point, the highest passing QPS, the real trial is compared
with a simulated trial at the same QPS: the TTFT and TBT percentiles, and their errors.

What a client can observe decides what is scored: the OpenAI API does not show when a request
was first scheduled, so a TBT/TTFT SLO that limits the scheduling delay (Sarathi-Serve's P50 <=
2 s) is scored with TTFT instead, an upper bound on it, in the simulation too, so that both sides
meet the same SLO.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from capsim.capsearch.capacity.jobs import SearchJob, run_job, score
from capsim.capsearch.capacity.search import Capacity, find_capacity
from capsim.capsearch.capacity.slo import slo_to_dict
from capsim.capsearch.capacity.trials import time_limit
from capsim.profiles.batch import FEATURES
from capsim.real.client import Endpoint, EndpointError
from capsim.real.loadgen import LoadOptions, dominant_failure, run_load
from capsim.sim import RunResult, SystemSpec, simulate
from capsim.traces import WorkloadSpec

PERCENTILES = (50, 90, 99)


@dataclass
class Confirmation:
    slo: dict
    slo_name: str
    predicted_qps: float
    measured_qps: float | None  # highest passing QPS on the real engine; None when none passed
    failing_qps: float | None  # lowest failing QPS on the real engine
    trials: list[dict] = field(default_factory=list)
    percentiles: list[dict] = field(default_factory=list)  # metric, percentile, predicted, measured, error
    compared_at_qps: float | None = None
    system: dict = field(default_factory=dict)
    workload: dict = field(default_factory=dict)
    endpoint: str = ""
    latency_source: str = ""
    notes: list[str] = field(default_factory=list)
    predicted_outcome: str = (
        "given (--predicted-qps)"  # or the simulated search's outcome: converged, or what it could not establish
    )
    engine_speed: dict | None = None  # the prediction again at the engine's measured step times (at_engine_speed)

    @property
    def capacity_error(self) -> float | None:
        """(predicted - measured) / measured, simulated against measured as every error capsim prints;
        None when nothing passed."""
        return (
            (self.predicted_qps - self.measured_qps) / self.measured_qps
            if self.measured_qps and self.predicted_qps
            else None
        )

    @property
    def capacity_error_at_engine_speed(self) -> float | None:
        """The capacity error once the engine's own step times are known: what the simulator (its
        scheduler and queueing) gets wrong, without the latency profile's drift on this machine."""
        predicted = (self.engine_speed or {}).get("predicted_qps")
        return (predicted - self.measured_qps) / self.measured_qps if self.measured_qps and predicted else None


def predict_capacity(
    system: SystemSpec,
    workload: WorkloadSpec,
    slo,
    start_qps: float = 1.0,
    granularity: float = 0.025,
    cache_dir: str | None = None,
) -> Capacity:
    """The simulated search of the observable SLO (cached trials, as `capsim search`): its capacity
    and whether it converged."""
    job = SearchJob(system, workload, (slo.observable(),), start_qps, (), granularity)
    return run_job(job, cache_dir)[0]


def confirm(
    system: SystemSpec,
    workload: WorkloadSpec,
    slo,
    endpoint: Endpoint,
    predicted_qps: float,
    vocab: int,
    step: float = 0.2,
    max_trials: int = 4,
    trial_time_limit_s: float | None = None,
    early_stop: bool = True,
    on_trial=None,
    granularity: float = 0.025,
    max_in_flight: int = 1024,
    predicted_outcome: str = "given (--predicted-qps)",
) -> tuple[Confirmation, dict[float, RunResult]]:
    """Run the real search; returns the confirmation and every real trial's result by QPS.
    `on_trial(qps, passed)` hears each trial as it ends; `predicted_outcome` says where the
    predicted capacity came from (the simulated search's outcome)."""
    given, slo = slo, slo.observable()
    requests = workload.requests()
    rule = slo.early_stop(len(requests), int(requests.output_tokens.sum())) if early_stop else None
    latency = system.latency_model()
    results: dict[float, RunResult] = {}

    def trial(qps: float):
        arrivals = workload.at_qps(qps)
        limit = trial_time_limit_s or time_limit(float(arrivals.arrival_s[-1]))
        result = run_load(
            endpoint,
            arrivals,
            LoadOptions(
                vocab=vocab, time_limit_s=limit, early_stop=rule, max_in_flight=max_in_flight, seed=workload.seed
            ),
        )
        results[qps] = result
        status = result.column("status")
        failure = dominant_failure(result)
        if failure and not (status == "finished").any():
            reason, times, failed = failure
            raise EndpointError(
                f"every request of the real trial at {qps:.3g} QPS failed ({failed} failed, the rest not sent); "
                f"the commonest error ({times} of them): {reason}"
            )
        details = score(slo, result, latency)
        passed = details.pop("passed")
        details |= {
            "finished": int((status == "finished").sum()),
            "failed": int((status == "failed").sum()),
            "stopped_early": result.info.get("stopped_early"),
            "in_flight_cap_hits": result.info["in_flight_cap_hits"],
        }
        on_trial and on_trial(qps, passed)
        return passed, details

    if not predicted_qps > 0:
        raise ValueError(f"the predicted capacity must be positive to confirm it, got {predicted_qps}")
    # The simulated search's QPS grid: the first real trial runs at exactly the predicted capacity.
    measured, failing, trials = find_capacity(trial, slo, predicted_qps, granularity, max_trials, expand=1 + step)
    point = measured or min(results)
    arrivals = workload.at_qps(point)
    simulated = simulate(system, arrivals, time_limit_s=time_limit(float(arrivals.arrival_s[-1])))
    notes = []
    if slo != given:
        notes.append("scheduling delay is not visible through the API: the SLO limits TTFT instead, on both sides")
    failures = [f for f in map(dominant_failure, results.values()) if f]
    if failures:
        reason, times, failed = max(failures, key=lambda f: f[1])
        notes.append(
            f"some real requests failed, counted as violations; the commonest error ({times} of {failed} in one "
            f"trial): {reason}"
        )
    starved = sum(r.info.get("one_read_requests", 0) for r in results.values())
    if starved:
        notes.append(
            f"{starved} real requests had all their tokens in one read (the load generator fell behind the engine: "
            f"their "
            "gaps read as 0, their TTFT late); give the load generator a core of its own"
        )
    if any(t.get("in_flight_cap_hits") for t in trials):
        notes.append("the in-flight cap delayed some requests: raise it if the engine can take more")
    confirmation = Confirmation(
        slo=slo_to_dict(slo),
        slo_name=slo.name,
        predicted_qps=predicted_qps,
        measured_qps=measured,
        failing_qps=failing,
        trials=trials,
        percentiles=compare_percentiles(simulated, results[point]),
        compared_at_qps=point,
        system=system.to_dict(),
        workload=workload.to_dict(),
        endpoint=endpoint.url,
        latency_source=latency.source_words,
        notes=notes,
        predicted_outcome=predicted_outcome,
    )
    return confirmation, results


def at_engine_speed(
    system: SystemSpec,
    workload: WorkloadSpec,
    slo,
    batch_log: Path,
    folder: Path,
    start_qps: float = 1.0,
    cache_dir: str | None = None,
) -> dict:
    """The simulated search again, with the profile scaled to the step times the engine ran at
    (profile_at_engine_speed): a capacity error split into the profile's drift on this machine now
    and what the simulator itself gets wrong."""
    speed = profile_at_engine_speed(system, batch_log, folder, "a confirmation")
    capacity = predict_capacity(
        dataclasses.replace(system, profile=str(folder / speed["profile"])),
        workload,
        slo,
        start_qps,
        cache_dir=cache_dir,
    )
    return speed | {"predicted_qps": capacity.capacity_qps, "outcome": capacity.outcome}


def profile_at_engine_speed(system: SystemSpec, batch_log: Path, folder: Path, during: str) -> dict:
    """The system's profile scaled to the step times the engine ran at, kept in `folder`.

    The engine's batch log holds every batch it ran and how long it took; the profile predicts
    the same batches. Their ratio (time-weighted) is the drift of the profile on this machine
    now: a busy host (the load generator and the HTTP frontend share its cores) or another CPU.
    The profile is scaled by kind (decode-only batches, batches with a prefill), as they drifted.
    Returns the batches, the ratio (all, and by kind) and the scaled profile's file name."""
    from capsim.profiles.store import resolve_profile

    log = pq.read_table(batch_log)
    features = np.column_stack([log.column(name).to_numpy() for name in FEATURES]).astype(np.float64)
    measured = log.column("end_s").to_numpy() - log.column("start_s").to_numpy()
    predicted = system.latency_model().predictor.predict_many(features)
    decode_only = features[:, FEATURES.index("prefill_seqs")] == 0
    ratios = {
        kind: float(measured[rows].sum() / predicted[rows].sum())
        for kind, rows in (
            ("all", np.ones(len(measured), bool)),
            ("decode only", decode_only),
            ("with prefill", ~decode_only),
        )
        if rows.any()
    }
    if "all" not in ratios:
        raise ValueError(f"{batch_log} holds no batch: the engine ran nothing")
    profile = resolve_profile(system.model_spec, system.hardware, system.tp, system.pp, system.profile, system.engine)
    path = profile.scaled(  # by kind: prefill steps and decode steps may drift apart (a busy frontend)
        ratios.get("decode only", ratios["all"]),
        f"the step times {system.engine} ran at during {during} ({len(measured)} batches)",
        with_prefill=ratios.get("with prefill", ratios["all"]),
    ).to_parquet(folder / "profile_at_engine_speed.parquet")
    return {
        "batches": len(measured),
        "step_time_ratio": ratios["all"],
        "step_time_ratio_by_kind": ratios,
        "profile": path.name,
    }


def compare_percentiles(simulated: RunResult, real: RunResult) -> list[dict]:
    """TTFT and TBT percentiles of both runs over the requests both finished, and the relative error."""
    both = simulated.finished() & real.finished()
    rows = []
    for metric in ("ttft", "tbt"):
        predicted_values = _metric(simulated, metric, both)
        measured_values = _metric(real, metric, both)
        for p in PERCENTILES:
            predicted = float(np.percentile(predicted_values, p)) if len(predicted_values) else math.nan
            measured = float(np.percentile(measured_values, p)) if len(measured_values) else math.nan
            error = (predicted - measured) / measured if measured > 0 else math.nan
            rows.append(
                {"metric": metric, "percentile": p, "predicted_s": predicted, "measured_s": measured, "error": error}
            )
    return rows


def _metric(result: RunResult, metric: str, keep: np.ndarray) -> np.ndarray:
    if metric == "ttft":
        return result.ttft()[keep]
    values, offsets = result.token_times
    gaps = [np.diff(values[offsets[i] : offsets[i + 1]]) for i in np.flatnonzero(keep)]
    return np.concatenate(gaps) if gaps else np.array([])
