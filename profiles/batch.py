"""A batch's composition and the physics features its latency depends on.

A batch is what one iteration of a scheduler runs: prefill chunks (new prompt tokens, each after
some tokens of context already in the KV cache) and decode steps (one new token each, after a KV
cache of some length). Its latency is, to first order, a sum of:
- the linear layers, MLP and norms, over all new tokens: `tokens` (weights read once, so flat
  while memory-bound, then linear once compute-bound);
- prefill attention, quadratic: `prefill_attention` = sum of chunk * (context + chunk);
- reading the cached context of prefill chunks: `prefill_context` = sum of context;
- decode attention, memory-bound on the KV cache: `decode_kv` = sum of KV lengths;
- per-sequence work (sampling, LM head rows, bookkeeping): `prefill_seqs`, `decode_seqs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("tokens", "prefill_seqs", "prefill_attention", "prefill_context", "decode_seqs", "decode_kv")


@dataclass(frozen=True)
class BatchShape:
    prefill_chunks: tuple[int, ...] = ()  # new prompt tokens of each prefill chunk
    prefill_contexts: tuple[int, ...] = ()  # tokens already cached before each chunk
    decode_contexts: tuple[int, ...] = ()  # KV length of each decoding sequence

    def __post_init__(self):
        if len(self.prefill_chunks) != len(self.prefill_contexts):
            raise ValueError("every prefill chunk needs its context length")

    @property
    def kind(self) -> str:
        if self.prefill_chunks and self.decode_contexts:
            return "mixed"
        return "prefill" if self.prefill_chunks else "decode"

    def features(self) -> tuple[int, int, int, int, int, int]:
        q = np.asarray(self.prefill_chunks, dtype=np.int64)
        c = np.asarray(self.prefill_contexts, dtype=np.int64)
        return batch_features(
            int(q.sum()),
            len(q),
            int((q * (c + q)).sum()),
            int(c.sum()),
            len(self.decode_contexts),
            int(sum(self.decode_contexts)),
        )


def batch_features(tokens_prefill, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv):
    """The FEATURES tuple from the sums a scheduler keeps."""
    return (tokens_prefill + decode_seqs, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv)
