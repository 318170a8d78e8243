"""What every scheduler policy shares: the queues, KV blocks, the decode set, preemption.

A policy (policies.py) decides only which requests run in the next batch and how many prompt
tokens each; this base keeps the books. It is pure: no clock of its own, no simulation. The SimPy
replica and the reference engine both call schedule() for a batch, run it (one in simulated time,
one on a device), then call complete() with the time it ended.

The decode set costs O(changes) an iteration, not O(running requests): a request that joins at
decode iteration k0 with KV length L0 has length L0 + (k - k0) before iteration k, makes one
token an iteration, needs a new KV block exactly when that length is a multiple of the block
size (so requests are counted by (L0 - k0) mod block_size), and finishes at a known iteration,
kept on a heap.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from dataclasses import dataclass

from capsim.sim.request import FINISHED, REJECTED, Request


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_size: int = 128  # running requests at most (vLLM's max_num_seqs)
    token_budget: int | None = None  # tokens a batch at most: chunk size / max_num_batched_tokens
    block_size: int = 16
    num_blocks: int = 0  # KV blocks of the replica (or of one pipeline virtual engine)
    watermark: float = 0.01  # fraction of blocks kept free when admitting new requests
    max_model_len: int = 8192  # prompt + output at most; longer requests are rejected
    prefix_caching: bool = False

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be at least 1, got {self.max_batch_size}")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token budget must be at least 1, got {self.token_budget}")
        if self.block_size < 1 or self.num_blocks < 1:
            raise ValueError("block size and number of KV blocks must be positive")


class KVPool:
    """What the schedulers of one replica share: its KV blocks and its waiting queue.

    One scheduler has a pool of its own. Under pipeline parallelism, Sarathi-Serve and Vidur run
    one scheduler a replica over all in-flight micro-batches: capsim gives each micro-batch slot a
    scheduler (its own decode set: a request stays in the slot it joined) and makes them share
    this pool and one batch-size limit. vLLM's virtual engines give each its own pool instead.
    """

    def __init__(self, num_blocks: int):
        self.free_blocks = num_blocks
        self.waiting: deque[Request] = deque()
        self.members: list[Scheduler] = []
        self.peak_running = 0  # the most requests running at once: a batch limit above it never bound


class Batch:
    """One iteration's requests: the prompt chunks it computes and the decode set it advances."""

    __slots__ = ("prefills", "num_decodes", "decode_kv", "padding_seqs", "preempted")

    def __init__(self, num_decodes: int = 0, decode_kv: int = 0, padding_seqs: int = 0):
        self.prefills: list[tuple[Request, int, int]] = []  # (request, context before, chunk)
        self.num_decodes = num_decodes  # the scheduler's decode set ran, this many requests
        self.decode_kv = decode_kv  # sum of their KV lengths
        self.padding_seqs = padding_seqs  # finished requests still occupying a static batch
        self.preempted: list[Request] = []

    def features(self) -> tuple[int, int, int, int, int, int]:
        """(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv)."""
        prefill_tokens = attention = context = 0
        for _, before, chunk in self.prefills:
            prefill_tokens += chunk
            attention += chunk * (before + chunk)
            context += before
        decodes = self.num_decodes + self.padding_seqs
        return (prefill_tokens + decodes, len(self.prefills), attention, context, decodes, self.decode_kv)


