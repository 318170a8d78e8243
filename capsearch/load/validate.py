"""Validation: real measurements replayed in simulation, sim against real, row by row.

Each measurement is a closed loop (profiles/measurements.py): capsim runs the same deployment
(the engine's own batching policy and `serve` defaults on that GPU, its kernel-database step
times plus its host time) under the same client (traces/client.py) and compares mean TTFT and
TPOT. Errors are predicted / measured - 1, signed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from capsim.capsearch.load.metrics import request_latencies
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.host_time import HostTime
from capsim.profiles.measurements import Measurement
from capsim.sim import POLICIES, SimulationError, SystemSpec, simulate
from capsim.sim.policies import ENGINE_SCHEDULERS
from capsim.traces.client import ClosedLoop

ENGINE_POLICY = {"vllm": "vllm_v1", **ENGINE_SCHEDULERS}  # the batching each engine runs when served as is
FRONTEND_GRID = (
    0.0,
    1e-3,
    2e-3,
    4e-3,
    6e-3,
    8e-3,
    10e-3,
    12e-3,
    16e-3,
    20e-3,
    24e-3,
    32e-3,
    48e-3,
)  # seconds a request in the API server
GROUP_KEYS = ("engine", "model", "hardware", "quant", "tp", "concurrency_bucket")


@dataclass
class Replay:
    measurement: Measurement
    ttft_ms: float | None = None  # simulated means; None where the replay failed
    tpot_ms: float | None = None
    why: str = ""  # why there is no simulated figure
    scheduler: str = ""
    latency_source: str = ""

    @property
    def ttft_error(self) -> float | None:
        return None if self.ttft_ms is None else self.ttft_ms / self.measurement.ttft_ms - 1

    @property
    def tpot_error(self) -> float | None:
        return None if self.tpot_ms is None else self.tpot_ms / self.measurement.tpot_ms - 1

    def row(self) -> dict:
        m = self.measurement
        return {
            "id": m.id,
            "engine": m.engine,
            "engine_version": m.engine_version,
            "model": m.model,
            "hardware": m.hardware,
            "quant": m.quant,
            "kv_quant": m.kv_quant,
            "tp": m.tp,
            "ep": m.ep,
            "dp": m.dp,
            "isl": m.isl,
            "osl": m.osl,
            "concurrency": m.concurrency,
            "concurrency_bucket": m.concurrency_bucket,
            "measured_ttft_ms": m.ttft_ms,
            "measured_tpot_ms": m.tpot_ms,
            "simulated_ttft_ms": self.ttft_ms,
            "simulated_tpot_ms": self.tpot_ms,
            "ttft_error": self.ttft_error,
            "tpot_error": self.tpot_error,
            "scheduler": self.scheduler,
            "latency_source": self.latency_source,
            "why_not": self.why,
            "client": m.client,
            "source": m.source,
        }


def client_of(m: Measurement, dataset_entries: int | None = None) -> ClosedLoop:
    """The client that measured the run; `dataset_entries` makes aiperf's prompts repeat (its default is 100)."""
    if m.client == "inferencemax":
        return ClosedLoop.inferencemax(m.concurrency)
    return ClosedLoop.aiperf(m.concurrency, dataset_entries)


def engine_system(m: Measurement, host_time: bool = True) -> SystemSpec:
    """The deployment a measurement ran: its engine's policy with that engine's serve defaults, or
    the launch flags of the collection that ran it where they are known."""
    policy = ENGINE_POLICY[m.engine]
    hardware = get_hardware(m.hardware)
    limits = POLICIES[policy].serve_defaults(hardware.memory_bytes, hardware.name)
    options = {}
    if m.client == "inferencemax":
        # vllm serve --max-num-seqs $CONC --max-num-batched-tokens 8192 --async-scheduling; its TensorRT-LLM launch is
        # not
        # published with the data: the smallest max_num_tokens that holds a whole prompt beside the decodes.
        limits = {
            "max_batch_size": m.concurrency,
            "prefix_caching": False,
            "token_budget": 8192 if m.engine != "trtllm" else max(limits["token_budget"], m.isl + m.concurrency),
        }
        options["async_scheduling"] = m.engine == "vllm"
    return SystemSpec(
        model=m.model,
        hardware=m.hardware,
        tp=m.tp,
        ep=m.ep,
        dp_attention=m.dp,
        scheduler=policy,
        engine=m.engine,
        host_time=host_time,
        max_model_len=max(m.isl + m.osl, 2),
        quant=m.quant,
        kv_cache_dtype=m.kv_quant,
        **limits,
        **options,
    )


