"""The load generator: replay a Workload against an OpenAI-compatible endpoint at its arrival
times, and return a RunResult in the simulator's schema.

One asyncio loop (aiohttp, as `vllm bench serve`) holds every stream: an open request costs a
socket and a coroutine, not a thread, so one process drives thousands of concurrent streams.

- Open loop: a request is sent at its arrival time whether or not earlier ones have answered. A
  safety cap (max_in_flight) bounds the open requests; every request that had to wait for it is
  counted and reported, and its arrival stays its scheduled time, so the wait counts in its TTFT.
- Closed loop (max_concurrency, vLLM's --max-concurrency): a request due while that many are in
  flight waits for one to end, and its clock starts when it is sent. With every arrival at 0 (an
  infinite rate) that is N users sending back to back.

Prompts are random token ids of the exact length, seeded per request and per run: a run's
prompts share no prefix with another run's (or another trial's), so an engine's prefix cache,
on by default in vLLM, serves none of them from an earlier run. Outputs are fixed with ignore_eos
+ max_tokens. Every wait has a timeout: a stalled stream fails after the endpoint's timeout, the
whole run ends at its time limit, and an early-stop rule (as in simulation, from lower bounds on
violations) ends a run that can no longer pass.
"""

from __future__ import annotations

import asyncio
import gc
import math
import resource
import secrets
import time
from dataclasses import dataclass

import numpy as np

from capsim.real.client import (
    MIN_STREAMED,
    Completion,
    Endpoint,
    StreamFailed,
    StreamReader,
    error_message,
    request_body,
)
from capsim.sim.early_stop import EarlyStop
from capsim.sim.result import RunResult, requests_table
from capsim.traces import Workload

MONITOR_EVERY_S = 0.05
YOUNG_GC_EVERY = 20  # monitor ticks between collections of the youngest generation (automatic GC is off)
FULL_GC_EVERY = 20_000  # requests done between full collections (each stalls the loop for tens of ms)
ALL_FAILED_STOP = 16  # this many requests done and every one failed: the endpoint is broken, not slow
FIRST_ID = 10  # skip the low ids, where tokenizers keep their special tokens


@dataclass(frozen=True)
class LoadOptions:
    vocab: int  # prompt token ids are drawn from [FIRST_ID, vocab)
    time_limit_s: float | None = None
    early_stop: EarlyStop | None = None
    max_in_flight: int = 8192  # the open loop's safety cap
    max_concurrency: int | None = None  # a closed loop: requests in flight at most, each timed from its send
    seed: int = 0
    salt: int | None = None  # of the prompts: None draws a new one for each run


def prompt_ids(seed: int, index: int, length: int, vocab: int, salt: int = 0) -> list[int]:
    """The prompt of request `index`: random ids, the same for the same seed, index and salt."""
    rng = np.random.default_rng([seed, index, salt])
    return rng.integers(FIRST_ID if vocab > 2 * FIRST_ID else 0, vocab, length).tolist()


def new_salt() -> int:
    """A salt for one run's prompts, never the same twice."""
    return secrets.randbits(63)


def run_load(endpoint: Endpoint, workload: Workload, options: LoadOptions, progress=None) -> RunResult:
    """Replay `workload` (with arrival times) against the endpoint; `progress(done, total)` as
    requests end."""
    if not workload.has_arrivals:
        raise ValueError("the workload has no arrival times: sample it at a QPS first")
    _allow_sockets(min(options.max_concurrency or options.max_in_flight, len(workload)) + 64)
    gc.collect()
    gc.disable()  # a full collection among thousands of streams' objects stalls the loop for tens of ms: sends go late;
    # the monitor collects the youngest generation each second, and all of it every FULL_GC_EVERY requests
    try:
        return _run_in_own_loop(_Load(endpoint, workload, options, progress).run())
    finally:
        gc.enable()


