"""Stop a trial once its SLO can no longer be met, so that a failing trial costs little.

The rule sees only lower bounds on violations, so it never stops a trial that could pass:
- TBT: after a decode iteration that took longer than max_tbt since the previous one, every
  request that produced a token in both has a gap that long. Past max_tbt_violations such gaps,
  the TBT percentile is lost.
- waiting: a request still unscheduled max_wait after it arrived has a scheduling delay (and a
  TTFT) over the limit whatever happens next, and so has one that was first scheduled later than
  that. Past max_wait_violations of them, the TTFT (or scheduling-delay) percentile is lost.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECK_WAIT_EVERY = 64  # batches between scans of the waiting queues
ROUNDING_S = 1e-6  # a result's times are rounded to whole microseconds: a delay counts as late only past that


@dataclass(frozen=True)
class EarlyStop:
    max_tbt: float | None = None
    max_tbt_violations: int = 0
    max_wait: float | None = None
    max_wait_violations: int = 0

    def tbt_lost(self) -> str:
        """Why a run stops on its token gaps (the per-batch monitor and a decode stretch's replay)."""
        return f"more than {self.max_tbt_violations} token gaps over {self.max_tbt:g} s"

    def wait_lost(self) -> str:
        """Why a run stops on its waiting requests."""
        return f"more than {self.max_wait_violations} requests waited over {self.max_wait:g} s"

    def parts(self) -> list[EarlyStop]:
        """The rule's TBT part and its waiting part, each a rule alone."""
        tbt = EarlyStop(max_tbt=self.max_tbt, max_tbt_violations=self.max_tbt_violations)
        wait = EarlyStop(max_wait=self.max_wait, max_wait_violations=self.max_wait_violations)
        return [part for part in (tbt, wait) if part != EarlyStop()]

    def part_that_stopped(self, reason: str) -> EarlyStop | None:
        """The part of the rule that stopped a run with `reason`. The monitor never changes the run,
        so that part alone stops it at the same batch, and every rule that has it fails it: the
        run is cached under that part (SLOs that share one clause share their cut trials)."""
        for part in self.parts():
            if reason == (part.tbt_lost() if part.max_tbt is not None else part.wait_lost()):
                return part
        return None


class EarlyStopMonitor:
    def __init__(self, rule: EarlyStop, schedulers: list, on_stop):
        self.rule = rule
        self.schedulers = schedulers
        self.on_stop = on_stop
        self.tbt_violations = 0
        self.batches = 0
        self.started_late = 0  # requests whose first batch came more than max_wait after they arrived
        self.started_seen = [0] * len(schedulers)  # of each scheduler's `started`, those counted
        self.stopped = None

    def after_batch(self, continuing: int, gap: float | None, now: float) -> None:
        """continuing: requests whose token in this batch follows one in the previous decode batch,
        `gap` after it (None: the batch made no decode tokens)."""
        rule = self.rule
        if rule.max_tbt is not None and gap is not None and gap > rule.max_tbt:
            self.tbt_violations += continuing
            if self.tbt_violations > rule.max_tbt_violations:
                return self.stop(rule.tbt_lost())
        self.batches += 1
        if rule.max_wait is not None and self.batches % CHECK_WAIT_EVERY == 0:
            if self.late_requests(now) > rule.max_wait_violations:
                return self.stop(rule.wait_lost())

    def late_requests(self, now: float) -> int:
        """Requests waiting since more than max_wait ago, never scheduled, and those that were
        first scheduled more than max_wait after they arrived."""
        late_after = self.rule.max_wait + ROUNDING_S
        for i, scheduler in enumerate(self.schedulers):
            started = scheduler.started
            for request in started[self.started_seen[i] :]:
                if request.scheduled_s - request.arrival_s > late_after:
                    self.started_late += 1
            self.started_seen[i] = len(started)
        late = self.started_late
        queues = {id(s.waiting): s.waiting for s in self.schedulers}  # schedulers of a pool share one
        for waiting in queues.values():
            for request in waiting:
                if request.arrival_s >= now - self.rule.max_wait:
                    break
                if request.scheduled_s != request.scheduled_s:  # never scheduled
                    late += 1
        return late

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            self.on_stop()
