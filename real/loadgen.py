"""The load generator: replay a Workload against an OpenAI-compatible endpoint at its arrival
times, open loop, and return a RunResult in the simulator's schema.

Open loop: a request is sent at its arrival time whether or not earlier ones have answered. Each
in-flight request holds a thread blocked on its socket (the GIL is free while it waits); a safety
cap bounds them, and every request that had to wait for the cap is counted and reported, since
it no longer arrived on time. A request's arrival is its scheduled time, so any lateness in
sending it counts in its TTFT.

Prompts are random token ids of the exact length (seeded per request, the same at every QPS);
outputs are fixed with ignore_eos + max_tokens. Every wait has a timeout: a stalled stream
fails after the endpoint's timeout, the whole run ends at its time limit, and an early-stop rule
(as in simulation, from lower bounds on violations) ends a run that can no longer pass.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from capsim.real.client import Completion, Endpoint, stream_completion
from capsim.sim.early_stop import EarlyStop
from capsim.sim.result import RunResult, requests_table
from capsim.traces import Workload

MONITOR_EVERY_S = 0.05
JOIN_TIMEOUT_S = 10.0
ALL_FAILED_STOP = 16  # this many requests done and every one failed: the endpoint is broken, not slow


@dataclass(frozen=True)
class LoadOptions:
    vocab: int  # prompt token ids are drawn from [FIRST_ID, vocab)
    time_limit_s: float | None = None
    early_stop: EarlyStop | None = None
    max_in_flight: int = 1024
    seed: int = 0


FIRST_ID = 10  # skip the low ids, where tokenizers keep their special tokens


def prompt_ids(seed: int, index: int, length: int, vocab: int) -> list[int]:
    rng = np.random.default_rng([seed, index])
    return rng.integers(FIRST_ID if vocab > 2 * FIRST_ID else 0, vocab, length).tolist()


class _Run:
    """The shared state of one run: completions, open connections, the stop flag and why."""

    def __init__(self, count: int, rule: EarlyStop | None):
        self.completions = [Completion() for _ in range(count)]
        self.connections: dict[int, object] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.stop_reason = ""
        self.rule = rule
        self.tbt_violations = 0
        self.cap_waits = 0
        self.failed = 0

    def on_gap(self, gap: float) -> None:
        rule = self.rule
        if rule is not None and rule.max_tbt is not None and gap > rule.max_tbt:
            with self.lock:
                self.tbt_violations += 1
                over = self.tbt_violations > rule.max_tbt_violations
            if over:
                self.halt(f"stopped early: more than {rule.max_tbt_violations} token gaps over {rule.max_tbt:g} s")

    def halt(self, reason: str) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            self.stop_reason = reason
            self.stop.set()
            for index, connection in list(self.connections.items()):
                self.completions[index].reason = reason
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def run_load(endpoint: Endpoint, workload: Workload, options: LoadOptions, progress=None) -> RunResult:
    """Replay `workload` (with arrival times) against the endpoint; `progress(done, total)` as
    requests end."""
    if not workload.has_arrivals:
        raise ValueError("the workload has no arrival times: sample it at a QPS first")
    arrival = workload.arrival_s
    prompt = workload.prompt_tokens.tolist()
    output = workload.output_tokens.tolist()
    count = len(prompt)
    run = _Run(count, options.early_stop)
    slots = threading.BoundedSemaphore(options.max_in_flight)
    done = [0]
    threads: list[threading.Thread] = []

    def send(index: int) -> None:
        completion = run.completions[index]
        try:
            def opened(connection):
                with run.lock:
                    run.connections[index] = connection
                if run.stop.is_set():
                    completion.reason = run.stop_reason
                    raise ConnectionAbortedError(run.stop_reason)
            ids = prompt_ids(options.seed, index, prompt[index], options.vocab)
            stream_completion(endpoint, ids, output[index], completion, on_open=opened, on_gap=run.on_gap)
        except ConnectionAbortedError:
            pass
        except Exception as error:  # noqa: BLE001 - a request's failure is recorded, never a silent dead thread
            completion.status, completion.reason = "failed", f"client error: {type(error).__name__}: {error}"
        finally:
            with run.lock:
                run.connections.pop(index, None)
                done[0] += 1
                run.failed += completion.status == "failed"
            slots.release()
            if progress:
                progress(done[0], count)

    start = time.perf_counter() + 0.05  # a moment to start the dispatcher before the first arrival
    dispatcher = threading.Thread(target=_dispatch, args=(run, arrival, start, slots, send, threads), daemon=True)
    dispatcher.start()
    _monitor(run, arrival, start, options, dispatcher, threads, done, count)
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    return _result(run, workload, start, endpoint, options)


def _dispatch(run: _Run, arrival: np.ndarray, start: float, slots, send, threads: list) -> None:
    for index, at in enumerate(arrival.tolist()):
        delay = start + at - time.perf_counter()
        if delay > 0 and run.stop.wait(delay):
            return
        if not slots.acquire(blocking=False):
            run.cap_waits += 1
            while not slots.acquire(timeout=MONITOR_EVERY_S):
                if run.stop.is_set():
                    return
        if run.stop.is_set():
            slots.release()
            return
        thread = threading.Thread(target=send, args=(index,), daemon=True)
        threads.append(thread)
        thread.start()


def _monitor(run: _Run, arrival: np.ndarray, start: float, options: LoadOptions, dispatcher, threads, done, count) -> None:
    """Wait for the end: every request done, the time limit, or an early stop."""
    rule = options.early_stop
    limit = start + options.time_limit_s if options.time_limit_s else math.inf
    while not run.stop.wait(MONITOR_EVERY_S):
        now = time.perf_counter()
        if done[0] == count and not dispatcher.is_alive():
            return
        if run.failed == done[0] >= min(ALL_FAILED_STOP, count):
            run.halt(f"stopped early: the first {done[0]} requests all failed")
            break
        if now > limit:
            run.halt(f"time limit of {options.time_limit_s:g} s")
            break
        if rule is not None and rule.max_wait is not None:
            # Requests that arrived more than max_wait ago and have no token yet: over the limit whatever comes.
            arrived = int(np.searchsorted(arrival, now - start - rule.max_wait, side="right"))
            late = sum(1 for c in run.completions[:arrived] if not c.token_times)
            if late > rule.max_wait_violations:
                run.halt(f"stopped early: more than {rule.max_wait_violations} requests waited over {rule.max_wait:g} s")
                break
    dispatcher.join(JOIN_TIMEOUT_S)


def _result(run: _Run, workload: Workload, start: float, endpoint: Endpoint, options: LoadOptions) -> RunResult:
    completions = run.completions
    arrival = workload.arrival_s
    counts = np.array([len(c.token_times) for c in completions], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    values = np.array([t - start for c in completions for t in c.token_times], dtype=np.float64)
    first = [c.token_times[0] - start if c.token_times else math.nan for c in completions]
    finish = [c.token_times[-1] - start if c.status == "finished" else math.nan for c in completions]
    status = [c.status for c in completions]
    reason = [c.reason or ("" if c.status == "finished" else "not sent" if math.isnan(c.sent_s) else run.stop_reason or "no answer")
              for c in completions]
    table = requests_table(
        list(range(len(completions))), [0] * len(completions), arrival.tolist(),
        [math.nan] * len(completions),  # when the engine first scheduled it is not visible through the API
        first, finish, status, reason, workload.prompt_tokens.tolist(), workload.output_tokens.tolist(),
        counts.tolist(), [0] * len(completions), values, offsets,
    )
    sent = np.array([c.sent_s - start for c in completions])
    late = sent - arrival
    info = {
        "kind": "real",
        "endpoint": endpoint.url,
        "model": endpoint.model,
        "workload": workload.info,
        "qps": workload.info.get("qps"),
        "latency_source": "real",
        "time_limit_s": options.time_limit_s,
        "stopped_early": run.stop_reason if run.stop_reason.startswith("stopped early") else None,
        "max_in_flight": options.max_in_flight,
        "in_flight_cap_hits": run.cap_waits,
        "send_lateness_s": {"p50": _nan_percentile(late, 50), "p99": _nan_percentile(late, 99)},
        "multi_token_chunks": int(sum(c.multi_token_chunks for c in completions)),
    }
    return RunResult(table, None, info)


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
