"""Decode stretches: many decode-only iterations of one engine, computed in one step.

Between two events, a decode-only batch repeats with every KV length one longer: the same
requests, no prefill, no admission. The events that end a stretch:
- a completion (the decode set's finish heap), or a KV block boundary the free blocks cannot
  cover (a preemption), both known ahead from the scheduler's books;
- the next arrival anywhere, and the trial's time limit (a stretch ends before them);
- an early-stop decision (replayed iteration by iteration from the stretch's gaps).
Up to the first of these, every iteration's end time is a running sum of the compiled latency
model's predictions (LatencyPredictor.decode_iterations: the per-batch numbers, bit for bit),
and the engine waits once for the whole stretch instead of once an iteration. The result is the
iteration-by-iteration path's, bit for bit: the same batches in the log, the same token times, KV
use and early stops (tests/test_decode_stretch.py runs both).

Used where an engine runs alone between events: one pipeline stage (PP = 1), the fitted latency
model (not a caller's function), and, with an early-stop rule, one engine (the rule counts over
all engines in time order).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from capsim.profiles.batch import FEATURES
from capsim.sim.early_stop import CHECK_WAIT_EVERY
from capsim.sim.scheduler import Batch

MAX_ITERATIONS = 8192  # a stretch's iterations at most (bounds its arrays; a longer one continues in the next)
MIN_ITERATIONS = 8  # shorter stretches go the per-iteration way: an iteration costs ~5 us, a stretch ~40 us


@dataclass
class Stretch:
    start: float  # when the first iteration (the batch at hand) started
    ends: np.ndarray  # end time of each iteration
    appends: np.ndarray  # KV blocks each iteration after the first takes (the first took its own)
    kv: np.ndarray  # decode_kv of each iteration
    completes: bool = False  # requests finish in the last iteration: it ends with the scheduler's own complete()
    tbt_violations: int | None = None  # the early-stop monitor's count after the stretch
    stop: tuple[str, str] | None = None  # ("tbt" | "wait", reason): the monitor stops the run at the last iteration


class DecodeStretches:
    """Plans and applies the decode stretches of one engine."""

    def __init__(self, predictor, run, alone: bool, arrivals_blind: bool):
        self.predictor, self.run = predictor, run
        self.alone = alone  # the only engine of the run: its iterations are the run's, in order
        # Routing reads no engine's state (one replica, or round robin): a stretch may run through
        # the iteration in which the next request arrives, which only joins the waiting queue.
        self.arrivals_blind = arrivals_blind

    def plan(self, scheduler, batch, now: float) -> Stretch | None:
        """The stretch that starts with `batch` (decode-only), or None where one iteration is all
        there is before an event. A decode-only batch with requests waiting means the policy refused
        them, and nothing they wait for (blocks, batch slots, budget) comes back before a completion."""
        run = self.run
        if batch.prefills or batch.preempted or len(scheduler.pool.members) > 1 or (run.monitor is not None and not self.alone):
            return None
        until_completion = _iterations_to_completion(scheduler)  # the batch at hand's and those after, to the completing one
        horizon = min(MAX_ITERATIONS, until_completion)
        if horizon < MIN_ITERATIONS:
            return None
        m, tokens = batch.num_decodes, batch.num_decodes + batch.padding_seqs
        limit = min(run.next_arrival, run.time_limit)
        first = self.predictor(tokens, 0, 0, 0, tokens, batch.decode_kv)
        if limit != math.inf:
            in_time = (limit - now) / first  # iterations that fit before the next arrival, give or take
            if in_time < MIN_ITERATIONS - 1:
                return None
            size = max(MIN_ITERATIONS, min(horizon, int(in_time * 1.02) + 8))
        else:
            size = horizon
        while True:  # iterations up to the next arrival: a guess from the first one's time, quadrupled while it falls short
            appends = _appends(scheduler, scheduler.decode_iterations + 1, size - 1)
            affordable = 1 + int(np.searchsorted(np.cumsum(appends), scheduler.free_blocks, side="right"))  # no preemption
            kv = batch.decode_kv + m * np.arange(size, dtype=np.int64)
            ends = np.cumsum(np.concatenate(([now], self.predictor.decode_iterations(tokens, tokens, kv))))[1:]
            if ends[-1] > limit or size == horizon or affordable < size:
                break
            size = min(horizon, 4 * size)
        count = int(np.searchsorted(ends, limit, side="left"))  # those that end before the next arrival and the time limit
        if (self.arrivals_blind and count < len(ends) and run.next_arrival < run.time_limit and ends[count] > run.next_arrival
                and _arrival_not_late(run, ends[count])):
            count += 1  # and the one in which the request arrives
        count = min(count, affordable)
        if count < MIN_ITERATIONS:
            return None
        stretch = Stretch(now, ends[:count], appends[:count - 1], kv[:count], completes=count == until_completion)
        return stretch if run.monitor is None else _early_stop(run.monitor, scheduler, batch, stretch)

    def apply(self, engine, batch, stretch: Stretch) -> None:
        """The stretch's iterations, as the per-iteration path leaves them: the scheduler's books,
        the batch log, the early-stop monitor."""
        scheduler, run = engine.scheduler, self.run
        k, m, tokens = len(stretch.ends), batch.num_decodes, batch.num_decodes + batch.padding_seqs
        used_after_first = scheduler.used_blocks()
        scheduler.free_blocks -= int(stretch.appends.sum())
        scheduler.fresh_decodes = 0
        booked = k - stretch.completes  # iterations kept by hand; a completing last one by complete()
        scheduler.decode_iterations += booked
        scheduler.decode_end_times.frombytes(stretch.ends[:booked].tobytes())
        scheduler.kv_sum += booked * m
        finished = []
        if stretch.completes:
            last = Batch(num_decodes=m, decode_kv=int(stretch.kv[-1]), padding_seqs=batch.padding_seqs)
            finished = scheduler.complete(last, float(stretch.ends[-1]))
        run.stretch_log.append((engine.replica, engine.index, stretch.start, stretch.ends, tokens, int(stretch.kv[0]), m,
                                used_after_first, stretch.appends, scheduler.used_blocks() if finished else -1))
        monitor = run.monitor
        if monitor is not None:
            if stretch.tbt_violations is not None:
                monitor.tbt_violations = stretch.tbt_violations
            monitor.batches += k - (stretch.stop is not None and stretch.stop[0] == "tbt")  # a TBT stop is not counted
            if stretch.stop is not None:
                monitor.stop(stretch.stop[1])
        if finished:
            run.retired(len(finished))


def stretch_rows(stretches: list) -> np.ndarray:
    """The batch log's rows (sim.result.BATCH_COLUMNS) of every stretch applied, built at once:
    each stretch keeps only its arrays while the simulation runs."""
    width = 6 + len(FEATURES)
    if not stretches:
        return np.empty((0, width))
    replica, engine, start, ends, tokens, kv0, m, used0, appends, last_used = zip(*stretches)
    counts = np.fromiter(map(len, ends), dtype=np.int64, count=len(ends))
    firsts = np.cumsum(counts) - counts
    which = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(int(counts.sum())) - firsts[which]
    rows = np.zeros((len(which), width))
    rows[:, 0], rows[:, 1] = np.asarray(replica)[which], np.asarray(engine)[which]
    rows[:, 3] = np.concatenate(ends)
    rows[1:, 2] = rows[:-1, 3]
    rows[firsts, 2] = start
    rows[:, 4] = rows[:, 8] = np.asarray(tokens)[which]  # tokens and decode_seqs
    rows[:, 9] = np.asarray(kv0)[which] + np.asarray(m)[which] * within  # decode_kv
    taken = np.zeros(len(which), dtype=np.int64)  # KV blocks each iteration took after the stretch's first
    later = np.ones(len(which), dtype=bool)
    later[firsts] = False
    taken[later] = np.concatenate(appends)
    running = np.cumsum(taken)
    rows[:, 11] = np.asarray(used0)[which] + running - running[firsts][which]
    last_used = np.asarray(last_used)
    finished = last_used >= 0  # a completing last iteration: blocks in use after its requests left
    rows[(firsts + counts - 1)[finished], 11] = last_used[finished]
    return rows


def stretch_features(stretches: list, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of batch.FEATURES standing for the stretches' iterations, and how many each stands for:
    a stretch's iterations differ only in decode_kv, which grows, so those within `coverage` (as
    LatencyPredictor.outside_coverage reads it) come first. Two rows a stretch: its first
    iteration for those within, its last for those beyond (count 0 where there are none)."""
    _, _, _, ends, tokens, kv0, m, _, _, _ = zip(*stretches)
    counts = np.fromiter(map(len, ends), dtype=np.int64, count=len(ends))
    tokens, kv0, m = (np.asarray(v, dtype=np.int64) for v in (tokens, kv0, m))
    last_kv = kv0 + m * (counts - 1)
    limit = coverage * 1.0001
    width = len(FEATURES)
    first, last = np.zeros((len(counts), width)), np.zeros((len(counts), width))
    first[:, 0] = first[:, 4] = last[:, 0] = last[:, 4] = tokens  # tokens and decode_seqs
    first[:, 5], last[:, 5] = kv0, last_kv
    within = np.floor((limit[5] - kv0) / m).astype(np.int64) + 1  # iterations whose decode_kv is within: kv0 + m i <= limit
    within += kv0 + m * within <= limit[5]  # the float division's rounding, either way
    within -= (within > 0) & (kv0 + m * (within - 1) > limit[5])
    within = np.clip(within, 0, counts)
    within[(first[:, :5] > limit[:5]).any(axis=1)] = 0  # tokens or sequences beyond: every iteration is
    rows = np.concatenate((first, last))
    return rows, np.concatenate((within, counts - within))


