"""The benchmark client of a closed loop: part of the workload, since it shapes what is measured.

A closed loop of N users sends a request whenever one of its N in flight ends. What differs
between the tools that produce real numbers:
- how the users start: all at once (aiperf, `vllm bench serve --max-concurrency` with
  `--request-rate inf`, GuideLLM's concurrent mode), staggered by a fixed gap, or ramped evenly
  over a time (aiperf's --concurrency-ramp-duration). With identical lengths, users that start
  together move in waves: their prompts meet in the same batches, which sets the TTFT;
- warm-up: requests sent first and left out of the figures; aiperf lets them all finish before
  measuring (the measured phase starts from an idle engine, so a simulation skips them), others
  run straight on (they are simulated and dropped). Cool-down: requests dropped at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capsim.traces.errors import TraceError
from capsim.traces.workload import Workload

STARTS = ("together", "staggered", "ramp")
AIPERF_ROUNDS = 20  # AIConfigurator's benchmark script: 20 x concurrency requests ...
AIPERF_WARMUP_ROUNDS = 2  # ... after 2 x concurrency warm-up requests


@dataclass(frozen=True)
class ClosedLoop:
    users: int
    requests: int  # measured requests
    warmup: int = 0  # sent before them and left out
    cooldown: int = 0  # sent after them and left out
    start: str = "together"  # together | staggered | ramp
    start_s: float = 0.0  # staggered: seconds between two users' first sends; ramp: seconds to the last user's
    warmup_drains: bool = False  # True: the warm-up finishes before the measured requests start (aiperf)
    length_ratio: float = 1.0  # < 1: each length drawn uniformly from ratio x L .. L (the random-range-ratio of
    # the vLLM benchmark_serving.py fork InferenceMAX runs; vLLM's own spreads L(1 - r) .. L(1 + r) now)
    dataset_entries: int | None = None  # distinct prompts the client cycles through (aiperf: 100); None: all distinct
    seed: int = 0
    tool: str = "capsim"  # whose defaults these are, for the outputs

    def __post_init__(self):
        if self.users < 1 or self.requests < 1 or self.warmup < 0 or self.cooldown < 0:
            raise TraceError(
                f"a closed loop needs at least one user and one measured request, got {self.users} users, "
                f"{self.requests} requests, warm-up {self.warmup}, cool-down {self.cooldown}"
            )
        if self.start not in STARTS:
            raise TraceError(f"unknown start {self.start!r}; choose one of {', '.join(STARTS)}")
        if self.dataset_entries is not None and self.dataset_entries < 1:
            raise TraceError(f"dataset entries must be at least 1, got {self.dataset_entries}")
        if not 0 < self.length_ratio <= 1:
            raise TraceError(f"length ratio must be in (0, 1], got {self.length_ratio}")
        if self.start_s < 0 or (self.start == "together") != (self.start_s == 0):
            raise TraceError(
                f"start {self.start}: give seconds > 0 for staggered or ramp, none for together (got {self.start_s})"
            )

    @classmethod
    def aiperf(cls, users: int, dataset_entries: int | None = None) -> ClosedLoop:
        """AIConfigurator's generated aiperf run: what the silicon sample's rows are. aiperf cycles
        through --num-dataset-entries prompts (100 unless told), which an engine with prefix caching
        computes once each; the sample's 16-bit runs took every prompt's prefill (their TTFT says
        so), so by default every prompt is new here. `dataset_entries` gives the reuse."""
        return cls(
            users,
            AIPERF_ROUNDS * users,
            warmup=AIPERF_WARMUP_ROUNDS * users,
            warmup_drains=True,
            dataset_entries=dataset_entries,
            tool="aiperf",
        )

    @classmethod
    def inferencemax(cls, users: int) -> ClosedLoop:
        """InferenceMAX's client: benchmark_serving.py --request-rate inf --max-concurrency c
        --num-prompts 10c --random-range-ratio 0.8 --ignore-eos, no warm-up."""
        return cls(users, 10 * users, length_ratio=0.8, tool="InferenceMAX benchmark_serving")

    @property
    def simulates_warmup(self) -> bool:
        """A drained warm-up leaves nothing behind, so it is skipped, but where prompts repeat it
        leaves them cached: then it runs, straight into the measured requests (the lockstep of
        users starting together carries on through it instead of starting again)."""
        return not self.warmup_drains or self.dataset_entries is not None

    @property
    def simulated_requests(self) -> int:
        return (self.warmup if self.simulates_warmup else 0) + self.requests + self.cooldown

    def first_sends(self) -> np.ndarray:
        """Seconds at which each user sends its first request."""
        users = np.arange(self.users, dtype=np.float64)
        if self.start == "staggered":
            return users * self.start_s
        if self.start == "ramp":
            return users * (self.start_s / max(self.users - 1, 1))
        return np.zeros(self.users)

    def workload(self, prompt_tokens: int, output_tokens: int) -> Workload:
        """Fixed-length requests in send order: the first `users` at their start, the rest due at
        once (the concurrency cap sends each when a slot frees). Requests go out in this order, so
        a user's second request waits for the last user's first: a staggered or ramped start is
        exact only while it spreads over less than one request's life."""
        count = self.simulated_requests
        arrival = np.zeros(count)
        first = self.first_sends()[:count]
        arrival[: len(first)] = first
        arrival = np.maximum.accumulate(arrival)  # send order is arrival order
        prompts, outputs = np.full(count, prompt_tokens), np.full(count, output_tokens)
        if self.length_ratio < 1:
            rng = np.random.default_rng(self.seed)
            prompts = rng.integers(int(prompt_tokens * self.length_ratio), prompt_tokens + 1, count)
            outputs = rng.integers(max(int(output_tokens * self.length_ratio), 1), output_tokens + 1, count)
        shared = {}
        if self.dataset_entries is not None:  # request i sends prompt i mod entries: the same tokens each time
            shared = {"prefix_group": np.arange(count) % self.dataset_entries, "prefix_tokens": prompts}
        return Workload.from_arrays(
            prompts,
            outputs,
            arrival,
            **shared,
            info={"trace": f"fixed {prompt_tokens} in / {output_tokens} out", "client": self.words},
        )

    def measured(self) -> slice:
        """The simulated requests (in send order) that count."""
        skip = self.warmup if self.simulates_warmup else 0
        return slice(skip, skip + self.requests)

    @property
    def words(self) -> str:
        start = {
            "together": "all users at once",
            "staggered": f"users {self.start_s:g} s apart",
            "ramp": f"users ramped over {self.start_s:g} s",
        }[self.start]
        warmup = (
            f", {self.warmup} warm-up requests {'finished first' if self.warmup_drains else 'dropped'}"
            if self.warmup
            else ""
        )
        cooldown = f", last {self.cooldown} dropped" if self.cooldown else ""
        lengths = f", lengths uniform in {self.length_ratio:g} L .. L" if self.length_ratio < 1 else ", fixed lengths"
        lengths += f", {self.dataset_entries} distinct prompts sent in turn" if self.dataset_entries else ""
        measured = f"{self.requests} requests measured{warmup}{cooldown}{lengths}"
        return f"{self.tool} closed loop: {self.users} users, {start}, {measured}"
