"""The scheduler policies, by the names users know them. Each decides one batch; the books are
kept by Scheduler (scheduler.py).

- vllm_v0: prefill-prioritizing; a batch is all prefills or all decodes (the vLLM paper, and the
  baseline of Sarathi-Serve). Whole prompts, up to the token budget (default: max model length).
- orca: iteration-level; whole prompts join the running decodes. Reserves KV for the maximum
  length at admission, as Orca's allocator does, so it never preempts; keeps no watermark.
- sarathi: chunked prefill under a token budget (the chunk size); decodes first, then the prompts
  already started, then new ones; decodes never stall behind a prompt.
- vllm_v1: today's vLLM: one token budget for running requests first, then waiting ones, chunked
  prefill (a larger default budget than sarathi's chunk); optional prefix caching.
- faster_transformer: request-level static batching; a batch runs until its longest request
  ends, finished requests padding it, and only then do new requests start.
- sglang: SGLang's default scheduler: prefill first (a batch is all prompt chunks, the running
  decodes wait), chunked at --chunked-prefill-size, one part-prefilled request at a time;
  optional prefix caching (its radix cache).
- trtllm: TensorRT-LLM's in-flight batching (trtllm-serve defaults): the running decodes, then
  whole prompts up to max_num_tokens; KV for prompt + max tokens reserved at admission
  (GUARANTEED_NO_EVICT), so it never preempts; optional prefix caching (KV block reuse).
"""

from __future__ import annotations

from capsim.sim.request import Request
from capsim.sim.scheduler import Batch, KVPool, Scheduler, SchedulerConfig


class VllmV0(Scheduler):
    name = "vllm_v0"
    served_by_vllm = True

    @classmethod
    def largest_prompt(cls, config: SchedulerConfig) -> int | None:
        return config.token_budget  # a prompt is prefilled whole, within the budget

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        budget = self.config.token_budget or self.config.max_model_len
        while self.waiting:
            request = self.waiting[0]
            if (
                self.running >= self.config.max_batch_size
                or request.prefill_target > budget
                or not self.can_admit(request)
            ):
                break
            self.admit(request)
            budget -= request.prefill_target
            self.add_prefill(batch, request, request.prefill_target, now)
        if batch.prefills:
            return batch
        self.decode_part(batch)
        return batch if batch.num_decodes else None


class Orca(Scheduler):
    name = "orca"
    reserves_full_length = True
    default_watermark = 0.0  # Sarathi-Serve's Orca block manager keeps no blocks back

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        while self.waiting and self.running < self.config.max_batch_size and self.can_admit(self.waiting[0]):
            request = self.waiting[0]
            self.admit(request)
            self.add_prefill(batch, request, request.prefill_target, now)
        self.decode_part(batch)
        return batch if batch.prefills or batch.num_decodes else None


class Sarathi(Scheduler):
    name = "sarathi"
    default_budget = 512
    served_by_vllm = True  # vLLM's chunked prefill with decodes first

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        self.decode_part(batch)
        self.prefill_part(batch, (self.config.token_budget or self.default_budget) - batch.num_decodes, now)
        return batch if batch.prefills or batch.num_decodes else None

    def prefill_part(self, batch: Batch, budget: int, now: float) -> None:
        """Prompt chunks within the budget: the prompts already started, then new ones."""
        for request in self.prefilling.values():  # adding chunks leaves the dict as it is
            if budget <= 0:
                break
            budget -= self.chunk(batch, request, budget, now)
        waiting = self.waiting
        while waiting and budget > 0 and self.running < self.config.max_batch_size:
            request = waiting[0]
            if not self.can_admit(request):
                break
            self.admit(request)
            budget -= self.chunk(batch, request, budget, now)

    def chunk(self, batch: Batch, request: Request, budget: int, now: float) -> int:
        size = min(request.remaining_prefill, budget)
        self.add_prefill(batch, request, size, now)
        return size