def replay(m: Measurement, host_time: bool | HostTime = True, client: ClosedLoop | None = None) -> Replay:
    """The measurement's run, simulated: with the shipped host time (True), none (False), or the
    given one (a fit's trial values)."""
    client = client or client_of(m)
    out = Replay(m, scheduler=ENGINE_POLICY.get(m.engine, ""))
    trial = host_time if isinstance(host_time, HostTime) else None
    try:
        system = engine_system(m, host_time is True)
        steps = (
            None
            if trial is None
            else system.latency_model().predictor.with_host_time(trial.step_s, trial.per_sequence_s)
        )
        result = simulate(
            system,
            client.workload(m.isl, m.osl),
            batch_seconds=steps,
            max_concurrency=m.concurrency,
            frontend_s=None if trial is None else trial.frontend_s,
        )
    except (SimulationError, ProfileError, ValueError) as error:
        out.why = str(error)
        return out
    out.latency_source = result.info["latency_source_words"] + (" + trial host time" if trial else "")
    measured = np.zeros(len(result.column("status")), dtype=bool)
    measured[client.measured()] = True
    finished = result.finished()
    latencies = request_latencies(result)
    keep = measured[finished]
    if not keep.any():
        out.why = "no measured request finished"
        return out
    out.ttft_ms = float(latencies["ttft"][keep].mean() * 1e3)
    out.tpot_ms = float(latencies["tpot"][keep].mean() * 1e3)
    return out


def replay_all(
    measurements: Iterable[Measurement],
    host_time: bool | HostTime = True,
    progress: Callable[[int], None] | None = None,
    dataset_entries: int | None = None,
) -> list[Replay]:
    replays = []
    for i, m in enumerate(measurements, 1):
        replays.append(replay(m, host_time, client_of(m, dataset_entries)))
        if progress:
            progress(i)
    return replays


def summary(replays: list[Replay], keys: tuple[str, ...] = ("engine",)) -> list[dict]:
    """Per group: rows, signed median and mean |error| of TTFT and TPOT (in percent)."""
    groups: dict[tuple, list[Replay]] = {}
    for r in replays:
        if r.ttft_ms is not None:
            row = r.row()
            groups.setdefault(tuple(row[k] for k in keys), []).append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ttft = np.array([r.ttft_error for r in members]) * 100
        tpot = np.array([r.tpot_error for r in members]) * 100
        out.append(
            {
                **dict(zip(keys, key)),
                "rows": len(members),
                "ttft_median_error_pct": float(np.median(ttft)),
                "ttft_mean_abs_error_pct": float(np.abs(ttft).mean()),
                "ttft_median_abs_error_pct": float(np.median(np.abs(ttft))),
                "tpot_median_error_pct": float(np.median(tpot)),
                "tpot_mean_abs_error_pct": float(np.abs(tpot).mean()),
                "tpot_median_abs_error_pct": float(np.median(np.abs(tpot))),
            }
        )
    return out


def fit_host_time(engine: str, measurements: list[Measurement], rounds: int = 2) -> tuple[HostTime, list[Replay]]:
    """An engine's host time from real runs of it. The step and sequence terms: least squares on
    TPOT (relative errors, non-negative). The frontend term: the one of FRONTEND_GRID whose
    replays have the smallest median |log(simulated / measured TTFT)|, a serial frontend being
    no linear term. Each round re-simulates with the terms so far. Returns the terms and the
    replays with them."""
    from scipy.optimize import nnls  # at fit time only

    rows = [m for m in measurements if m.engine == engine]
    if len(rows) < 3:
        raise ProfileError(f"fitting {engine}'s host time needs at least 3 of its runs, got {len(rows)}")
    step = per_sequence = frontend = 0.0
    for _ in range(rounds):
        replays = [
            r for r in replay_all(rows, HostTime(engine, step, per_sequence, frontend, "")) if r.ttft_ms is not None
        ]
        real = np.array([r.measurement.tpot_ms for r in replays]) / 1e3
        missing = real - np.array([r.tpot_ms for r in replays]) / 1e3
        users = np.array([r.measurement.concurrency for r in replays], dtype=np.float64)
        # What is still missing, as a step and a sequence term on top of those so far; solved for the
        # totals so that they stay non-negative.
        design = np.column_stack([np.ones_like(users), users]) / real[:, None]
        target = (missing + step + per_sequence * users) / real
        (step, per_sequence), _ = nnls(design, target)
        scores = {}
        for candidate in FRONTEND_GRID:
            trial = [
                r
                for r in replay_all(rows, HostTime(engine, step, per_sequence, candidate, ""))
                if r.ttft_ms is not None
            ]
            scores[candidate] = float(np.median(np.abs(np.log([r.ttft_ms / r.measurement.ttft_ms for r in trial]))))
        frontend = min(scores, key=scores.get)
    versions = sorted({m.engine_version or "unstated" for m in rows})
    models = sorted({f"{m.model} on {m.hardware}" for m in rows})
    provenance = f"fitted on {len(rows)} real runs of {engine} {', '.join(versions)} ({', '.join(models)})"
    final = HostTime(engine, float(step), float(per_sequence), float(frontend), provenance)
    return final, replay_all(rows, final)