def _iterations_to_completion(scheduler) -> int:
    """Decode iterations from the batch at hand to the first in which a request finishes, both counted."""
    heap = scheduler.finish_heap
    while heap and heap[0][3].entry_iteration != heap[0][2]:  # preempted since it was pushed: skipped anyway
        heapq.heappop(heap)
    return heap[0][0] - scheduler.decode_iterations + 1 if heap else MAX_ITERATIONS + 1


def _arrival_not_late(run, end: float) -> bool:
    """The request arriving in the stretch's last iteration cannot count as late at its end
    (EarlyStopMonitor.late_requests), where the stretch's replay does not see it."""
    monitor = run.monitor
    return monitor is None or monitor.rule.max_wait is None or run.next_arrival >= end - monitor.rule.max_wait


def _appends(scheduler, first_iteration: int, count: int) -> np.ndarray:
    """KV blocks the decode set takes at each of `count` iterations from `first_iteration` on
    (Scheduler.appends_needed, ahead of time: the phases do not change in a stretch)."""
    if scheduler.reserves_full_length or count <= 0:
        return np.zeros(max(count, 0), dtype=np.int64)
    phases = np.asarray(scheduler.phase_counts, dtype=np.int64)
    return phases[-(first_iteration + np.arange(count, dtype=np.int64)) % scheduler.config.block_size]