class VllmV1(Sarathi):
    """Sarathi's batch shape with vLLM v1's default budget, and prefix caching.

    Prefix caching: the first requests of a prefix group compute the shared prefix and leave its
    full blocks cached; a later request of the group skips those tokens while they are cached.
    Cached blocks no running request uses are freed, oldest first, when memory runs short.
    """

    name = "vllm_v1"
    default_budget = 2048
    supports_prefix_caching = True

    @classmethod
    def serve_defaults(cls, memory_bytes: int, hardware: str) -> dict:
        """`vllm serve`'s limits on this GPU (EngineArgs.get_batch_defaults): larger on 70 GiB+ GPUs but A100;
        prefix caching on, as V1 has it by default."""
        if memory_bytes >= 70 * 2**30 and not hardware.startswith("A100"):
            return {"token_budget": 8192, "max_batch_size": 1024, "prefix_caching": True}
        return {"token_budget": 2048, "max_batch_size": 256, "prefix_caching": True}

    def __init__(self, config: SchedulerConfig, pool: KVPool | None = None):
        super().__init__(config, pool)
        self.prefix_cache: dict[int, list[int]] = {}  # group -> [blocks, running users]; order = LRU
        self.prefix_hits = 0

    def admission_blocks(self, request: Request) -> int:
        return self.blocks_for(request.prefill_target) - self.cached_prefix_blocks(request)

    def cached_prefix_blocks(self, request: Request) -> int:
        entry = self.prefix_cache.get(request.prefix_group) if self.config.prefix_caching else None
        return min(entry[0], (request.prefill_target - 1) // self.config.block_size) if entry else 0

    def can_admit(self, request: Request) -> bool:
        needed = self.admission_blocks(request) + self.watermark_blocks
        self.evict_prefixes(needed, keep=request.prefix_group)
        return self.free_blocks >= needed

    def evict_prefixes(self, needed: int, keep: int = -1) -> None:
        for group in list(self.prefix_cache):
            if self.free_blocks >= needed:
                return
            blocks, users = self.prefix_cache[group]
            if users == 0 and group != keep:
                del self.prefix_cache[group]
                self.free_blocks += blocks

    def admit(self, request: Request) -> None:
        shared = self.cached_prefix_blocks(request)
        super().admit(request)
        if shared:
            entry = self.prefix_cache.pop(request.prefix_group)
            entry[1] += 1
            self.prefix_cache[request.prefix_group] = entry  # most recently used goes last
            request.prefilled = shared * self.config.block_size
            request.shared_blocks = shared
            self.prefix_hits += 1

    def complete(self, batch: Batch, now: float) -> list[Request]:
        if self.config.prefix_caching:
            for request, _, chunk in batch.prefills:
                if request.prefilled + chunk == request.prefill_target:
                    self.share_prefix(request)
        finished = super().complete(batch, now)
        for request in finished:
            self.release_prefix(request)
        return finished

    def share_prefix(self, request: Request) -> None:
        """Hand the full blocks of the request's shared prefix to the cache (once per group)."""
        if request.prefix_group < 0 or request.prefix_group in self.prefix_cache:
            return
        blocks = min(request.prefix_tokens, request.prefill_target) // self.config.block_size
        if blocks:
            request.blocks -= blocks
            request.shared_blocks = blocks
            self.prefix_cache[request.prefix_group] = [blocks, 1]

    def release_prefix(self, request: Request) -> None:
        entry = self.prefix_cache.get(request.prefix_group)
        if entry and entry[1] > 0:
            entry[1] -= 1

    def preempt(self, request: Request, batch: Batch) -> None:
        self.release_prefix(request)
        super().preempt(request, batch)


class FasterTransformer(Scheduler):
    name = "faster_transformer"
    reserves_full_length = True
    decodes_go_on_after_completions = False  # finished requests pad the static batch
    serves_a_disaggregated_pool = False  # whole requests a batch: prefill cannot leave for another pool

    def __init__(self, config: SchedulerConfig, pool: KVPool | None = None):
        super().__init__(config, pool)
        self.static_batch: list[Request] = []

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        if not self.decoding and not self.prefilling:
            self.static_batch = []
            while (
                self.waiting and len(self.static_batch) < self.config.max_batch_size and self.can_admit(self.waiting[0])
            ):
                request = self.waiting[0]
                self.admit(request)
                self.static_batch.append(request)
                self.add_prefill(batch, request, request.prefill_target, now)
            if batch.prefills:
                return batch
        self.decode_part(batch)
        if not batch.num_decodes:
            return None
        batch.padding_seqs = len(self.static_batch) - batch.num_decodes
        return batch


class SGLang(VllmV1):
    """SGLang without --enable-mixed-chunk: a prefill batch whenever a prompt waits or is part-done.
    Prefix caching is its radix cache (on by default in SGLang), kept as vllm_v1 keeps it."""

    name = "sglang"
    default_budget = 8192  # --chunked-prefill-size on 80 GB-class GPUs
    served_by_vllm = False

    @classmethod
    def serve_defaults(cls, memory_bytes: int, hardware: str) -> dict:
        """SGLang's server defaults by GPU memory (ServerArgs: chunked prefill 16384 above 90 GB;
        --max-running-requests follows memory, capped here at its CUDA-graph batch sizes' top); the
        radix cache on."""
        return {
            "token_budget": 16384 if memory_bytes > 90 * 10**9 else 8192,
            "max_batch_size": 1024,
            "prefix_caching": True,
        }

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        self.prefill_part(batch, self.config.token_budget or self.default_budget, now)
        if batch.prefills:
            return batch
        self.decode_part(batch)
        return batch if batch.num_decodes else None


class TrtllmInflight(VllmV1):
    """TensorRT-LLM's PyTorch backend, trtllm-serve defaults: chunked context off, the capacity
    scheduler GUARANTEED_NO_EVICT (KV for the prompt and every output token reserved at admission).
    Prefix caching is its KV-cache block reuse, kept as vllm_v1 keeps it."""

    name = "trtllm"
    default_budget = 8192  # max_num_tokens
    served_by_vllm = False
    reserves_full_length = True  # nothing grows after admission: no appends, no preemption
    default_watermark = 0.0

    @classmethod
    def serve_defaults(cls, memory_bytes: int, hardware: str) -> dict:
        """trtllm-serve's --max_num_tokens and --max_batch_size, KV block reuse on."""
        return {"token_budget": 8192, "max_batch_size": 2048, "prefix_caching": True}

    @classmethod
    def largest_prompt(cls, config: SchedulerConfig) -> int | None:
        return config.token_budget or cls.default_budget

    def admission_blocks(self, request: Request) -> int:
        return self.blocks_for(request.prompt_tokens + request.output_tokens) - self.cached_prefix_blocks(request)

    def schedule(self, now: float) -> Batch | None:
        batch = Batch()
        self.decode_part(batch)
        budget = (self.config.token_budget or self.default_budget) - batch.num_decodes
        waiting = self.waiting
        while waiting and self.running < self.config.max_batch_size:
            request = waiting[0]
            to_compute = request.prefill_target - self.cached_prefix_blocks(request) * self.config.block_size
            if to_compute > budget or not self.can_admit(request):
                break
            self.admit(request)
            budget -= request.remaining_prefill
            self.add_prefill(batch, request, request.remaining_prefill, now)
        return batch if batch.prefills or batch.num_decodes else None


POLICIES: dict[str, type[Scheduler]] = {
    p.name: p for p in (VllmV0, Orca, Sarathi, VllmV1, FasterTransformer, SGLang, TrtllmInflight)
}
# The batching each engine brings when no --scheduler is given (vLLM's own is vllm_v1; capsim's
# default stays sarathi for it, the policy of the papers it reproduces).
ENGINE_SCHEDULERS = {"sglang": "sglang", "trtllm": "trtllm"}