class Scheduler:
    """Bookkeeping shared by the policies; subclasses implement schedule()."""

    name = "base"
    reserves_full_length = False  # True: a request's KV for max_model_len is reserved at admission
    # With nothing waiting or part-prefilled, a completion only shrinks the next decode batch (decode stretches go on
    # past it)
    decodes_go_on_after_completions = True
    default_watermark = 0.01  # fraction of KV blocks kept free at admission (vLLM's and Sarathi-Serve's)
    default_budget: int | None = None  # tokens a batch at most, unless set; None: the max model length (whole prompts)
    supports_prefix_caching = False  # shared prompt prefixes are cached and reused
    served_by_vllm = False  # vLLM runs this policy (capsim starts it with `vllm serve`, real.vllm)
    serves_a_disaggregated_pool = True  # can run the prefill or the decode pool of an xPyD deployment
    # Decode-only iterations may run as one decode stretch (sim/decode_stretch.py): the policy's batch
    # between two events is the running decodes, each one token, with nothing else admitted.
    decode_stretches = True

    @classmethod
    def largest_prompt(cls, config: SchedulerConfig) -> int | None:
        """The longest prompt this policy can ever start, where its batching sets one (None: any;
        a request over the max model length is rejected on arrival, and counted, instead)."""
        return None

    def __init__(self, config: SchedulerConfig, pool: KVPool | None = None):
        self.config = config
        self.pool = pool or KVPool(config.num_blocks)
        self.pool.members.append(self)
        self.index = len(self.pool.members) - 1  # the micro-batch slot (or virtual engine) it schedules
        self.waiting = self.pool.waiting
        self.prefilling: dict[int, Request] = {}  # admitted, prompt partly in the KV cache
        self.decoding: dict[int, Request] = {}  # running requests past their prefill
        self.watermark_blocks = int(config.watermark * config.num_blocks)
        self.decode_iterations = 0  # decode iterations completed
        self.decode_end_times = array("d")
        self.kv_sum = 0  # sum of KV lengths of the decode set before the next iteration
        self.phase_counts = [0] * config.block_size
        self.finish_heap: list[tuple[int, int, int, Request]] = []  # (last iteration, id, entry, request)
        self.fresh_decodes = 0  # joined the decode set since the last decode iteration
        self.rejected: list[Request] = []
        self.finished: list[Request] = []
        self.started: list[Request] = []  # in the order of their first batch (the early-stop monitor reads it)
        self.preemptions = 0

    # ---- arrivals -------------------------------------------------------------------------

    def add(self, request: Request) -> None:
        too_long = request.total_tokens > self.config.max_model_len
        if too_long or self.blocks_for(request.total_tokens) > self.config.num_blocks - self.watermark_blocks:
            request.status = REJECTED
            self.rejected.append(request)
            return
        self.waiting.append(request)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding)

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.decoding)

    @property
    def running(self) -> int:
        """Running requests, counted against max_batch_size: those of every scheduler of the pool."""
        members = self.pool.members
        if len(members) == 1:
            return len(self.prefilling) + len(self.decoding)
        return sum(len(s.prefilling) + len(s.decoding) for s in members)

    @property
    def free_blocks(self) -> int:
        return self.pool.free_blocks

    @free_blocks.setter
    def free_blocks(self, value: int) -> None:
        self.pool.free_blocks = value

    # ---- KV blocks --------------------------------------------------------------------------

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    def admission_blocks(self, request: Request) -> int:
        if self.reserves_full_length:
            return self.blocks_for(self.config.max_model_len)
        return self.blocks_for(request.prefill_target)

    def can_admit(self, request: Request) -> bool:
        return self.free_blocks - self.admission_blocks(request) >= self.watermark_blocks

    def admit(self, request: Request) -> None:
        """Move the head of the waiting queue into the running set, with its KV blocks."""
        assert self.waiting[0] is request
        self.waiting.popleft()
        request.engine = self.index
        request.blocks = self.admission_blocks(request)
        self.free_blocks -= request.blocks
        self.prefilling[request.id] = request
        self.pool.peak_running = max(self.pool.peak_running, self.running)

    def appends_needed(self) -> int:
        """New blocks the decode set needs for the next iteration's tokens."""
        if self.reserves_full_length:
            return 0
        return self.phase_counts[-self.decode_iterations % self.config.block_size]

    def make_room_for_decodes(self, batch: Batch) -> None:
        """Preempt (by recompute) the latest arrivals among the decoding requests until the
        others' tokens fit: vLLM v0's first-come-first-served victim order."""
        while self.decoding and self.free_blocks < self.appends_needed():
            victim = max(self.decoding.values(), key=lambda r: (r.arrival_s, r.id))
            self.leave_decode(victim)
            self.preempt(victim, batch)

    def preempt(self, request: Request, batch: Batch) -> None:
        """Drop the request's KV cache; it re-prefills prompt and output so far, first in line."""
        self.prefilling.pop(request.id, None)
        self.free_blocks += request.blocks
        request.blocks = request.shared_blocks = 0
        request.prefill_target = request.prompt_tokens + request.generated
        request.prefilled = 0
        request.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(request)
        batch.preempted.append(request)

    # ---- the decode set -----------------------------------------------------------------------

    def enter_decode(self, request: Request) -> None:
        k0, length = self.decode_iterations, request.prefill_target
        request.entry_iteration, request.entry_length, request.entry_generated = k0, length, request.generated
        request.phase = (length - k0) % self.config.block_size
        self.phase_counts[request.phase] += 1
        self.kv_sum += length
        self.decoding[request.id] = request
        self.fresh_decodes += 1
        last = k0 + (request.output_tokens - request.generated) - 1
        heapq.heappush(self.finish_heap, (last, request.id, k0, request))

    def leave_decode(self, request: Request) -> None:
        """Bring the request's counters up to date and take it out of the decode set."""
        del self.decoding[request.id]
        done = self.decode_iterations - request.entry_iteration
        length = request.entry_length + done
        request.generated = request.entry_generated + done
        if done:
            request.spans.append((request.entry_iteration, self.decode_iterations - 1, self.index))
        self.phase_counts[request.phase] -= 1
        self.kv_sum -= length
        if not self.reserves_full_length:
            request.blocks = self.blocks_for(length) - request.shared_blocks
        request.entry_iteration = -1

    # ---- one batch ------------------------------------------------------------------------------

    def schedule(self, now: float) -> Batch | None:
        raise NotImplementedError

    def add_prefill(self, batch: Batch, request: Request, chunk: int, now: float) -> None:
        batch.prefills.append((request, request.prefilled, chunk))
        if request.scheduled_s != request.scheduled_s:  # NaN: its first batch
            request.scheduled_s = now
            self.started.append(request)

    def decode_part(self, batch: Batch) -> None:
        """Put the whole decode set in the batch, making room for its tokens first."""
        if not self.decoding:
            return
        pool = self.pool
        needed = self.appends_needed()
        if pool.free_blocks < needed:
            self.make_room_for_decodes(batch)
            if not self.decoding:
                return
            needed = self.appends_needed()
        pool.free_blocks -= needed
        batch.num_decodes, batch.decode_kv = len(self.decoding), self.kv_sum

    def complete(self, batch: Batch, now: float) -> list[Request]:
        """The batch ended at `now`: advance decodes, record tokens, retire finished requests."""
        finished = []
        if batch.num_decodes:
            self.fresh_decodes = 0
            self.decode_iterations += 1
            self.decode_end_times.append(now)
            self.kv_sum += len(self.decoding)
            heap = self.finish_heap
            while heap and heap[0][0] < self.decode_iterations:
                _, _, entry, request = heapq.heappop(heap)
                if request.entry_iteration != entry:
                    continue  # preempted since it was pushed
                self.leave_decode(request)
                finished.append(self.retire(request, now))
        for request, _, chunk in batch.prefills:
            request.prefilled += chunk
            if request.prefilled < request.prefill_target:
                continue
            del self.prefilling[request.id]
            request.generated += 1  # a completed prefill samples the next token
            request.extra_tokens.append(now)
            if request.first_token_s != request.first_token_s:
                request.first_token_s = now
            if request.generated >= request.output_tokens:
                finished.append(self.retire(request, now))
            else:
                self.enter_decode(request)
        return finished

    def upcoming_completions(self, all_of_them: bool) -> UpcomingCompletions:
        """The coming completions of the decode set (the first only, unless `all_of_them`)."""
        return UpcomingCompletions(self, all_of_them)

    def advance_decodes(
        self, requests: int, ends, first_blocks: int, later_blocks: int, completes: bool, last_kv: int, padding: int
    ) -> tuple[int, list[Request]]:
        """Decode-only iterations of the same `requests` run at once (a decode stretch,
        sim/decode_stretch.py), left as that many complete() calls leave them: `ends`, each one's end
        time; `first_blocks` and `later_blocks`, the KV blocks the first and the later ones take
        (the first's are 0 where schedule() took them); where the last `completes` requests, it goes
        through complete() itself (`last_kv`: its decode_kv). The blocks in use after the first
        iteration, and the requests that finished."""
        self.fresh_decodes = 0
        self.free_blocks -= first_blocks
        used_after_first = self.used_blocks()
        self.free_blocks -= later_blocks
        booked = len(ends) - completes
        self.decode_iterations += booked
        self.decode_end_times.frombytes(ends[:booked].tobytes())
        self.kv_sum += booked * requests
        if not completes:
            return used_after_first, []
        last = Batch(num_decodes=requests, decode_kv=last_kv, padding_seqs=padding)
        return used_after_first, self.complete(last, float(ends[-1]))

    def retire(self, request: Request, now: float) -> Request:
        self.free_blocks += request.blocks
        request.blocks = 0
        request.status = FINISHED
        request.finish_s = now
        self.finished.append(request)
        return request

    def abort(self, request: Request) -> bool:
        """Drop a request wherever it is (a client went away); False if it had already left."""
        if request.entry_iteration >= 0 and request.id in self.decoding:
            self.leave_decode(request)  # its heap entry goes stale and is skipped
        elif self.prefilling.pop(request.id, None) is None:
            try:
                self.waiting.remove(request)
            except ValueError:
                return False
            return True
        self.free_blocks += request.blocks
        request.blocks = 0
        return True

    def used_blocks(self) -> int:
        return self.config.num_blocks - self.free_blocks