def _early_stop(monitor, scheduler, batch, stretch: Stretch) -> Stretch | None:
    """The monitor replayed over the stretch (EarlyStopMonitor.after_batch, iteration by
    iteration): the stretch cut where the rule stops the run."""
    rule, ends = monitor.rule, stretch.ends
    k = len(ends)
    stop_at, stop = k, None
    over = None
    if rule.max_tbt is not None:
        if not len(scheduler.decode_end_times):
            return None  # the first decode iteration has no gap: the per-iteration path takes it
        gaps = np.diff(np.concatenate(([scheduler.decode_end_times[-1]], ends)))
        continuing = np.full(k, batch.num_decodes, dtype=np.int64)
        continuing[0] = batch.num_decodes - scheduler.fresh_decodes
        over = monitor.tbt_violations + np.cumsum(np.where(gaps > rule.max_tbt, continuing, 0))
        crossing = np.flatnonzero(over > rule.max_tbt_violations)
        if len(crossing):
            stop_at = int(crossing[0])
            stop = ("tbt", f"more than {rule.max_tbt_violations} token gaps over {rule.max_tbt:g} s")
    if rule.max_wait is not None:  # checked after every CHECK_WAIT_EVERY-th counted batch
        first = (-(monitor.batches + 1)) % CHECK_WAIT_EVERY
        for i in range(first, stop_at, CHECK_WAIT_EVERY):
            if monitor.late_requests(ends[i]) > rule.max_wait_violations:
                stop_at, stop = i, ("wait", f"more than {rule.max_wait_violations} requests waited over {rule.max_wait:g} s")
                break
    last = min(stop_at, k - 1)
    completes = stretch.completes and last == k - 1
    return Stretch(stretch.start, ends[:last + 1], stretch.appends[:last], stretch.kv[:last + 1], completes,
                   None if over is None else int(over[last]), stop)
