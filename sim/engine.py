"""The SimPy replay: requests arrive, a router sends each to a replica, and each replica's
scheduler runs batches whose durations the latency model predicts.

A replica with pipeline parallelism PP keeps up to PP micro-batches in flight, one a stage; each
batch passes through the PP stages in turn. How they are scheduled (SystemSpec.pipeline_scheduling):
- one_scheduler (Sarathi-Serve, Vidur): one scheduler a replica; its batch-size limit, KV pool
  and waiting queue cover all in-flight micro-batches (see KVPool).
- virtual_engines (vLLM): PP independent schedulers, each with the full batch-size limit and 1/PP
  of the KV blocks; a new request goes to the one with the fewest outstanding requests.
"""

from __future__ import annotations

import math
from array import array
from collections import deque

import simpy

from capsim.profiles.predictor import LatencyPredictor
from capsim.sim.clock import Clock
from capsim.sim.decode_stretch import DecodeStretches
from capsim.sim.early_stop import EarlyStopMonitor
from capsim.sim.errors import SimulationError
from capsim.sim.policies import POLICIES
from capsim.sim.request import Request
from capsim.sim.scheduler import KVPool
from capsim.sim.system import SystemSpec
from capsim.traces import Workload


class Engine:
    """One scheduler and the loop that runs its batches (a replica, or one virtual engine of it)."""

    def __init__(self, env: simpy.Environment, replica: int, index: int, scheduler, batch_seconds, stages, run: "Run"):
        self.env, self.replica, self.index = env, replica, index
        self.scheduler = scheduler
        scheduler.index = index
        self.siblings: list[Engine] = [self]  # the engines that share its KV pool
        self.batch_seconds = batch_seconds
        self.stages = stages
        self.run = run
        self.idle: simpy.Event | None = None
        self.stretches: DecodeStretches | None = None  # set by simulate() where decode stretches apply
        env.process(self.loop())

    def submit(self, request: Request) -> None:
        request.replica, request.engine = self.replica, self.index
        rejected = len(self.scheduler.rejected)
        self.scheduler.add(request)
        if len(self.scheduler.rejected) > rejected:
            self.run.retired(1)
        else:
            self.wake_siblings()

    def wake_siblings(self) -> None:
        """Wake the idle engines of the pool: there is work, or room, for them now."""
        for engine in self.siblings:
            if engine.idle is not None and not engine.idle.triggered:
                engine.idle.succeed()

    def loop(self):
        env, scheduler, run, stages, stretches = self.env, self.scheduler, self.run, self.stages, self.stretches
        schedule, complete, log = scheduler.schedule, scheduler.complete, run.log
        batch_seconds = (
            self.batch_seconds.per_batch if isinstance(self.batch_seconds, LatencyPredictor) else self.batch_seconds
        )
        ends, pool, num_blocks = scheduler.decode_end_times, scheduler.pool, scheduler.config.num_blocks
        replica, index, shared = self.replica, self.index, len(self.siblings) > 1
        now = env.now  # kept here as each wait ends (the clock's property costs more on this path)
        while True:
            start = now
            batch = schedule(start)
            if batch is None:
                self.idle = env.event()
                yield self.idle
                self.idle = None
                now = env.now
                continue
            if stretches is not None:
                stretch = stretches.plan(scheduler, batch, start)
                if stretch is not None:  # many decode-only iterations before the next event: one wait
                    now = float(stretch.ends[-1])
                    if not env.advance(now):
                        yield env.timeout_at(now)
                    stretches.apply(self, batch, stretch)
                    continue
            num_decodes = batch.num_decodes
            continuing = num_decodes - scheduler.fresh_decodes
            features = batch.features()
            seconds = batch_seconds(*features)
            if stages is None:
                now = start + seconds  # as SimPy times a timeout: the clock plus its delay
                if not env.advance(now):
                    yield env.timeout(seconds)
            else:
                for stage in stages:
                    with stage.request() as turn:
                        yield turn
                        yield env.timeout(seconds)
                now = env.now
            gap = now - ends[-1] if num_decodes and ends else None
            finished = complete(batch, now)
            log.extend((replica, index, start, now, *features, len(batch.preempted), num_blocks - pool.free_blocks))
            if run.monitor is not None:
                run.monitor.after_batch(continuing, gap, now)
            if finished:
                run.retired(len(finished))
            if shared and (finished or batch.preempted or batch.prefills):
                self.wake_siblings()


