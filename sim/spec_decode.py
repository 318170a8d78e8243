"""Speculative decoding: MTP, a draft model or n-grams propose K tokens, the target verifies them.

Each decode step of a speculating request is one verify pass over K + 1 tokens (its last token
and the K drafts), after K draft passes; it emits the accepted drafts plus the target's own next
token: 1 to K + 1 tokens. Draft token i is accepted with probability acceptance[i - 1] once
all before it were (one rate a: a, a, ...), drawn per step from a seeded generator, so the
same inputs give the same run.

In the simulator a speculating request decodes in steps, not tokens: the scheduler sees
`steps + 1` output tokens (the first comes from the prefill), and the result spreads each step's
tokens over its end time (they reach the client together: zero gaps inside a burst, so TPOT
counts real tokens and TBT the gaps a client sees). A step is priced as the verify batch (each
decode K + 1 tokens through the linear layers, its KV read once) plus K draft passes of
`draft_cost` of a decode step each (MTP: one extra decoder layer, 1/layers; n-grams: nothing;
a draft model: the cost the user gives). Modelled approximately: the KV cache grows one slot a
step, not one a token (it understates a sequence's KV by the accepted drafts), and decode
stretches are off (every step is simulated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capsim.sim.errors import SimulationError

METHODS = ("mtp", "draft", "ngram")


@dataclass(frozen=True)
class SpecDecoding:
    method: str  # mtp | draft | ngram
    tokens: int  # K: draft tokens a step
    acceptance: tuple[float, ...]  # per draft position, given the ones before were accepted
    draft_cost: float  # one draft token's cost, as a fraction of a decode step of the same batch

    def __post_init__(self):
        if self.method not in METHODS:
            raise SimulationError(f"unknown speculative method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 1 <= self.tokens <= 16:
            raise SimulationError(f"speculative tokens must be 1 to 16, got {self.tokens}")
        if len(self.acceptance) not in (1, self.tokens):
            raise SimulationError(
                f"give one acceptance rate, or one a draft position ({self.tokens}), got {len(self.acceptance)}"
            )
        if not all(0 < a <= 1 for a in self.acceptance):
            raise SimulationError(f"acceptance rates must be in (0, 1], got {', '.join(map(str, self.acceptance))}")
        if not 0 <= self.draft_cost <= 1:
            raise SimulationError(f"draft cost must be a fraction of a decode step in [0, 1], got {self.draft_cost}")

    @property
    def rates(self) -> np.ndarray:
        return np.resize(np.asarray(self.acceptance, dtype=np.float64), self.tokens)

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens a step emits: 1 + the expected accepted drafts."""
        return float(1 + np.cumprod(self.rates).sum())

    def step_token_probabilities(self) -> np.ndarray:
        """P(a step emits 1, 2, ..., K + 1 tokens)."""
        at_least = np.concatenate(([1.0], np.cumprod(self.rates)))  # P(accepted >= i), i = 0..K
        return at_least - np.concatenate((at_least[1:], [0.0]))

    def bursts(self, outputs: np.ndarray, seed: int) -> list[np.ndarray]:
        """For each request of `outputs` tokens: the tokens each of its decode steps emits (the first
        token comes from the prefill; the last step emits what is left)."""
        rng = np.random.default_rng(seed)
        needs = np.maximum(np.asarray(outputs, dtype=np.int64) - 1, 0)
        probabilities = self.step_token_probabilities()
        pool = np.empty(0, dtype=np.int64)
        cumulative = np.zeros(1, dtype=np.int64)
        out, start = [], 0
        for need in needs:
            if need == 0:
                out.append(np.empty(0, dtype=np.int64))
                continue
            while cumulative[-1] - cumulative[start] < need:  # draw more steps, in blocks
                more = rng.choice(len(probabilities), size=max(4096, int(need)), p=probabilities) + 1
                pool = np.concatenate((pool, more))
                cumulative = np.concatenate(([0], np.cumsum(pool)))
            end = int(np.searchsorted(cumulative, cumulative[start] + need, side="left"))
            burst = pool[start:end].copy()
            burst[-1] -= cumulative[end] - cumulative[start] - need  # drafts past the last token are dropped
            out.append(burst)
            start = end
        return out


class SpeculativeSteps:
    """A batch's seconds with speculating decodes: the verify batch, then the drafts."""

    def __init__(self, batch_seconds, spec: SpecDecoding):
        self.batch_seconds, self.extra, self.draft = batch_seconds, spec.tokens, spec.tokens * spec.draft_cost

    def __call__(self, tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> float:
        seconds = self.batch_seconds(
            tokens + self.extra * decode_seqs, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv
        )
        if decode_seqs and self.draft:
            seconds += self.draft * self.batch_seconds(decode_seqs, 0, 0, 0, decode_seqs, decode_kv)
        return seconds


def speculate(spec: SpecDecoding | None, requests, workload, batch_seconds):
    """The requests decode in steps (the same draws for every trial of a workload: seed 0), and the
    steps' seconds; without speculative decoding, `batch_seconds` as it is."""
    if spec is None:
        return batch_seconds
    for request, bursts in zip(requests, spec.bursts(workload.output_tokens, seed=0)):
        request.speculate(bursts)
    return SpeculativeSteps(batch_seconds, spec)  # not a LatencyPredictor: no decode stretches
