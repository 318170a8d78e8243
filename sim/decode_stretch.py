"""Decode stretches: many decode-only iterations of one engine, computed in one step.

Between two events, a decode-only batch repeats with every KV length one longer: the same
requests, no prefill, no admission. The events that end a stretch:
- a completion where requests wait (the freed blocks and batch slot may admit one), a client
  waits for a slot, or finished requests pad a static batch (faster_transformer); a KV block
  boundary the free blocks cannot cover (a preemption); both known ahead from the scheduler's books;
- the next arrival anywhere, and the trial's time limit (a stretch ends before them);
- an early-stop decision (replayed iteration by iteration from the stretch's gaps).
With nothing waiting or part-prefilled, a completion only shrinks the decode set: the stretch goes
on past it in a new segment (the same batch, less the finished requests) until the decode set
empties. Up to the first event, every iteration's end time is a running sum of the compiled latency
model's predictions (LatencyPredictor.decode_iterations: the per-batch numbers, bit for bit),
and the engine waits once for the whole stretch instead of once an iteration. The result is the
iteration-by-iteration path's, bit for bit: the same batches in the log, the same token times, KV
use and early stops (tests/test_decode_stretch.py runs both).

Used where an engine runs alone between events: one pipeline stage (PP = 1), the fitted latency
model (not a caller's function), and, with an early-stop rule, one engine (the rule counts over
all engines in time order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from capsim.profiles.batch import FEATURES
from capsim.profiles.predictor import LatencyPredictor
from capsim.sim.early_stop import CHECK_WAIT_EVERY
from capsim.sim.errors import SimulationError
from capsim.sim.policies import POLICIES
from capsim.sim.result import BATCH_COLUMNS
from capsim.sim.scheduler import UpcomingCompletions

COLUMN = {name: index for index, name in enumerate(BATCH_COLUMNS)}  # a batch-log column's index
MAX_ITERATIONS = 8192  # a stretch's iterations at most (bounds its arrays; a longer one continues in the next)
MIN_ITERATIONS = 8  # shorter stretches go the per-iteration way: an iteration costs ~4 us, a stretch ~45 us


@dataclass
class Segment:
    """Iterations of one decode set in a stretch: the KV blocks each takes follow from its phases."""

    count: int  # iterations
    requests: int  # decode requests in each
    completes: bool  # requests finish in its last iteration
    phases: list | None  # the scheduler's phase_counts for it (None: appends take no blocks)
    first_iteration: int  # the decode iteration its first one is
    freed: int = 0  # KV blocks the completion before it freed

    def appends(self, skip: int = 0) -> int:
        """KV blocks its iterations take, the first `skip` left out (Scheduler.appends_needed)."""
        phases = self.phases
        if phases is None or self.count <= skip:
            return 0
        first, count = self.first_iteration + skip, self.count - skip
        size = len(phases)
        cycle = phases[:1] + phases[:0:-1]  # cycle[i % size]: the phase count that takes blocks at decode iteration i
        start, rest = first % size, count % size
        return sum(phases) * (count // size) + sum((cycle + cycle)[start : start + rest])

    def first_appends(self) -> int:
        """KV blocks its first iteration takes."""
        return 0 if self.phases is None else self.phases[-self.first_iteration % len(self.phases)]

    def each_appends(self) -> np.ndarray:
        """KV blocks each of its iterations takes."""
        if self.phases is None:
            return np.zeros(self.count, dtype=np.int64)
        iterations = self.first_iteration + np.arange(self.count, dtype=np.int64)
        return np.asarray(self.phases, dtype=np.int64)[-iterations % len(self.phases)]


class StretchRun(NamedTuple):
    """One segment of a decode stretch as applied: what the batch log's rows of its iterations
    need (stretch_rows builds them when the batch table is)."""

    replica: int
    engine: int
    start: float  # when its first iteration started
    ends: np.ndarray  # each iteration's end time
    tokens: int  # tokens an iteration (decodes and padding)
    first_kv: int  # decode_kv of its first iteration
    requests: int  # decode requests an iteration (decode_kv grows by this much an iteration)
    used_after_first: int  # KV blocks in use after its first iteration
    segment: Segment
    used_after_last: int  # KV blocks in use after a completing last iteration; -1 where none completes


@dataclass
class Stretch:
    start: float  # when the first iteration (the batch at hand) started
    ends: np.ndarray  # end time of each iteration
    kv: np.ndarray  # decode_kv of each iteration
    segments: list[Segment]  # in order: the decode set shrinks at each completion
    tbt_violations: int | None = None  # the early-stop monitor's count after the stretch
    stop: tuple[str, str] | None = None  # ("tbt" | "wait", reason): the monitor stops the run at the last iteration


def stretches_possible(system, batch_seconds) -> bool:
    """Whether an engine of `system` may run decode stretches at all: one pipeline stage, the
    compiled latency model (its decode_iterations; a caller's function has none), and a policy that
    declares its decode-only batches stretchable. DecodeStretches.plan decides batch by batch."""
    return (
        system.pp == 1 and isinstance(batch_seconds, LatencyPredictor) and POLICIES[system.scheduler].decode_stretches
    )


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
        if (
            batch.prefills
            or batch.preempted
            or len(scheduler.pool.members) > 1
            or (run.monitor is not None and not self.alone)
        ):
            return None
        tokens = batch.num_decodes + batch.padding_seqs
        limit = min(run.next_arrival, run.time_limit)
        if limit != math.inf:
            in_time = (limit - now) / self.predictor(
                tokens, 0, 0, 0, tokens, batch.decode_kv
            )  # iterations before the next arrival, give or take
            if in_time < MIN_ITERATIONS - 1:
                return None
            size = max(MIN_ITERATIONS, min(MAX_ITERATIONS, int(in_time * 1.02) + 8))
        else:
            size = MAX_ITERATIONS
        # Past a completion only where it can change nothing but the decode set: nothing waits or is
        # part-prefilled, and no client waits for a slot (a completion would send its request).
        through = (
            scheduler.decodes_go_on_after_completions
            and not scheduler.waiting
            and not scheduler.prefilling
            and run.slot is None
        )
        upcoming = scheduler.upcoming_completions(through)
        if not through and upcoming.iteration(0) - scheduler.decode_iterations + 1 < MIN_ITERATIONS:
            return None
        while (
            True
        ):  # iterations up to the next arrival: a guess from the first one's time, quadrupled while it falls short
            segments, kv = _layout(scheduler, batch, size, upcoming, through)
            total = len(kv)
            affordable = _affordable(scheduler, segments, total)  # no preemption
            requests = [segment.requests + batch.padding_seqs for segment in segments]
            ends = self.predictor.decode_iterations(requests, requests, kv, [segment.count for segment in segments])
            ends[0] += now  # then a running sum: now + d0, (now + d0) + d1, ...
            ends = np.cumsum(ends, out=ends)
            if ends[-1] > limit or total < size or size == MAX_ITERATIONS or affordable < total:
                break
            size = min(MAX_ITERATIONS, 4 * size)
        count = int(
            np.searchsorted(ends, limit, side="left")
        )  # those that end before the next arrival and the time limit
        if (
            self.arrivals_blind
            and count < total
            and run.next_arrival < run.time_limit
            and ends[count] > run.next_arrival
            and _arrival_not_late(run, ends[count])
            and (run.max_concurrency is None or segments[0].count > count)
        ):
            # And the one in which the request arrives. Under a concurrency cap the arrival reads the
            # requests in flight, which a completion earlier in the stretch (booked at its end) must
            # have left by then: so only where the stretch has none before that iteration.
            count += 1
        count = min(count, affordable)
        if count < MIN_ITERATIONS:
            return None
        stretch = Stretch(now, ends[:count], kv[:count], _cut(segments, count))
        return stretch if run.monitor is None else _early_stop(run.monitor, scheduler, batch, stretch)

    def apply(self, engine, batch, stretch: Stretch) -> None:
        """The stretch's iterations, as the per-iteration path leaves them: the scheduler's books,
        the batch log, the early-stop monitor. A segment's iterations are booked by hand, and
        its completing last one by the scheduler's own complete()."""
        scheduler, run = engine.scheduler, self.run
        start, first, finished = stretch.start, 0, 0
        segments = stretch.segments
        for index, segment in enumerate(segments):
            m, last = segment.requests, first + segment.count
            ends = stretch.ends[first:last]
            # the batch at hand took the first segment's first blocks; a later segment takes its own
            used_after_first, done = scheduler.advance_decodes(
                m,
                ends,
                segment.first_appends() if index else 0,
                segment.appends(skip=1),
                segment.completes,
                int(stretch.kv[last - 1]),
                batch.padding_seqs,
            )
            if segment.completes:
                finished += len(done)
                if index + 1 < len(segments) and len(scheduler.decoding) != segments[index + 1].requests:
                    raise SimulationError("a decode stretch went past a completion its plan did not foresee")
            run.stretch_log.append(
                StretchRun(
                    engine.replica,
                    engine.index,
                    start,
                    ends,
                    m + batch.padding_seqs,
                    int(stretch.kv[first]),
                    m,
                    used_after_first,
                    segment,
                    scheduler.used_blocks() if done else -1,
                )
            )
            start, first = float(ends[-1]), last
        monitor = run.monitor
        if monitor is not None:
            if stretch.tbt_violations is not None:
                monitor.tbt_violations = stretch.tbt_violations
            monitor.batches += len(stretch.ends) - (
                stretch.stop is not None and stretch.stop[0] == "tbt"
            )  # a TBT stop is not counted
            if stretch.stop is not None:
                monitor.stop(stretch.stop[1])
        if finished:
            run.retired(finished)


def stretch_rows(stretches: list[StretchRun]) -> np.ndarray:
    """The batch log's rows (sim.result.BATCH_COLUMNS) of every stretch applied, built at once
    (column-major): each stretch keeps only its arrays while the simulation runs."""
    column = COLUMN
    if not stretches:
        return np.empty((0, len(BATCH_COLUMNS)))
    runs = StretchRun._make(zip(*stretches))  # each field, of every stretch
    counts = np.fromiter(map(len, runs.ends), dtype=np.int64, count=len(stretches))
    firsts = np.cumsum(counts) - counts
    which = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(int(counts.sum())) - firsts[which]

    def each(values) -> np.ndarray:  # a field of every stretch, on each of its iterations' rows
        return np.asarray(values)[which]

    rows = np.zeros((len(which), len(BATCH_COLUMNS)), order="F")  # column-major: the table is built column by column
    rows[:, column["replica"]], rows[:, column["engine"]] = each(runs.replica), each(runs.engine)
    ends = rows[:, column["end_s"]] = np.concatenate(runs.ends)
    starts = rows[:, column["start_s"]]
    starts[1:] = ends[:-1]
    starts[firsts] = runs.start
    rows[:, column["tokens"]] = rows[:, column["decode_seqs"]] = each(runs.tokens)
    rows[:, column["decode_kv"]] = each(runs.first_kv) + each(runs.requests) * within
    # KV blocks each iteration took after its segment's first (Segment.each_appends, for all at once)
    segments = runs.segment
    block_size = max((len(segment.phases) for segment in segments if segment.phases is not None), default=1)
    phases = np.array(
        [[0] * block_size if segment.phases is None else segment.phases for segment in segments], dtype=np.int64
    )
    iteration = (
        np.fromiter((segment.first_iteration for segment in segments), dtype=np.int64, count=len(segments))[which]
        + within
    )
    taken = phases[which, -iteration % block_size]
    taken[firsts] = 0
    running = np.cumsum(taken)
    used = rows[:, column["kv_blocks_used"]]
    used[:] = each(runs.used_after_first) + running - running[firsts][which]
    last_used = np.asarray(runs.used_after_last)
    finished = last_used >= 0  # a completing last iteration: blocks in use after its requests left
    used[(firsts + counts - 1)[finished]] = last_used[finished]
    return rows


def stretch_features(stretches: list, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of batch.FEATURES standing for the stretches' iterations, and how many each stands for:
    a stretch's iterations differ only in decode_kv, which grows, so those within `coverage` (as
    LatencyPredictor.outside_coverage reads it) come first. Two rows a stretch: its first
    iteration for those within, its last for those beyond (count 0 where there are none)."""
    counts = np.fromiter((len(s.ends) for s in stretches), dtype=np.int64, count=len(stretches))
    tokens, kv0, m = (
        np.array([getattr(s, f) for s in stretches], dtype=np.int64) for f in ("tokens", "first_kv", "requests")
    )
    last_kv = kv0 + m * (counts - 1)
    limit = coverage * 1.0001
    width = len(FEATURES)
    first, last = np.zeros((len(counts), width)), np.zeros((len(counts), width))
    first[:, 0] = first[:, 4] = last[:, 0] = last[:, 4] = tokens  # tokens and decode_seqs
    first[:, 5], last[:, 5] = kv0, last_kv
    within = (
        np.floor((limit[5] - kv0) / m).astype(np.int64) + 1
    )  # iterations whose decode_kv is within: kv0 + m i <= limit
    within += kv0 + m * within <= limit[5]  # the float division's rounding, either way
    within -= (within > 0) & (kv0 + m * (within - 1) > limit[5])
    within = np.clip(within, 0, counts)
    within[(first[:, :5] > limit[:5]).any(axis=1)] = 0  # tokens or sequences beyond: every iteration is
    rows = np.concatenate((first, last))
    return rows, np.concatenate((within, counts - within))


def _layout(scheduler, batch, size: int, upcoming: UpcomingCompletions, through: bool):
    """Up to `size` decode iterations from the batch at hand on, cut into segments at the
    completions (only the first where the stretch must end at it): the segments, and each
    iteration's decode_kv."""
    first_iteration, m, kv = scheduler.decode_iterations, batch.num_decodes, batch.decode_kv
    block_size, reserves = scheduler.config.block_size, scheduler.reserves_full_length
    phases = None if reserves else scheduler.phase_counts[:]
    segments, kv_firsts, left, freed = [], [], size, 0
    while True:
        ending = upcoming.iteration(len(segments)) - first_iteration + 1
        count = min(ending, left)
        segments.append(Segment(count, m, count == ending, phases, first_iteration, freed))
        kv_firsts.append(kv)
        left -= count
        if count < ending or not through or not left:
            break
        finished = upcoming.group(len(segments) - 1)[1]
        done = first_iteration + count  # decode iterations after the completing one
        lengths = [r.entry_length + done - r.entry_iteration for r in finished]
        freed = sum(
            r.blocks if reserves else -(-length // block_size) - r.shared_blocks for r, length in zip(finished, lengths)
        )
        kv += m * count - sum(lengths)
        m -= len(finished)
        if not m:
            break  # the decode set empties: the engine goes idle or admits what arrives
        if phases is not None:
            phases = phases[:]
            for r in finished:
                phases[r.phase] -= 1
        first_iteration = done
    if len(segments) == 1:
        return segments, kv_firsts[0] + segments[0].requests * np.arange(segments[0].count, dtype=np.int64)
    # decode_kv grows by the requests of a segment each iteration, and starts each segment afresh
    steps = np.repeat(
        np.array([segment.requests for segment in segments], dtype=np.int64), [segment.count for segment in segments]
    )
    first, last_kv = 0, 0
    for segment, kv0 in zip(segments, kv_firsts):
        steps[first] = kv0 - last_kv
        first += segment.count
        last_kv = kv0 + segment.requests * (segment.count - 1)
    return segments, np.cumsum(steps)


def _affordable(scheduler, segments: list[Segment], total: int) -> int:
    """Iterations whose KV appends the free blocks cover (no preemption), counting the blocks a
    completion frees before the next segment. A request takes a block every block_size
    iterations at most: where the free blocks cover that, no need to count iteration by iteration."""
    free, block_size = scheduler.free_blocks, scheduler.config.block_size
    if segments[0].phases is None or free >= sum(s.requests * (s.count // block_size + 1) for s in segments):
        return total
    taken = [segment.each_appends() for segment in segments]
    taken[0][0] = 0  # the batch at hand took its own
    for segment, appends in zip(segments[1:], taken[1:]):
        appends[0] -= segment.freed
    over = np.flatnonzero(np.cumsum(np.concatenate(taken)) > free)
    return int(over[0]) if len(over) else total


def _cut(segments: list[Segment], count: int) -> list[Segment]:
    """The segments of the first `count` iterations."""
    kept, seen = [], 0
    for segment in segments:
        if seen + segment.count >= count:
            if seen + segment.count > count:
                segment = Segment(
                    count - seen, segment.requests, False, segment.phases, segment.first_iteration, segment.freed
                )
            kept.append(segment)
            return kept
        kept.append(segment)
        seen += segment.count
    return kept


def _arrival_not_late(run, end: float) -> bool:
    """The request arriving in the stretch's last iteration cannot count as late at its end
    (EarlyStopMonitor.late_requests), where the stretch's replay does not see it."""
    monitor = run.monitor
    return monitor is None or monitor.rule.max_wait is None or run.next_arrival >= end - monitor.rule.max_wait


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
        segments = stretch.segments
        if len(segments) == 1:
            continuing = np.full(k, batch.num_decodes, dtype=np.int64)
        else:  # after a completion, the requests left
            continuing = np.repeat(
                np.array([s.requests for s in segments], dtype=np.int64), [s.count for s in segments]
            )
        continuing[0] = batch.num_decodes - scheduler.fresh_decodes
        over = monitor.tbt_violations + np.cumsum(np.where(gaps > rule.max_tbt, continuing, 0))
        crossing = np.flatnonzero(over > rule.max_tbt_violations)
        if len(crossing):
            stop_at = int(crossing[0])
            stop = ("tbt", rule.tbt_lost())
    if rule.max_wait is not None:  # checked after every CHECK_WAIT_EVERY-th counted batch
        first = (-(monitor.batches + 1)) % CHECK_WAIT_EVERY
        for i in range(first, stop_at, CHECK_WAIT_EVERY):
            if monitor.late_requests(ends[i]) > rule.max_wait_violations:
                stop_at, stop = (
                    i,
                    ("wait", rule.wait_lost()),
                )
                break
    last = min(stop_at, k - 1)
    return Stretch(
        stretch.start,
        ends[: last + 1],
        stretch.kv[: last + 1],
        _cut(stretch.segments, last + 1),
        None if over is None else int(over[last]),
        stop,
    )
