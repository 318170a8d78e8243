"""ModelRunner: the one place that runs forward passes, for the profiler and the reference engine.

It works as a serving engine does, so that what the profiler times is what an engine would do:
the KV cache is paged (fixed-size blocks, a block table per sequence), and all new tokens of a
batch, from any mix of prefill chunks and decodes, go through the linear layers as one flat
[tokens, hidden] tensor. Only attention is split: one call per prefill chunk, and one per group of
decodes of similar KV length, so that decode attention costs about the sum of the KV lengths, as
paged-attention kernels do, not the batch size times the longest.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from capsim.profiles.models import ModelSpec
from capsim.profiles.torch_model import build_model, torch_dtype


@dataclass(frozen=True)
class SequenceWork:
    seq_id: int  # identifies a sequence whose KV lives in the runner's cache
    context_len: int  # tokens of this sequence already in the KV cache (positions 0..context_len-1)
    token_ids: tuple[int, ...]  # the new tokens to run now: a prefill chunk (many) or a decode step (one)


@dataclass
class _Chunk:
    """Attention inputs of one prefill chunk: rows start:end of the flat batch."""

    start: int
    end: int
    blocks: torch.Tensor | None  # the sequence's blocks; None when there is no earlier context
    mask: torch.Tensor | None  # [chunk, context + chunk]: all the context, then causal


@dataclass
class _Plan:
    """Everything attention needs about one run, built once and used by every layer."""

    slots: torch.Tensor  # [T] flat cache slot (block * block_size + offset) of each new token
    chunks: list[_Chunk]
    decode_groups: list[_DecodeGroup]  # the decodes, longest first, in groups of similar length


@dataclass
class _DecodeGroup:
    """Decodes of similar KV length, attended together: rows start:end of the flat batch."""

    start: int
    end: int
    blocks: torch.Tensor  # [decodes, max blocks] block tables, padded with block 0 (masked out)
    mask: torch.Tensor  # [decodes, 1, 1, max blocks * block_size]: the real positions


class ModelRunner:
    def __init__(
        self,
        model: ModelSpec,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        kv_cache_tokens: int = 65536,
        block_size: int = 16,
        seed: int = 0,
    ):
        self.spec = model
        self.device = torch.device(device)
        self.dtype = dtype or torch_dtype(model)
        self.block_size = block_size
        self.network = build_model(model, self.device, self.dtype, seed)
        num_blocks = -(-kv_cache_tokens // block_size)
        shape = (num_blocks, block_size, model.kv_heads, model.head_dim)
        # Zeros, not empty: a sequence may attend to slots it never wrote (see run), and garbage
        # could hold NaN, which would poison the softmax.
        self.k_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(model.layers)]
        self.v_cache = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(model.layers)]
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: pop() hands out low block numbers first
        self._tables: dict[int, list[int]] = {}  # seq_id -> its blocks, in position order
        self.last_logits: torch.Tensor | None = None  # [len(batch), vocab] of the latest run, in batch order

    @property
    def num_blocks(self) -> int:
        return self.k_cache[0].shape[0]

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def run(self, batch: list[SequenceWork]) -> list[int]:
        """Runs one forward pass over every sequence's new tokens together; writes their K/V into the
        cache at positions context_len..context_len+len(token_ids)-1 (allocating blocks as needed);
        returns, per sequence, the greedy (argmax) next token after its last new token.

        A sequence may start at a context_len beyond what it holds: blocks are allocated for the
        whole context and whatever their slots hold is attended to (the profiler times a chunk at
        a given context this way without computing the context first).
        """
        self._check(batch)
        self._allocate(batch)
        tokens, positions, last, plan = self._plan(batch)
        with torch.inference_mode():
            hidden = self.network(tokens, positions, partial(self._attend, plan))
            # Only each sequence's last token is sampled: the LM head skips the other rows.
            self.last_logits = self.network.logits(hidden[last])
            return self.last_logits.argmax(dim=-1).tolist()

    def free(self, seq_id: int) -> None:
        """Releases the blocks of a sequence (nothing happens for an unknown seq_id)."""
        self._free.extend(reversed(self._tables.pop(seq_id, [])))

    def synchronize(self) -> None:
        """Waits for queued device work, so that a wall-clock time covers it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _check(self, batch: list[SequenceWork]) -> None:
        if not batch:
            raise ValueError("run() needs at least one SequenceWork")
        if len({w.seq_id for w in batch}) < len(batch):
            raise ValueError(
                "a batch holds each seq_id at most once; merge the sequence's tokens into one SequenceWork"
            )
        for w in batch:
            if not w.token_ids:
                raise ValueError(f"sequence {w.seq_id}: token_ids is empty; give at least one new token")
            if w.context_len < 0:
                raise ValueError(f"sequence {w.seq_id}: context_len must be >= 0, got {w.context_len}")
            if w.context_len + len(w.token_ids) > self.spec.max_context:
                raise ValueError(
                    f"sequence {w.seq_id}: context {w.context_len} + {len(w.token_ids)} new tokens exceeds "
                    f"{self.spec.name}'s max_context of {self.spec.max_context}; end or truncate the sequence"
                )
            if min(w.token_ids) < 0 or max(w.token_ids) >= self.spec.vocab:
                raise ValueError(
                    f"sequence {w.seq_id}: token ids must lie in 0..{self.spec.vocab - 1} ({self.spec.name}'s vocab), "
                    f"got {min(w.token_ids)}..{max(w.token_ids)}"
                )

    def _allocate(self, batch: list[SequenceWork]) -> None:
        """Gives every sequence the blocks its positions need, or none at all if they do not fit."""
        wanted = {w.seq_id: self._blocks_for(w) - len(self._tables.get(w.seq_id, ())) for w in batch}
        short = sum(n for n in wanted.values() if n > 0)
        if short > len(self._free):
            raise ValueError(
                f"the KV cache is out of blocks: this batch needs {short} more blocks of {self.block_size} tokens "
                f"but {len(self._free)} of {self.num_blocks} are free; free() finished sequences, run a smaller "
                "batch, or build the ModelRunner with a larger kv_cache_tokens"
            )
        for seq_id, n in wanted.items():
            table = self._tables.setdefault(seq_id, [])
            table.extend(self._free.pop() for _ in range(n))

    def _blocks_for(self, w: SequenceWork) -> int:
        return -(-(w.context_len + len(w.token_ids)) // self.block_size)

    def _plan(self, batch: list[SequenceWork]) -> tuple[torch.Tensor, torch.Tensor, list[int], _Plan]:
        """The flat batch (prefill chunks first, then decodes) and the attention plan of this run."""
        bs, device = self.block_size, self.device
        prefills = [w for w in batch if len(w.token_ids) > 1]
        decodes = [w for w in batch if len(w.token_ids) == 1]
        row = {}  # seq_id -> its first row in the flat batch
        tokens, positions, slots, chunks = [], [], [], []
        start = 0
        for w in prefills:
            end = start + len(w.token_ids)
            pos = np.arange(w.context_len, w.context_len + len(w.token_ids))
            table = np.asarray(self._tables[w.seq_id][: self._blocks_for(w)])
            tokens.append(w.token_ids)
            positions.append(pos)
            slots.append(table[pos // bs] * bs + pos % bs)
            if w.context_len == 0:
                chunks.append(_Chunk(start, end, None, None))  # attends to its own K/V, causally
            else:
                keys = torch.arange(w.context_len + len(w.token_ids), device=device)
                mask = keys <= torch.arange(w.context_len, w.context_len + len(w.token_ids), device=device)[:, None]
                chunks.append(_Chunk(start, end, torch.from_numpy(table).to(device), mask))
            row[w.seq_id], start = start, end
        groups = []
        if decodes:
            decodes = sorted(decodes, key=lambda w: -w.context_len)
            lengths = [w.context_len + 1 for w in decodes]
            for first, stop in _length_groups(lengths):
                tables = np.zeros((stop - first, -(-lengths[first] // bs)), dtype=np.int64)
                for i, w in enumerate(decodes[first:stop]):
                    tables[i, : self._blocks_for(w)] = self._tables[w.seq_id][: self._blocks_for(w)]
                mask = (
                    torch.arange(tables.shape[1] * bs, device=device)
                    < torch.tensor(lengths[first:stop], device=device)[:, None]
                )
                groups.append(
                    _DecodeGroup(
                        start + first, start + stop, torch.from_numpy(tables).to(device), mask[:, None, None, :]
                    )
                )
            for i, w in enumerate(decodes):
                row[w.seq_id] = start + i
            positions.append(np.array([w.context_len for w in decodes]))
            tokens.append([w.token_ids[0] for w in decodes])
            slots.append([self._tables[w.seq_id][w.context_len // bs] * bs + w.context_len % bs for w in decodes])
        # One host-to-device copy for the three per-token index vectors.
        flat = np.stack([np.concatenate(tokens), np.concatenate(positions), np.concatenate(slots)]).astype(np.int64)
        token_ids, positions_t, slots_t = torch.from_numpy(flat).to(device)
        last = [row[w.seq_id] + len(w.token_ids) - 1 for w in batch]
        return token_ids, positions_t, last, _Plan(slots_t, chunks, groups)

    def _attend(self, plan: _Plan, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Writes this layer's new K/V into the cache, then attends each sequence to its cached K/V."""
        kv_heads, head_dim = self.spec.kv_heads, self.spec.head_dim
        k_cache, v_cache = self.k_cache[layer], self.v_cache[layer]
        k_cache.view(-1, kv_heads, head_dim).index_copy_(0, plan.slots, k)
        v_cache.view(-1, kv_heads, head_dim).index_copy_(0, plan.slots, v)
        out = [self._prefill_attention(c, q, k, v, k_cache, v_cache) for c in plan.chunks]
        out += [self._decode_attention(g, q[g.start : g.end], k_cache, v_cache) for g in plan.decode_groups]
        return torch.cat(out) if len(out) > 1 else out[0]

    def _prefill_attention(self, chunk: _Chunk, q, k, v, k_cache, v_cache) -> torch.Tensor:
        n, group = chunk.end - chunk.start, self.spec.heads // self.spec.kv_heads
        kv_heads, head_dim = self.spec.kv_heads, self.spec.head_dim
        if chunk.blocks is None:  # no earlier context: causal attention over the chunk itself
            keys, values = k[chunk.start : chunk.end], v[chunk.start : chunk.end]
            mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril_()
        else:  # the chunk's own K/V are already in the cache, so one gather gives context and chunk
            mask = chunk.mask
            keys = k_cache.index_select(0, chunk.blocks).flatten(0, 1)[: mask.shape[1]]
            values = v_cache.index_select(0, chunk.blocks).flatten(0, 1)[: mask.shape[1]]
        # GQA without copying K/V: the query heads that share a KV head become that head's rows.
        # Explicit matmuls rather than SDPA: on CPUs the SDPA kernels' cost jumps irregularly with
        # the chunk length (masked or causal), which would make the profile hard to learn.
        rows = (
            q[chunk.start : chunk.end]
            .view(n, kv_heads, group, head_dim)
            .permute(1, 2, 0, 3)
            .reshape(kv_heads, group * n, head_dim)
        )
        scores = torch.matmul(rows, keys.permute(1, 2, 0)) * head_dim**-0.5  # [kv_heads, group * n, L]
        scores.masked_fill_(~mask.repeat(group, 1), float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), values.transpose(0, 1))  # [kv_heads, group * n, hd]
        return out.view(kv_heads, group, n, head_dim).permute(2, 0, 1, 3).reshape(n, -1)

    def _decode_attention(self, group: _DecodeGroup, q, k_cache, v_cache) -> torch.Tensor:
        decodes, kv_heads, head_dim = q.shape[0], self.spec.kv_heads, self.spec.head_dim
        # [decodes, kv_heads, max_len, head_dim], gathered whole blocks at a time (index_select
        # copies several times faster than advanced indexing on CPU).
        blocks = group.blocks.flatten()
        keys = k_cache.index_select(0, blocks).view(decodes, -1, kv_heads, head_dim).transpose(1, 2)
        values = v_cache.index_select(0, blocks).view(decodes, -1, kv_heads, head_dim).transpose(1, 2)
        # GQA without copying K/V: the query heads that share a KV head become that head's "query
        # rows" (a decode has one query token, so there is no causal order among them).
        q = q.view(decodes, kv_heads, -1, head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=group.mask)
        return out.reshape(decodes, -1)


GROUP_OVERHEAD_TOKENS = 256  # a decode group's fixed cost (gather, mask, attention call), in padded KV tokens


def _length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """Split KV lengths (sorted longest first) into contiguous groups whose padding is worth less
    than another group's fixed cost, so that decode attention costs about the sum of the lengths
    (as paged-attention kernels do) rather than batch size x the longest.

    A new group starts where padding the rest to the current group's longest would waste more
    padded tokens than a group costs: every later length is at most this one, so each would waste
    at least (longest - this) tokens.
    """
    groups, first = [], 0
    for i, length in enumerate(lengths):
        if (lengths[first] - length) * (len(lengths) - i) > GROUP_OVERHEAD_TOKENS:
            groups.append((first, i))
            first = i
    groups.append((first, len(lengths)))
    return groups
