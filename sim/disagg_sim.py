"""The SimPy replay of a disaggregated deployment (DisaggSpec).

A request goes to the prefill instance with the fewest prompt tokens still to compute (or each
in turn: DisaggSpec.prefill_router). That instance's scheduler (any policy) computes the prompt
and samples the first token, which is the request's TTFT. The request then queues at the decode
instance with the most free KV, counting what is already queued there (or the fewest requests,
or each in turn: decode_router); it is admitted once its prompt's KV blocks and a batch slot fit
(requests the decode instance preempted go first). Its KV then moves over the link, holding the
prefill instance's sending lanes and the decode instance's receiving lanes (SimPy resources, one
transfer at a time each, first come first served); at the end the prefill instance frees its
copy and the decode instance takes the request into its decode set at its next batch. A request
the decode instance preempts is recomputed there. Its second token's gap includes the queue and
the transfer.

Instances are numbered as replicas in the result: prefill 0..P-1, decode P..P+D-1 (with attention data
parallelism, each DP rank is one of them).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import simpy

from capsim.sim.assemble import build_result
from capsim.sim.clock import Clock
from capsim.sim.disagg import DisaggSpec, PoolLatencies
from capsim.sim.early_stop import EarlyStop, EarlyStopMonitor
from capsim.sim.engine import CustomLatency, Engine, Frontend, Run, alarm, arrivals, make_requests
from capsim.sim.errors import SimulationError
from capsim.sim.policies import POLICIES
from capsim.sim.request import REJECTED, Request
from capsim.sim.result import BATCH_COLUMNS, describe_values
from capsim.traces import Workload


class PrefillSide:
    """A prefill instance's scheduler: a request whose prompt is done leaves (handoff) instead of
    joining the decode set, and keeps its KV blocks until its transfer ends."""

    handoff = None  # callable(request, blocks held), set by Deployment
    queued_tokens = 0  # prompt tokens admitted or waiting, not yet computed: the router's measure

    def enter_decode(self, request: Request) -> None:
        held, request.blocks = request.blocks, 0
        self.handoff(request, held)

    def complete(self, batch, now):
        for _, _, chunk in batch.prefills:
            self.queued_tokens -= chunk
        return super().complete(batch, now)


class DecodeSide:
    """A decode instance's scheduler: requests arrive with their prompt's KV, queue until it fits,
    then join the decode set at the next batch."""

    def setup(self, on_room) -> None:
        self.queued: deque[Request] = deque()  # prefilled elsewhere, waiting for room here
        self.queued_blocks = 0
        self.transferring = 0  # admitted, KV on the way
        self.arrived: list[Request] = []  # KV here, joins the decode set at the next batch
        self.on_room = on_room

    @property
    def running(self) -> int:
        return super().running + self.transferring + len(self.arrived)

    @property
    def outstanding_here(self) -> int:
        """Requests queued, on the way or running here."""
        return self.outstanding + len(self.queued) + self.transferring + len(self.arrived)

    @property
    def kv_load(self) -> float:
        return (self.used_blocks() + self.queued_blocks) / self.config.num_blocks

    def admit_queued(self) -> list[Request]:
        """Admit queued requests, first come first served, while their blocks and a batch slot fit."""
        admitted = []
        while self.queued and not self.waiting and self.running < self.config.max_batch_size:
            request = self.queued[0]
            blocks = self.admission_blocks(request)
            if self.free_blocks - blocks < self.watermark_blocks:
                break
            self.queued.popleft()
            self.queued_blocks -= blocks
            self.free_blocks -= blocks
            request.blocks = blocks
            self.transferring += 1
            admitted.append(request)
        return admitted

    def schedule(self, now):
        for request in self.arrived:
            self.enter_decode(request)
        self.arrived.clear()
        return super().schedule(now)

    def complete(self, batch, now):
        finished = super().complete(batch, now)
        if self.queued:
            self.on_room()
        return finished


class Deployment:
    """The two pools, the link, and the moves between them."""

    def __init__(self, env: Clock, system: DisaggSpec, run: Run, prefill_seconds, decode_seconds):
        self.env, self.run = env, run
        self.link = system.link()
        self.prefill_router, self.decode_router = system.prefill_router, system.decode_router
        self.sent = self.handoffs = 0  # requests sent to the prefill pool, and handed to the decode pool
        p, d = system.prefill, system.decode
        prefill_class = type(f"Prefill{POLICIES[p.scheduler].__name__}", (PrefillSide, POLICIES[p.scheduler]), {})
        decode_class = type(f"Decode{POLICIES[d.scheduler].__name__}", (DecodeSide, POLICIES[d.scheduler]), {})
        # An instance with attention data parallelism is its DP ranks: each takes requests and holds
        # their KV on its own, stepped at the kernel database's balanced-rank price (sim/system.py).
        self.prefill = []
        for i in range(p.replicas * p.dp_attention):
            scheduler = prefill_class(p.scheduler_config())
            scheduler.handoff = lambda request, held, source=i: self.handoff(request, held, source)
            self.prefill.append(Engine(env, i, 0, scheduler, prefill_seconds, None, run))
        self.decode = []
        for j in range(d.replicas * d.dp_attention):
            scheduler = decode_class(d.scheduler_config())
            scheduler.setup(lambda target=j: self.admit(target))
            self.decode.append(Engine(env, len(self.prefill) + j, 0, scheduler, decode_seconds, None, run))
        decode_config = self.decode[0].scheduler.config
        self.decode_limit = decode_config.num_blocks - int(decode_config.watermark * decode_config.num_blocks)
        self.sending = [simpy.Resource(env, capacity=1) for _ in self.prefill]  # a prefill instance's lanes out
        self.receiving = [simpy.Resource(env, capacity=1) for _ in self.decode]  # a decode instance's lanes in
        self.handed_off: dict[
            int, tuple
        ] = {}  # request id -> (when its prefill ended, prefill instance, KV blocks held there)
        self.moves: list[tuple[float, float, float, float]] = []  # (handoff, admitted, transfer start, transfer end)
        self.frontend: Frontend | None = None

    @property
    def engines(self) -> list[Engine]:
        return self.prefill + self.decode

    def receive(self, request: Request) -> None:
        """A request the client sent: through the frontend (one API server in front of the prefill pool)."""
        if self.frontend is None:
            self.submit(request)
        else:
            self.frontend.receive(request)

    def submit(self, request: Request) -> None:
        decode = self.decode[0].scheduler
        if request.output_tokens > 1 and decode.blocks_for(request.total_tokens) > self.decode_limit:
            request.status = REJECTED  # its KV could never fit a decode instance
            self.run.retired(1)
            return
        if self.prefill_router == "round_robin":
            target = self.prefill[self.sent % len(self.prefill)]
            self.sent += 1
        else:
            target = min(self.prefill, key=lambda e: e.scheduler.queued_tokens)
        rejected = len(target.scheduler.rejected)
        target.submit(request)
        if len(target.scheduler.rejected) == rejected:
            target.scheduler.queued_tokens += request.prompt_tokens

    def handoff(self, request: Request, held: int, source: int) -> None:
        """The prompt is done on prefill instance `source`: queue for a decode instance."""
        if self.decode_router == "round_robin":
            j = self.handoffs % len(self.decode)
        elif self.decode_router == "least_outstanding":
            j = min(range(len(self.decode)), key=lambda j: self.decode[j].scheduler.outstanding_here)
        else:
            j = min(range(len(self.decode)), key=lambda j: self.decode[j].scheduler.kv_load)
        self.handoffs += 1
        decode = self.decode[j].scheduler
        decode.queued.append(request)
        decode.queued_blocks += decode.admission_blocks(request)
        self.handed_off[request.id] = (self.env.now, source, held)
        self.admit(j)

    def admit(self, target: int) -> None:
        for request in self.decode[target].scheduler.admit_queued():
            self.env.process(self.transfer(request, target))

    def transfer(self, request: Request, target: int):
        env = self.env
        handoff, source, held = self.handed_off.pop(request.id)
        admitted = env.now
        with self.sending[source].request() as out:
            yield out
            with self.receiving[target].request() as into:
                yield into
                start = env.now
                yield env.timeout(self.link.seconds(request.prefill_target))
        self.moves.append((handoff, admitted, start, env.now))
        prefill = self.prefill[source]
        prefill.scheduler.free_blocks += held
        prefill.wake_siblings()
        decode = self.decode[target]
        decode.scheduler.transferring -= 1
        decode.scheduler.arrived.append(request)
        request.replica = decode.replica
        decode.wake_siblings()

    def info(self, system: DisaggSpec, rows: np.ndarray, latency: PoolLatencies) -> dict:
        moves = np.array(self.moves).reshape(-1, 4)
        prefills = len(self.prefill)  # instances, or their DP ranks
        prefill_rows = rows[rows[:, 0] < prefills]
        decode_rows = rows[rows[:, 0] >= prefills]
        features = slice(4, 4 + 6)
        extrapolation = [
            words
            for model, part in ((latency.prefill, prefill_rows), (latency.decode, decode_rows))
            if len(part) and (words := model.extrapolation(part[:, features]))
        ]
        return {
            "words": system.words(),
            "kv_link": self.link.words(),
            "instances": f"replicas 0..{prefills - 1} prefill, {prefills}..{len(self.engines) - 1} decode"
            + (
                " (an attention-DP rank each)"
                if system.prefill.dp_attention > 1 or system.decode.dp_attention > 1
                else ""
            ),
            "kv_blocks": {
                "prefill": self.prefill[0].scheduler.config.num_blocks,
                "decode": self.decode[0].scheduler.config.num_blocks,
            },
            "kv_blocks_in_use_at_end": {
                "prefill": sum(e.scheduler.used_blocks() for e in self.prefill),
                "decode": sum(e.scheduler.used_blocks() for e in self.decode),
            },
            "transfers": len(moves),
            "decode_queue_s": describe_values(moves[:, 1] - moves[:, 0]),
            "link_wait_s": describe_values(moves[:, 2] - moves[:, 1]),
            "transfer_s": describe_values(moves[:, 3] - moves[:, 2]),
        }, ("; ".join(extrapolation) or None)


def simulate_disagg(
    system: DisaggSpec,
    workload: Workload,
    time_limit_s: float | None = None,
    batch_seconds=None,
    early_stop: EarlyStop | None = None,
    max_concurrency: int | None = None,
):
    """Replay the workload on the disaggregated deployment (see simulator.simulate for the options)."""
    latency = system.latency_model()
    prefill_seconds, decode_seconds = latency.prefill.predictor, latency.decode.predictor
    if batch_seconds is not None:
        prefill_seconds = decode_seconds = batch_seconds
        custom = CustomLatency(latency.prefill, batch_seconds)
        latency = PoolLatencies(custom, CustomLatency(latency.decode, batch_seconds))
    env = Clock()
    requests = make_requests(workload)
    run = Run(env, len(requests), max_concurrency)
    deployment = Deployment(env, system, run, prefill_seconds, decode_seconds)
    frontend_s = getattr(latency.prefill, "frontend_s", 0.0)  # the prefill engine's API server takes the requests
    if frontend_s > 0:
        deployment.frontend = Frontend(env, frontend_s, deployment, run)
    engines = deployment.engines
    if early_stop is not None:
        run.monitor = EarlyStopMonitor(early_stop, [e.scheduler for e in engines], run.finish)
    env.process(arrivals(env, requests, [deployment], "round_robin", run, len(engines)))
    if time_limit_s is not None:
        run.time_limit = 0.0 + time_limit_s
        env.process(alarm(env, time_limit_s, run))
    try:
        env.run(until=run.end)
    except RuntimeError as error:
        raise SimulationError(f"the simulation stalled with {run.remaining} requests left: {error}") from None
    stopped = run.monitor.stopped if run.monitor else None
    rows = np.frombuffer(run.log).reshape(-1, len(BATCH_COLUMNS))
    result = build_result(system, workload, requests, engines, rows, latency, env.now, time_limit_s, stopped)
    result.info["disagg"], result.info["extrapolation"] = deployment.info(system, rows, latency)
    result.info["kv_blocks_per_engine"] = None  # the pools differ: see disagg.kv_blocks
    if max_concurrency is not None:
        result.info["max_concurrency"] = max_concurrency
    result.info["frontend_s"] = frontend_s
    return result