class Run:
    """What the engines of one simulation share: the batch log, the end, the early-stop monitor."""

    def __init__(self, env: simpy.Environment, num_requests: int, max_concurrency: int | None = None):
        self.env = env
        self.log = array("d")  # one row of BATCH_COLUMNS a batch, flat: compact, no objects for the GC
        self.stretch_log: list = []  # a tuple a segment of a decode stretch: its rows are built when the batch table is
        self.end = env.event()
        self.remaining = num_requests
        self.monitor: EarlyStopMonitor | None = None
        self.next_send = 0.0  # when the client sends its next request (inf once all are sent)
        self.frontends: list[Frontend] = []
        self.frontend_next = math.inf  # when a frontend next hands a request to its engine
        self.time_limit = math.inf
        self.max_concurrency = max_concurrency  # requests in flight at most (a closed loop); None: open loop
        self.in_flight = 0
        self.slot: simpy.Event | None = None  # the arrivals wait on it while every slot is taken

    def retired(self, count: int) -> None:
        self.remaining -= count
        self.in_flight -= count
        if self.slot is not None and not self.slot.triggered:
            self.slot.succeed()
            self.next_send = self.env.now  # the request waiting for the slot is sent now
        if self.remaining == 0:
            self.finish()

    @property
    def next_arrival(self) -> float:
        """When the next request is sent or reaches an engine: decode stretches end before it."""
        return self.next_send if self.next_send < self.frontend_next else self.frontend_next

    def frontend_changed(self) -> None:
        self.frontend_next = min(f.next_done for f in self.frontends)

    def finish(self) -> None:
        if not self.end.triggered:
            self.end.succeed()


class Frontend:
    """A replica's API server: HTTP and tokenization, one request at a time, `seconds` each, before
    its engine sees the request. Requests sent together queue here, so a closed loop's waves
    reach the engine spread out, as they do a real one."""

    def __init__(self, env: Clock, seconds: float, replica: Replica, run: Run):
        self.env, self.seconds, self.replica, self.run = env, seconds, replica, run
        self.queue: deque[Request] = deque()
        self.next_done = math.inf  # when the request it works on goes to the engine
        self.holding = 0  # requests received and not yet handed on: a router counts them as the replica's
        self.idle: simpy.Event | None = None
        run.frontends.append(self)
        env.process(self.loop())

    def receive(self, request: Request) -> None:
        self.queue.append(request)
        self.holding += 1
        if (
            self.next_done == math.inf
        ):  # idle: it starts on this one now (booked here, so that a stretch planned now sees it)
            self.next_done = self.env.now + self.seconds
            self.run.frontend_changed()
            if self.idle is not None and not self.idle.triggered:
                self.idle.succeed()

    def loop(self):
        env, queue = self.env, self.queue
        while True:
            if not queue:
                self.idle = env.event()
                yield self.idle
                self.idle = None
                continue
            request = queue.popleft()
            yield env.timeout_at(self.next_done)
            self.next_done = env.now + self.seconds if queue else math.inf
            self.run.frontend_changed()
            self.holding -= 1
            self.replica.submit(request)


class Replica:
    def __init__(
        self, env: simpy.Environment, index: int, system: SystemSpec, batch_seconds, run: Run, frontend_s: float = 0.0
    ):
        config = system.scheduler_config()
        stages = [simpy.Resource(env, capacity=1) for _ in range(system.pp)] if system.pp > 1 else None
        policy = POLICIES[system.scheduler]
        self.shared = system.pp > 1 and system.pipeline_scheduling == "one_scheduler"
        pool = KVPool(config.num_blocks) if self.shared else None
        # Pipeline stages (each a virtual engine, or slots of one scheduler), or attention-DP ranks: each
        # rank schedules its own requests into its own KV cache; its steps are priced with every rank
        # holding a batch like its own (the kernel database's balanced ranks), so idle-rank waits are not modelled.
        self.engines = [
            Engine(env, index, e, policy(config, pool), batch_seconds, stages, run)
            for e in range(max(system.pp, system.dp_attention))
        ]
        if self.shared:
            for engine in self.engines:
                engine.siblings = self.engines
        self.frontend = Frontend(env, frontend_s, self, run) if frontend_s > 0 else None

    def receive(self, request: Request) -> None:
        """A request the client sent: through the frontend, if it has one, to an engine."""
        if self.frontend is None:
            self.submit(request)
        else:
            self.frontend.receive(request)

    def submit(self, request: Request) -> None:
        if self.shared:  # one waiting queue: whichever slot schedules next admits it
            self.engines[0].submit(request)
        else:
            min(self.engines, key=lambda e: e.scheduler.outstanding).submit(request)

    @property
    def outstanding(self) -> int:
        waiting = (
            len(self.engines[0].scheduler.waiting)
            if self.shared
            else sum(len(e.scheduler.waiting) for e in self.engines)
        )
        held = self.frontend.holding if self.frontend is not None else 0  # sent to this replica, still in its frontend
        return held + waiting + sum(len(e.scheduler.prefilling) + len(e.scheduler.decoding) for e in self.engines)

    @property
    def kv_load(self) -> float:
        engines = self.engines[:1] if self.shared else self.engines
        return sum(e.scheduler.used_blocks() / e.scheduler.config.num_blocks for e in engines)


