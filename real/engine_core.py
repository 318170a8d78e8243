"""The reference engine's core: the simulator's own scheduler policies, run on the wall clock
with real forward passes (the profiler's ModelRunner) instead of predicted batch times.

It runs in a process of its own, single-threaded, as vLLM's engine core does: HTTP handling in
the same process would contend for the GIL that every small torch op takes back, and slow the
forward passes the profile measured alone. The frontend (engine.py) talks to it over a pipe.

Each loop: take new requests and aborts, ask the policy for a batch, free the KV of requests it
preempted, run the batch (prefill chunks and the whole decode set in one forward pass), complete()
it at the wall-clock time it ended, and send the frontend one message with every new token.

Messages in: ("add", id, prompt ids, max_tokens), ("abort", id), ("stop",).
Messages out: ("ready", info) or ("failed", reason) once; then ("tokens", [(id, token, time)],
[finished ids], [(id, reason)] closed with an error, stats) after each batch or change.
"""

from __future__ import annotations

import time
import traceback
from array import array

from capsim.profiles.model_runner import ModelRunner, SequenceWork
from capsim.sim.policies import POLICIES
from capsim.sim.request import REJECTED, Request
from capsim.sim.result import BATCH_COLUMNS
from capsim.sim.scheduler import Batch, SchedulerConfig

IDLE_WAIT_S = 0.05  # how long an idle core blocks on its pipe between checks


class EngineCore:
    def __init__(self, runner: ModelRunner, scheduler: str, config: SchedulerConfig, clock_start: float):
        self.runner = runner
        self.scheduler = POLICIES[scheduler](config)
        self.config = config
        self.clock_start = clock_start  # perf_counter() of the frontend's clock zero
        self.token_ids: dict[int, list[int]] = {}  # prompt, then every generated token: what a re-prefill recomputes
        self.requests: dict[int, Request] = {}
        self.log = array("d")  # one row of BATCH_COLUMNS a batch, as the simulator logs them
        self.busy_s = 0.0
        self.tokens: list[tuple[int, int, float]] = []
        self.finished: list[int] = []
        self.closed: list[tuple[int, str]] = []

    def now(self) -> float:
        return time.perf_counter() - self.clock_start

    def add(self, request_id: int, prompt: list[int], max_tokens: int) -> None:
        request = Request(request_id, self.now(), len(prompt), max_tokens)
        self.scheduler.add(request)
        if request.status == REJECTED:
            self.closed.append((request_id, "longer than the model or KV cache can hold"))
            return
        self.requests[request_id] = request
        self.token_ids[request_id] = list(prompt)

    def abort(self, request_id: int) -> None:
        request = self.requests.pop(request_id, None)
        if request is not None:
            self.scheduler.abort(request)
            self.runner.free(request_id)
            del self.token_ids[request_id]

    def step(self) -> bool:
        """Run one batch if the policy forms one; False when there was nothing to run."""
        batch = self.scheduler.schedule(self.now())
        if batch is None:
            return False
        self._run(batch)
        return True

    def take_output(self) -> tuple[list, list, list]:
        out = (self.tokens, self.finished, self.closed)
        self.tokens, self.finished, self.closed = [], [], []
        return out

    def stats(self) -> dict:
        s = self.scheduler
        return {
            "waiting": len(s.waiting),
            "running": s.running,
            "kv_blocks_used": s.used_blocks(),
            "kv_blocks": self.config.num_blocks,
            "batches": len(self.log) // len(BATCH_COLUMNS),
            "preemptions": s.preemptions,
            "busy_s": round(self.busy_s, 3),
        }

    def _run(self, batch: Batch) -> None:
        for request in batch.preempted:
            self.runner.free(request.id)
        work, prefills = [], []
        for request, before, chunk in batch.prefills:
            ids = self.token_ids[request.id]
            work.append(SequenceWork(request.id, before, tuple(ids[before : before + chunk])))
            prefills.append(request)
        decoders = list(self.scheduler.decoding.values()) if batch.num_decodes else []
        for request in decoders:
            ids = self.token_ids[request.id]
            work.append(SequenceWork(request.id, len(ids) - 1, (ids[-1],)))
        start = time.perf_counter()
        next_ids = self.runner.run(work)
        self.runner.synchronize()
        end = time.perf_counter()
        self.busy_s += end - start
        now = end - self.clock_start
        finished = self.scheduler.complete(batch, now)
        self.log.extend(
            (0, 0, start - self.clock_start, now, *batch.features(), len(batch.preempted), self.scheduler.used_blocks())
        )
        sampled = dict(zip((w.seq_id for w in work), next_ids))
        for request in prefills:
            if request.prefilled >= request.prefill_target:  # a completed prefill samples a token
                self._emit(request.id, sampled[request.id], now)
        for request in decoders:
            self._emit(request.id, sampled[request.id], now)
        for request in finished:
            self.runner.free(request.id)
            del self.requests[request.id], self.token_ids[request.id]
            self.finished.append(request.id)

    def _emit(self, request_id: int, token: int, now: float) -> None:
        self.token_ids[request_id].append(token)
        self.tokens.append((request_id, token, now))