class UpcomingCompletions:
    """The decode set's coming completions in order: (decode iteration, requests that finish in it),
    for a decode stretch to plan by (Scheduler.upcoming_completions). Read off the finish heap,
    stale entries dropped; a copy of it where more than the first are needed."""

    def __init__(self, scheduler, all_of_them: bool):
        heap = scheduler.finish_heap
        while heap and heap[0][3].entry_iteration != heap[0][2]:  # preempted since it was pushed: skipped anyway
            heapq.heappop(heap)
        self.heap = heap[:] if all_of_them else heap
        self.groups: list[tuple[int, list]] = []

    def iteration(self, index: int) -> int:
        """The index-th completing decode iteration; a huge number where there is none."""
        if index == 0 and not self.groups:
            return self.heap[0][0] if self.heap else 1 << 62
        group = self.group(index)
        return group[0] if group else 1 << 62

    def group(self, index: int) -> tuple[int, list] | None:
        heap = self.heap
        while len(self.groups) <= index:
            while heap and heap[0][3].entry_iteration != heap[0][2]:
                heapq.heappop(heap)
            if not heap:
                return None
            last, requests = heap[0][0], []
            while heap and heap[0][0] == last:
                _, _, entry, request = heapq.heappop(heap)
                if request.entry_iteration == entry:
                    requests.append(request)
            self.groups.append((last, requests))
        return self.groups[index]