def alarm(env: simpy.Environment, seconds: float, run: Run):
    yield env.timeout(seconds)
    run.finish()


class CustomLatency:
    """A caller's latency function, reported as such."""

    source = "custom"
    source_words = "a caller's latency function"

    def __init__(self, fitted, function):
        self.profile = fitted.profile | {"source": "custom", "engine": getattr(function, "__name__", "custom")}
        self.predictor = function
        self.frontend_s = 0.0  # a caller's steps only: no host time (simulate's frontend_s gives one)

    def extrapolation(self, features, weights=None):
        return None


def stage_seconds(latency_model, system: SystemSpec):
    """The predictor of one batch on one pipeline stage."""
    predictor = latency_model.predictor
    profiled_pp = latency_model.profile.get("pp", 1)
    if system.pp == 1 or profiled_pp == system.pp:
        return predictor
    if profiled_pp != 1:
        raise SimulationError(
            f"the profile was made at PP={profiled_pp}; the system has PP={system.pp}: use a PP=1 profile"
        )
    from capsim.profiles.hardware import get_hardware

    model, link = system.model_spec, get_hardware(system.hardware).pp_link_bandwidth
    share, per_token = 1.0 / system.pp, model.hidden * model.activation_dtype_bytes / link

    def per_stage(tokens, *rest):
        return predictor(tokens, *rest) * share + tokens * per_token

    return per_stage


def make_requests(workload: Workload) -> list[Request]:
    arrival = workload.arrival_s.tolist()
    prompt = workload.prompt_tokens.tolist()
    output = workload.output_tokens.tolist()
    if "prefix_group" in workload.table.column_names:
        group = workload.table.column("prefix_group").to_numpy().tolist()
        shared = workload.table.column("prefix_tokens").to_numpy().tolist()
    else:
        group, shared = [-1] * len(prompt), [0] * len(prompt)
    return [Request(i, arrival[i], prompt[i], output[i], group[i], shared[i]) for i in range(len(prompt))]


def arrivals(
    env: simpy.Environment, requests: list[Request], replicas: list[Replica], router: str, run: Run, engines: int
):
    """Send each request at its arrival time, or, with a concurrency cap, when a request in flight
    ends, whichever is later (vLLM's --max-concurrency: the client's clock starts at the send)."""
    for i, request in enumerate(requests):
        if request.arrival_s > env.now:
            delay = request.arrival_s - env.now
            run.next_send = env.now + delay  # the time the clock will show (SimPy adds the same way)
            yield env.timeout(delay)
        if run.max_concurrency is not None:
            if run.in_flight >= run.max_concurrency:
                # Only a completion frees a slot. One engine's decode stretches end at its completions;
                # with several, another engine's completion may send the request mid-stretch: none then.
                run.next_send = math.inf if engines == 1 else env.now
                run.slot = env.event()
                yield run.slot
                run.slot = None
            request.arrival_s = max(request.arrival_s, env.now)  # late behind earlier requests' waits, or its own
        run.next_send = env.now
        run.in_flight += 1
        if router == "round_robin":
            target = replicas[i % len(replicas)]
        elif router == "least_outstanding":
            target = min(replicas, key=lambda r: r.outstanding)
        else:
            target = min(replicas, key=lambda r: r.kv_load)
        target.receive(request)
    run.next_send = math.inf