def _run_in_own_loop(coroutine):
    """asyncio.run, also from code that already runs an event loop (a notebook): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


class _Load:
    """One run: the dispatcher, the streams, the monitor, and why it stopped."""

    def __init__(self, endpoint: Endpoint, workload: Workload, options: LoadOptions, progress):
        self.endpoint, self.workload, self.options, self.progress = endpoint, workload, options, progress
        self.count = len(workload)
        self.completions = [Completion() for _ in range(self.count)]
        self.arrival = workload.arrival_s.astype(np.float64)  # closed loop: each request's send, once sent
        self.streams: dict[int, asyncio.Task] = {}
        self.stop_reason = ""
        self.rule = options.early_stop
        self.tbt_violations = self.cap_waits = self.failed = self.done = self.dispatched = 0
        self.start = 0.0
        self.salt = new_salt() if options.salt is None else options.salt

    async def run(self) -> RunResult:
        import aiohttp  # loaded by the commands that run real load only

        self.stopped = asyncio.Event()
        self.all_done = asyncio.Event()
        limit = self.options.max_concurrency or self.options.max_in_flight
        self.slots = asyncio.Semaphore(limit)
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.endpoint.timeout_s, sock_read=self.endpoint.timeout_s
        )
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.endpoint.headers()
        ) as session:
            self.session = session
            self.url = self.endpoint.absolute("/v1/completions")
            self.start = time.perf_counter() + 0.05  # a moment to start the dispatcher before the first arrival
            dispatcher = asyncio.create_task(self.dispatch())
            await self.monitor(dispatcher)
            dispatcher.cancel()
            for task in list(self.streams.values()):
                task.cancel()
            await asyncio.gather(dispatcher, *self.streams.values(), return_exceptions=True)
        return self.result()

    async def dispatch(self) -> None:
        closed_loop = self.options.max_concurrency is not None
        for index, at in enumerate(self.arrival.tolist()):
            delay = self.start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.slots.locked() and not closed_loop:
                self.cap_waits += 1  # sent late: the wait counts in its TTFT
            await self.slots.acquire()
            if self.stopped.is_set():
                return
            if closed_loop:
                self.arrival[index] = max(at, time.perf_counter() - self.start)
            self.dispatched = index + 1
            self.streams[index] = asyncio.create_task(self.stream(index))

    async def stream(self, index: int) -> None:
        completion = self.completions[index]
        max_tokens = int(self.workload.output_tokens[index])
        reader = StreamReader(completion, max_tokens, on_gap=self.on_gap)
        body = request_body(
            self.endpoint,
            prompt_ids(
                self.options.seed, index, int(self.workload.prompt_tokens[index]), self.options.vocab, self.salt
            ),
            max_tokens,
        )
        try:
            completion.sent_s = time.perf_counter()
            async with self.session.post(self.url, data=body) as response:
                if response.status != 200:
                    _fail(completion, f"HTTP {response.status}: {error_message(await response.read())}")
                    return
                async for data in response.content.iter_any():  # one network read at a time
                    if reader.data(data, time.perf_counter()):
                        break
                else:
                    reader.end_of_data(time.perf_counter())
                reader.finish()
        except StreamFailed as failure:
            _fail(completion, str(failure))
        except asyncio.TimeoutError:
            _fail(completion, f"no data for {self.endpoint.timeout_s:g} s")
        except asyncio.CancelledError:  # the run stopped: the request stays unfinished, with the reason
            completion.reason = completion.reason or self.stop_reason
        except Exception as error:  # noqa: BLE001 - a request's failure is recorded, never a silent dead task
            _fail(completion, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        finally:
            self.streams.pop(index, None)
            self.slots.release()
            self.done += 1
            self.failed += completion.status == "failed"
            if self.progress:
                self.progress(self.done, self.count)
            if self.done == self.count:
                self.all_done.set()

    def on_gap(self, gap: float) -> None:
        rule = self.rule
        if rule is not None and rule.max_tbt is not None and gap > rule.max_tbt:
            self.tbt_violations += 1
            if self.tbt_violations > rule.max_tbt_violations:
                self.halt(f"stopped early: more than {rule.max_tbt_violations} token gaps over {rule.max_tbt:g} s")

    def halt(self, reason: str) -> None:
        if self.stopped.is_set():
            return
        self.stop_reason = reason
        self.stopped.set()
        for index in list(self.streams):
            self.completions[index].reason = reason

    async def monitor(self, dispatcher: asyncio.Task) -> None:
        """Wait for the end: every request done, the time limit, or an early stop."""
        rule, options = self.rule, self.options
        limit = self.start + options.time_limit_s if options.time_limit_s else math.inf
        ticks = collected = 0
        while not self.stopped.is_set():
            try:
                await asyncio.wait_for(self.all_done.wait(), MONITOR_EVERY_S)
                return
            except asyncio.TimeoutError:
                pass
            ticks += 1
            if self.done >= collected + FULL_GC_EVERY:  # ~3 cyclic objects a request: bounded memory on long runs
                collected = self.done
                gc.collect()
            elif ticks % YOUNG_GC_EVERY == 0:
                gc.collect(0)
            if dispatcher.done() and dispatcher.exception() is not None:
                raise dispatcher.exception()
            now = time.perf_counter()
            if self.failed == self.done >= min(ALL_FAILED_STOP, self.count):
                self.halt(f"stopped early: the first {self.done} requests all failed")
            elif now > limit:
                self.halt(f"time limit of {options.time_limit_s:g} s")
            elif rule is not None and rule.max_wait is not None:
                # Requests due more than max_wait ago with no token yet: over the limit whatever comes.
                due = self.dispatched if options.max_concurrency else self.count
                arrived = int(np.searchsorted(self.arrival[:due], now - self.start - rule.max_wait, side="right"))
                late = sum(1 for c in self.completions[:arrived] if not c.token_times)
                if late > rule.max_wait_violations:
                    self.halt(
                        f"stopped early: more than {rule.max_wait_violations} requests waited over {rule.max_wait:g} s"
                    )

    def result(self) -> RunResult:
        completions, start = self.completions, self.start
        counts = np.array([len(c.token_times) for c in completions], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        values = np.array([t - start for c in completions for t in c.token_times], dtype=np.float64)
        first = [c.token_times[0] - start if c.token_times else math.nan for c in completions]
        finish = [c.token_times[-1] - start if c.status == "finished" else math.nan for c in completions]
        status = [c.status for c in completions]
        reason = [
            c.reason
            or (
                ""
                if c.status == "finished"
                else "not sent"
                if math.isnan(c.sent_s)
                else self.stop_reason or "no answer"
            )
            for c in completions
        ]
        n = len(completions)
        table = requests_table(
            list(range(n)),
            [0] * n,
            self.arrival.tolist(),
            [math.nan] * n,  # when the engine first scheduled it is not visible through the API
            first,
            finish,
            status,
            reason,
            self.workload.prompt_tokens.tolist(),
            self.workload.output_tokens.tolist(),
            counts.tolist(),
            [0] * n,
            values,
            offsets,
        )
        late = np.array([c.sent_s - start for c in completions]) - self.arrival
        options = self.options
        info = {
            "kind": "real",
            "endpoint": self.endpoint.url,
            "model": self.endpoint.model,
            "workload": self.workload.info,
            "qps": self.workload.info.get("qps"),
            "latency_source": "real",
            "time_limit_s": options.time_limit_s,
            "stopped_early": self.stop_reason if self.stop_reason.startswith("stopped early") else None,
            "max_in_flight": options.max_in_flight,
            "in_flight_cap_hits": self.cap_waits,
            "send_lateness_s": {"p50": _nan_percentile(late, 50), "p99": _nan_percentile(late, 99)},
            "multi_token_chunks": int(sum(c.multi_token_chunks for c in completions)),
            "one_read_requests": sum(
                1
                for c in completions
                if c.status == "finished"
                and len(c.token_times) >= MIN_STREAMED
                and c.token_times[0] == c.token_times[-1]
            ),
        }
        if options.max_concurrency is not None:
            info["max_concurrency"] = options.max_concurrency
        return RunResult(table, None, info)


def _fail(completion: Completion, reason: str) -> None:
    if not completion.reason:  # a cut-off by the run says why first
        completion.status, completion.reason = "failed", reason


def _allow_sockets(needed: int) -> None:
    """Raise the open-file limit towards `needed` (a socket a stream), within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def dominant_failure(result: RunResult) -> tuple[str, int, int] | None:
    """(the most common reason, its count, failed requests) when requests failed, else None."""
    failed = result.column("status") == "failed"
    if not failed.any():
        return None
    reasons, counts = np.unique(result.column("reason")[failed].astype(str), return_counts=True)
    return str(reasons[counts.argmax()]), int(counts.max()), int(failed.sum())


def _nan_percentile(values: np.ndarray, p: float) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.percentile(values, p)) if len(values) else None
