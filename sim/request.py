"""A request as a scheduler sees it: its lengths, where it stands, and what happened to it.

One object per request, never per token. While a request decodes, its token count is not
updated every iteration: it is derived from the decode iteration it entered at (see
DecodeSet), so an iteration costs only the requests whose state changes.
"""

from __future__ import annotations

import math

# Why a request did not finish.
FINISHED, UNFINISHED, REJECTED = "finished", "unfinished", "rejected"


class Request:
    __slots__ = (
        "id",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "prefix_group",
        "prefix_tokens",
        "prefill_target",
        "prefilled",
        "generated",
        "blocks",
        "shared_blocks",
        "entry_iteration",
        "entry_length",
        "entry_generated",
        "phase",
        "scheduled_s",
        "first_token_s",
        "finish_s",
        "status",
        "preemptions",
        "spans",
        "extra_tokens",
        "replica",
        "engine",
        "bursts",
    )

    def __init__(
        self,
        id: int,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        prefix_group: int = -1,
        prefix_tokens: int = 0,
    ):
        self.id = id
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefix_group = prefix_group
        self.prefix_tokens = prefix_tokens
        self.prefill_target = prompt_tokens  # tokens to put in the KV cache before decoding
        self.prefilled = 0  # of prefill_target, already in the KV cache
        self.generated = 0  # output tokens so far (while decoding: as of entry; see DecodeSet)
        self.blocks = 0  # KV blocks held
        self.shared_blocks = 0  # cached prefix blocks it uses but does not own
        self.entry_iteration = -1  # decode iteration at which it (last) joined the decode set
        self.entry_length = 0  # KV length when it joined
        self.entry_generated = 0
        self.phase = 0
        self.scheduled_s = math.nan  # first time any of its tokens ran
        self.first_token_s = math.nan
        self.finish_s = math.nan
        self.status = UNFINISHED
        self.preemptions = 0
        self.spans: list[tuple[int, int, int]] = []  # decode-iteration spans [first, last, engine] it made tokens in
        self.extra_tokens: list[float] = []  # token times outside spans: first token, tokens of re-prefills
        self.replica = -1
        self.engine = -1  # index of the virtual engine within the replica
        # Speculative decoding (sim/spec_decode.py): the tokens each decode step emits; output_tokens is then
        # the steps + 1 the scheduler runs, and real_output_tokens what the client gets.
        self.bursts = None

    @property
    def remaining_prefill(self) -> int:
        return self.prefill_target - self.prefilled

    @property
    def real_output_tokens(self) -> int:
        return self.output_tokens if self.bursts is None else 1 + int(self.bursts.sum())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.real_output_tokens

    def speculate(self, bursts) -> None:
        """Decode in steps emitting bursts[i] tokens each (speculative decoding), not a token a step."""
        if self.output_tokens > 1:
            self.bursts = bursts
            self.output_tokens = len(bursts) + 1
