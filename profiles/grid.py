"""The designed grid of batches a profile measures: pure prefill, pure decode, and mixed batches.

Pure prefill spans chunk sizes x prior context (chunked prefill attends to cached context); pure
decode spans batch sizes x KV lengths; mixed batches put a prefill chunk among running decodes as
chunked-prefill schedulers form them; multi-prompt batches hold several whole prompts, alone or
with decodes, as vllm_v0 and orca form them. Points that the model's context or the device's KV memory
cannot hold are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from capsim.profiles.batch import BatchShape


@dataclass(frozen=True)
class ProfileGrid:
    prefill_chunks: tuple[int, ...]
    prefill_contexts: tuple[int, ...]
    decode_batch_sizes: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    mixed_chunks: tuple[int, ...]
    mixed_chunk_contexts: tuple[int, ...]
    mixed_decode_batch_sizes: tuple[int, ...]
    mixed_decode_contexts: tuple[int, ...]
    multi_prefill_counts: tuple[int, ...]  # several whole prompts in one batch (vllm_v0, orca)
    multi_prefill_chunks: tuple[int, ...]

    def shapes(self, max_context: int, kv_token_budget: int, max_batch_tokens: int) -> list[BatchShape]:
        """Every grid point that fits the context, the KV memory and the token budget."""
        shapes = []

        def add(shape: BatchShape) -> None:
            if fits(shape, kv_token_budget, max_batch_tokens):
                shapes.append(shape)

        for chunk, context in product(self.prefill_chunks, self.prefill_contexts):
            if chunk + context <= max_context:
                add(BatchShape((chunk,), (context,)))
        for batch, context in product(self.decode_batch_sizes, self.decode_contexts):
            if context < max_context:
                add(BatchShape(decode_contexts=(context,) * batch))
        mixed = product(
            self.mixed_chunks, self.mixed_chunk_contexts, self.mixed_decode_batch_sizes, self.mixed_decode_contexts
        )
        for chunk, chunk_context, batch, context in mixed:
            if chunk + chunk_context <= max_context and context < max_context:
                add(BatchShape((chunk,), (chunk_context,), (context,) * batch))
        for count, chunk in product(self.multi_prefill_counts, self.multi_prefill_chunks):
            add(BatchShape((chunk,) * count, (0,) * count))
            add(
                BatchShape(
                    (chunk,) * count,
                    (0,) * count,
                    (self.mixed_decode_contexts[-1],) * self.mixed_decode_batch_sizes[1],
                )
            )
        return shapes


GRIDS = {
    # A GPU serving a 7B-70B model: chunk sizes up to full prompts, batches up to 256.
    "default": ProfileGrid(
        prefill_chunks=(16, 32, 64, 128, 256, 512, 1024, 1536, 2048, 4096, 8192),
        prefill_contexts=(0, 1024, 2048, 4096, 8192, 14336),
        decode_batch_sizes=(1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256),
        decode_contexts=(128, 512, 1024, 2048, 4096, 8192),
        mixed_chunks=(128, 512, 1024, 2048),
        mixed_chunk_contexts=(0, 2048, 6144, 12288),
        mixed_decode_batch_sizes=(8, 32, 64, 128),
        mixed_decode_contexts=(512, 2048),
        multi_prefill_counts=(2, 4, 8),
        multi_prefill_chunks=(128, 512, 1024, 2048),
    ),
    # `tiny` on a CPU, dense enough to fit the latency model well (a few minutes).
    "cpu": ProfileGrid(
        prefill_chunks=(8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024),
        prefill_contexts=(0, 256, 512, 1024, 2048),
        decode_batch_sizes=(1, 2, 4, 8, 16, 24, 32, 48, 64),
        decode_contexts=(16, 128, 256, 512, 1024, 1536, 2048),
        mixed_chunks=(32, 128, 256, 512),
        mixed_chunk_contexts=(0, 1024),
        mixed_decode_batch_sizes=(4, 16, 48),
        mixed_decode_contexts=(128, 1024),
        multi_prefill_counts=(2, 4),
        multi_prefill_chunks=(64, 256),
    ),
    # A few dozen points for `tiny` on a CPU: the tests' grid.
    "quick": ProfileGrid(
        prefill_chunks=(8, 32, 64, 128, 256, 512, 1024),
        prefill_contexts=(0, 512, 2048),
        decode_batch_sizes=(1, 4, 8, 16, 32, 64),
        decode_contexts=(16, 256, 1024, 2048),
        mixed_chunks=(64, 256, 512),
        mixed_chunk_contexts=(0, 1024),
        mixed_decode_batch_sizes=(4, 16, 48),
        mixed_decode_contexts=(128, 1024),
        multi_prefill_counts=(2, 4),
        multi_prefill_chunks=(64, 256),
    ),
}


def sampled_shapes(
    rng, max_context: int, kv_token_budget: int, count: int, max_batch_tokens: int = 16384
) -> list[BatchShape]:
    """Batches as schedulers form them, with every sequence at its own length: chunks after varied
    contexts among decodes of mixed KV lengths (sarathi, vllm_v1), several whole prompts (vllm_v0,
    orca), and decode sets of mixed lengths. Cheap sources (the kernel database, the roofline)
    add these to the designed grid so that a fit sees the shapes a simulation runs."""

    def log_uniform(low: int, high: int, size=None):
        return np.exp(rng.uniform(np.log(low), np.log(high), size)).astype(np.int64)

    shapes: list[BatchShape] = []
    while len(shapes) < count:
        kind = rng.integers(3)  # 0: chunks among decodes, 1: whole prompts, 2: decodes alone
        if kind == 0:
            decodes = int(log_uniform(1, 257)) - 1  # a chunk may run alone
        elif kind == 1:
            decodes = 0 if rng.random() < 0.7 else int(log_uniform(1, 257))  # whole prompts mostly run alone (vllm_v0)
        else:
            decodes = int(log_uniform(1, 257))
        decode_contexts = tuple(int(v) for v in log_uniform(16, max_context, decodes))
        if kind == 0:  # chunked prefill: one or two chunks after their context
            chunks = tuple(int(v) for v in log_uniform(16, 4097, rng.integers(1, 3)))
            contexts = tuple(int(rng.integers(0, max(1, max_context - c))) if rng.random() < 0.7 else 0 for c in chunks)
        elif kind == 1:  # whole prompts
            chunks = tuple(int(v) for v in log_uniform(16, min(8192, max_context), rng.integers(1, 9)))
            contexts = (0,) * len(chunks)
        else:
            chunks, contexts = (), ()
        shape = BatchShape(chunks, contexts, decode_contexts)
        if (
            (chunks or decode_contexts)
            and fits(shape, kv_token_budget, max_batch_tokens)
            and all(c + q <= max_context for c, q in zip(contexts, chunks))
        ):
            shapes.append(shape)
    return shapes


def fits(shape: BatchShape, kv_token_budget: int, max_batch_tokens: int) -> bool:
    """Whether the batch's KV (context, new tokens and one a decode) and new tokens fit."""
    cached = (
        sum(shape.prefill_contexts)
        + sum(shape.prefill_chunks)
        + sum(shape.decode_contexts)
        + len(shape.decode_contexts)
    )
    return cached <= kv_token_budget and sum(shape.prefill_chunks) + len(shape.decode_contexts) <= max_batch_tokens