def run_core(
    conn, system, device: str, dtype: str | None, seed: int, clock_start: float, batch_log: str | None
) -> None:
    """The engine process: build the model, say ready, then serve the pipe until told to stop."""
    try:
        core = _build(system, device, dtype, seed, clock_start)
    except BaseException as error:  # noqa: BLE001 - the frontend must hear why, whatever it was
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", {"num_blocks": core.config.num_blocks, "device": device}))
    try:
        while (handled := _take_messages(conn, core, block=not core.scheduler.has_work)) is not None:
            ran = core.step()
            tokens, finished, closed = core.take_output()
            if ran or closed or handled:  # every change reaches the frontend's counters
                conn.send(("tokens", tokens, finished, closed, core.stats()))
    except BaseException:  # noqa: BLE001
        conn.send(("failed", traceback.format_exc(limit=5)))
        raise
    finally:
        if batch_log:
            _write_batch_log(core, batch_log)


def _take_messages(conn, core: EngineCore, block: bool) -> int | None:
    """Apply queued adds and aborts; how many there were, or None once asked to stop."""
    handled = 0
    while block or conn.poll():
        if block and not conn.poll(IDLE_WAIT_S):
            continue
        block = False
        message = conn.recv()
        if message[0] == "add":
            core.add(*message[1:])
        elif message[0] == "abort":
            core.abort(message[1])
        else:
            return None
        handled += 1
    return handled


def _build(system, device: str, dtype: str | None, seed: int, clock_start: float) -> EngineCore:
    import torch

    from capsim.profiles.models import get_model
    from capsim.profiles.profiler import CPU_THREADS, steady_cpu_allocator
    from capsim.profiles.torch_model import torch_dtype

    if device == "cpu":
        torch.set_num_threads(CPU_THREADS)  # as the CPU profiler measures, so the simulated latencies hold
        steady_cpu_allocator()
    model = get_model(system.model)
    run_dtype = getattr(torch, dtype) if dtype else torch_dtype(model)
    config = system.scheduler_config()
    runner = ModelRunner(
        model,
        device=device,
        dtype=run_dtype,
        kv_cache_tokens=config.num_blocks * config.block_size,
        block_size=config.block_size,
        seed=seed,
    )
    return EngineCore(runner, system.scheduler, config, clock_start)


def _write_batch_log(core: EngineCore, path: str) -> None:
    from pathlib import Path

    import numpy as np
    import pyarrow.parquet as pq

    from capsim.common.files import write_atomically
    from capsim.sim.assemble import batch_table

    table = batch_table(np.frombuffer(core.log).reshape(-1, len(BATCH_COLUMNS)))
    write_atomically(Path(path), lambda tmp: pq.write_table(table, tmp))
