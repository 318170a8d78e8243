"""simulate(): a workload replayed on a deployment (aggregated here; disaggregated in disagg_sim.py), the
replay itself in engine.py."""

from __future__ import annotations

import numpy as np

from capsim.sim.assemble import build_result
from capsim.sim.clock import Clock
from capsim.sim.decode_stretch import DecodeStretches, stretches_possible
from capsim.sim.early_stop import EarlyStop, EarlyStopMonitor
from capsim.sim.engine import CustomLatency, Replica, Run, alarm, arrivals, make_requests, stage_seconds
from capsim.sim.errors import SimulationError
from capsim.sim.result import BATCH_COLUMNS, RunResult
from capsim.sim.spec_decode import speculate
from capsim.sim.system import SystemSpec
from capsim.traces import Workload


def simulate(
    system: SystemSpec,
    workload: Workload,
    time_limit_s: float | None = None,
    batch_seconds=None,
    early_stop: EarlyStop | None = None,
    decode_stretches: bool = True,
    max_concurrency: int | None = None,
    frontend_s: float | None = None,
) -> RunResult:
    """Replay the workload (with arrival times) on the system; stop at the time limit if given,
    or once `early_stop` says the SLO can no longer be met.

    `max_concurrency` caps the requests in flight: a request due while the cap is reached is sent
    when one ends, and its arrival time is that send (vLLM's benchmark client). With every
    arrival at t = 0 (an infinite QPS) that is a closed loop of `max_concurrency` users.

    `batch_seconds(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs,
    decode_kv)` replaces the system's latency model, for what-if studies and hand-checked tests.
    `decode_stretches=False` runs every iteration as its own SimPy event: the reference that
    decode stretches and the clock's advance (Clock.advance) are tested against.
    `frontend_s` is each replica's API-server time a request (one at a time, see Frontend);
    default: the engine's host time (profiles/host_time.py), 0 without.
    """
    if not workload.has_arrivals:
        raise SimulationError("the workload has no arrival times: sample it at a QPS first")
    if time_limit_s is not None and not time_limit_s > 0:
        raise SimulationError(f"time limit must be positive seconds, got {time_limit_s}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise SimulationError(
            f"max concurrency must be a whole number of requests, at least 1, got {max_concurrency!r}"
        )
    if not isinstance(system, SystemSpec):  # a disaggregated deployment (DisaggSpec)
        from capsim.sim.disagg_sim import simulate_disagg

        return simulate_disagg(system, workload, time_limit_s, batch_seconds, early_stop, max_concurrency)
    unschedulable = system.unschedulable(workload.prompt_tokens)
    if unschedulable:
        raise SimulationError(unschedulable)
    latency_model = system.latency_model()
    if batch_seconds is None:
        batch_seconds = stage_seconds(latency_model, system)
    else:
        latency_model = CustomLatency(latency_model, batch_seconds)
    env = Clock(advancing=decode_stretches)
    requests = make_requests(workload)
    batch_seconds = speculate(system.spec_decoding, requests, workload, batch_seconds)
    run = Run(env, len(requests), max_concurrency)
    frontend_s = latency_model.frontend_s if frontend_s is None else frontend_s
    if not frontend_s >= 0:
        raise SimulationError(f"frontend time must be seconds >= 0, got {frontend_s}")
    replicas = [Replica(env, i, system, batch_seconds, run, frontend_s) for i in range(system.replicas)]
    engines = [e for r in replicas for e in r.engines]
    if early_stop is not None:
        run.monitor = EarlyStopMonitor(early_stop, [e.scheduler for e in engines], run.finish)
    env.process(arrivals(env, requests, replicas, system.router, run, len(engines)))
    if time_limit_s is not None:
        run.time_limit = 0.0 + time_limit_s  # the alarm's time on the clock
        env.process(alarm(env, time_limit_s, run))
    if decode_stretches and stretches_possible(system, batch_seconds):
        for engine in engines:
            engine.stretches = DecodeStretches(
                batch_seconds,
                run,
                alone=len(engines) == 1,
                # a replica's DP ranks take requests by their load: routing then reads engine state
                arrivals_blind=system.dp_attention == 1 and (len(replicas) == 1 or system.router == "round_robin"),
            )
    try:
        env.run(until=run.end)
    except RuntimeError as error:  # no events left before every request retired
        raise SimulationError(f"the simulation stalled with {run.remaining} requests left: {error}") from None
    stopped = run.monitor.stopped if run.monitor else None
    rows = np.frombuffer(run.log).reshape(-1, len(BATCH_COLUMNS))
    result = build_result(
        system, workload, requests, engines, rows, latency_model, env.now, time_limit_s, stopped, run.stretch_log
    )
    if max_concurrency is not None:
        result.info["max_concurrency"] = max_concurrency
    result.info["frontend_s"] = frontend_s
    return result
