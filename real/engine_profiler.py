"""Profile a serving engine as a black box, through its OpenAI API, into a ProfileTable.

- Prefill: one request alone with max_tokens=1; its TTFT is the time of a one-prompt prefill
  batch (plus the serving stack's overhead, which is part of the engine being profiled).
- Mixed: a short prompt sent while B requests decode; the decoders' gap at the step that gave
  the prompt its first token is the time of a batch of that prompt and B decodes. Without these,
  a mixed batch would be priced as a prefill plus a decode, each with its own per-step cost.
- Decode: B requests of prompt length L sent together; once every one has its first token and
  before any ends, every batch is the same B decodes, so the mean gap between their tokens in
  that window (its length over its steps) is the time of a decode batch of B sequences at their
  mean KV length in it. A median would not do: a busy server flushes piled-up events in bursts,
  whose gaps of microseconds can be most of them, while the window's length stays true. An
  engine with a token budget below B x L prefills them over several steps while the first ones
  already decode: the outputs are lengthened until the window opens, up to the max model length.
  A point whose requests never all decode together (more than the engine's max-num-seqs, or
  than its KV cache holds) is skipped with every larger one, and listed in the metadata.

Every prompt is new to the engine (salted per profile run): a prefix cache, on by default in
vLLM, would otherwise serve a second profile's prompts and make its prefills look fast.

The table then fits a latency model like any other, so `capsim simulate --profile FILE` replays
the exact engine a user runs. Requests run one measurement at a time, so nothing else shares the
engine while it is measured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.host_time import HostTime
from capsim.profiles.models import ModelSpec
from capsim.profiles.table import ProfileTable
from capsim.profiles.versions import profile_metadata
from capsim.real.client import Completion, Endpoint, stream_completion
from capsim.real.loadgen import new_salt, prompt_ids

PROMPT_LENGTHS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
DECODE_CONTEXTS = (128, 512, 2048)
DECODE_TOKENS = 32  # output tokens of each decode-measuring request: the window is about this long
MIN_WINDOW_GAPS = 8  # token gaps inside the all-decoding window that a decode point needs
# A window whose steps come out under this share of the fastest decode point so far was read in a
# burst (a starved client reads many steps' tokens at once): measured again with longer outputs.
IMPLAUSIBLE_DECODE = 0.2
MIXED_BATCHES = (
    1,
    4,
    16,
)  # decodes that a prompt joins, for the mixed points (where those decode points were measured) ...
MIXED_PROMPTS = (32, 128)  # ... and the prompts that join them: short enough for one step of any token budget
MIXED_DECODE_TOKENS = 96  # the decoders' outputs: they must still run when the prompt's step ends
MIXED_AFTER_TOKENS = 4  # the prompt is sent once every decoder has this many tokens
MIXED_ATTEMPTS = 2  # tries at a mixed point before it is left out


def profile_endpoint(
    endpoint: Endpoint,
    model: ModelSpec,
    output: str | Path,
    hardware: str = "unknown",
    max_model_len: int | None = None,
    prompt_lengths=PROMPT_LENGTHS,
    decode_batches=DECODE_BATCHES,
    decode_contexts=DECODE_CONTEXTS,
    repeats: int = 3,
    progress=None,
    token_budget: int | None = None,
) -> ProfileTable:
    """Measure the engine and write the ProfileTable; `progress(done, total)` after each point.
    `token_budget`: the engine's tokens a step (vLLM's --max-num-batched-tokens), where known."""
    limit = max_model_len or endpoint.max_model_len or model.max_context
    prompts = [
        p for p in prompt_lengths if p + 1 <= limit and (not token_budget or p <= token_budget or p % token_budget == 0)
    ]
    decodes = [(b, c) for b in decode_batches for c in decode_contexts if c + DECODE_TOKENS <= limit]
    if not prompts and not decodes:
        raise ProfileError(f"no measurement fits a max model length of {limit}")
    total, shapes, latencies = len(prompts) + len(decodes), [], []
    salt = new_salt()
    _run_together(
        endpoint, [prompt_ids(0, 0, min(16, limit - 2), model.vocab, salt)], 2
    )  # warm up: the first request pays for setup
    seed = 0
    ttft, points_done = {}, 0
    for length in prompts:
        times = []
        for _ in range(repeats):
            seed += 1
            done = _run_together(endpoint, [prompt_ids(seed, 0, length, model.vocab, salt)], 1)[0]
            times.append(done.token_times[0] - done.sent_s)
        ttft[length] = float(np.median(times))
        if not token_budget or length <= token_budget:  # one step; a longer prompt's steps are chunks (_chunk_points)
            shapes.append(BatchShape((length,), (0,), ()))
            latencies.append(ttft[length])
        points_done += 1
        progress and progress(points_done, total)
    skipped: list[tuple[int, int]] = []  # decode points that never all decoded together
    decode_seconds: list[float] = []
    for batch, context in decodes:
        if any(batch >= b and context >= c for b, c in skipped):  # more of what the engine could not hold at once
            skipped.append((batch, context))
            total -= 1
            continue
        floor = IMPLAUSIBLE_DECODE * min(decode_seconds, default=0.0)
        gaps, seed = _decode_window(endpoint, model, batch, context, salt, seed, limit, floor)
        if len(gaps) < MIN_WINDOW_GAPS or _mean_gap(gaps) < floor:
            if len(gaps) < MIN_WINDOW_GAPS:  # never all decoding together: nor will more or longer ones
                skipped.append((batch, context))
            total -= 1
            continue
        shapes.append(BatchShape((), (), (round(float(np.mean([kv for _, kv in gaps]))),) * batch))
        latencies.append(_mean_gap(gaps))  # the window's time per step: bursts cancel out
        decode_seconds.append(latencies[-1])
        points_done += 1
        progress and progress(points_done, total)
    measured = [(b, c) for b, c in decodes if (b, c) not in skipped]
    shortest = min((c for _, c in measured), default=0)
    mixes = [
        (b, length)
        for b in MIXED_BATCHES
        if (b, shortest) in measured
        for length in MIXED_PROMPTS
        if shortest + MIXED_DECODE_TOKENS <= limit
    ]
    total += len(mixes)
    for batch, length in mixes:
        seed += MIXED_ATTEMPTS
        point = _mixed_point_tried(endpoint, batch, shortest, length, model.vocab, salt, seed, limit)
        if point is None:
            total -= 1
            continue
        shapes.append(point[0])
        latencies.append(point[1])
        points_done += 1
        progress and progress(points_done, total)
    if decodes and len(skipped) == len(decodes):
        batch, context = decodes[0]
        raise ProfileError(
            f"{batch} requests of {context} tokens never decoded all together, with outputs of up to the max "
            f"model length ({limit}): is the engine's batch size below {batch}? Pass smaller --decode-batches "
            "or --decode-contexts"
        )
    metadata = profile_metadata(
        model,
        hardware,
        1,
        1,
        f"endpoint {endpoint.url}",
        "measured",
        device="endpoint",
        grid="endpoint",
        model_name=endpoint.model,
    )
    if skipped:  # the engine's max-num-seqs or KV cache is smaller than these: said, never silently dropped
        metadata["skipped_decode_points"] = [list(point) for point in skipped]
    latencies, frontend = _split_frontend(shapes, latencies)
    for shape, latency in _chunk_points(ttft, token_budget):  # differences of TTFTs: no frontend in them
        shapes.append(shape)
        latencies.append(latency)
    if frontend is not None:
        host = HostTime(
            "endpoint",
            0.0,
            0.0,
            frontend,
            "measured by the endpoint profiler: the shortest prompt's TTFT beyond a one-sequence decode step",
        )
        metadata |= {
            "host_time": host.to_dict(),
            "host_time_words": f"{frontend * 1e3:.2f} ms a request in the engine's frontend ({host.provenance})",
        }
    table = ProfileTable.from_batches(shapes, latencies, metadata)
    table.to_parquet(Path(output))
    return table


def _split_frontend(shapes: list[BatchShape], latencies: list[float]) -> tuple[list[float], float | None]:
    """A lone request's TTFT is the API server's time for it (HTTP, tokenizing, streaming) plus
    its prefill step: left in the prefill points, it would be charged to every batch that holds a
    prompt chunk, and the simulation's mixed batches would come out slow. A prompt of a few tokens
    costs a step about as long as a one-sequence decode, so the shortest prompt's TTFT beyond that
    step is the frontend's part; it leaves every prefill point and becomes the profile's frontend
    time (a serial per-request term in the simulator). None where the profile lacks either point."""
    prefills = [i for i, s in enumerate(shapes) if s.kind == "prefill"]
    singles = [latencies[i] for i, s in enumerate(shapes) if s.kind == "decode" and len(s.decode_contexts) == 1]
    if not prefills or not singles:
        return latencies, None
    shortest = min(prefills, key=lambda i: shapes[i].prefill_chunks[0])
    frontend = max(0.0, latencies[shortest] - min(singles))
    if not frontend:
        return latencies, None
    step = min(singles)  # no prefill step is cheaper than a one-sequence decode
    return [max(value - frontend, step) if i in prefills else value for i, value in enumerate(latencies)], frontend


def _chunk_points(ttft: dict[int, float], budget: int | None) -> list[tuple[BatchShape, float]]:
    """Prompts longer than the token budget are prefilled in chunks of it, one a step: the TTFTs
    of two prompts of whole chunks differ by the steps of the chunks between them, so each pair
    of successive lengths gives a point, a chunk at the mean context of those steps. Without a
    budget, every prompt counts as one batch (right while prompts fit the engine's budget)."""
    if not budget:
        return []
    whole = sorted(length for length in ttft if length >= budget and length % budget == 0)
    points = []
    for shorter, longer in zip(whole, whole[1:]):
        chunks = (longer - shorter) // budget
        latency = (ttft[longer] - ttft[shorter]) / chunks
        if latency > 0:  # noise can invert two close TTFTs: no point rather than a negative one
            points.append((BatchShape((budget,), (shorter + (chunks - 1) * budget // 2,), ()), latency))
    return points


def _decode_window(endpoint, model, batch, context, salt, seed, limit, floor):
    """(gap, KV length) of every token gap in the window where all `batch` requests decode, and
    the seed used last; outputs lengthen until the window holds MIN_WINDOW_GAPS gaps whose mean is
    at least `floor` (or the max model length stops them)."""
    tokens, gaps = DECODE_TOKENS, []
    while (len(gaps) < MIN_WINDOW_GAPS or _mean_gap(gaps) < floor) and context + tokens <= limit:
        # Staggered starts (a token budget below batch x context, a busy CPU): longer outputs until they overlap
        seed += 1
        done = _run_together(endpoint, [prompt_ids(seed, i, context, model.vocab, salt) for i in range(batch)], tokens)
        start = max(c.token_times[0] for c in done)
        stop = min(c.token_times[-1] for c in done)
        # (gap, KV length while it ran): token i of a request was decoded with context + i tokens cached
        gaps = [
            (b - a, context + i)
            for c in done
            for i, (a, b) in enumerate(zip(c.token_times, c.token_times[1:]), 1)
            if a >= start and b <= stop
        ]
        tokens *= 2
    return gaps, seed


def _mean_gap(gaps: list[tuple[float, int]]) -> float:
    return float(np.mean([gap for gap, _ in gaps])) if gaps else 0.0


def _mixed_point_tried(endpoint, batch, context, length, vocab, salt, seed, limit):
    """A mixed point, tried again where a busy host blurred which gap the prompt's step was."""
    for attempt in range(MIXED_ATTEMPTS):
        point = _mixed_point(endpoint, batch, context, length, vocab, salt, seed - attempt, limit)
        if point is not None:
            return point
    return None


def _mixed_point(
    endpoint: Endpoint, batch: int, context: int, length: int, vocab: int, salt: int, seed: int, limit: int
) -> tuple[BatchShape, float] | None:
    """A prompt of `length` tokens sent while `batch` requests decode: the step that prefills it
    also decodes them, and ends when it yields the prompt's first token; the decoders' gap that
    ends nearest that token is that mixed step's time (the median over the decoders). None
    where the decoders finished before the prompt came (a very fast engine)."""
    tokens = min(MIXED_DECODE_TOKENS, limit - context)
    decoders = [Completion() for _ in range(batch)]
    threads = [
        threading.Thread(
            target=stream_completion, args=(endpoint, prompt_ids(seed, i, context, vocab, salt), tokens, c), daemon=True
        )
        for i, c in enumerate(decoders)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + endpoint.timeout_s
    while min(len(c.token_times) for c in decoders) < MIXED_AFTER_TOKENS and time.monotonic() < deadline:
        if any(c.status != "unfinished" for c in decoders):
            break
        time.sleep(0.001)
    prompt = _run_together(endpoint, [prompt_ids(seed, batch, length, vocab, salt)], 1)[0]
    for thread in threads:
        thread.join(max(0.0, deadline + endpoint.timeout_s - time.monotonic()))
    if any(c.status != "finished" for c in decoders):
        raise ProfileError(
            f"a profiling request did not finish: "
            f"{next(c.reason for c in decoders if c.status != 'finished') or 'timed out'}"
        )
    first = prompt.token_times[0]
    gaps, kv = [], []
    for c in decoders:
        times = np.asarray(c.token_times)
        j = int(np.argmin(np.abs(times - first)))
        if 1 <= j and times[j] - first < 0.5 * (times[j] - times[j - 1]) and j < len(times) - 1:
            gaps.append(times[j] - times[j - 1])
            kv.append(context + j)
    if len(gaps) < max(1, batch // 2):
        return None
    return BatchShape((length,), (0,), (round(float(np.mean(kv))),) * batch), float(np.median(gaps))


def _run_together(endpoint: Endpoint, prompts: list[list[int]], max_tokens: int) -> list[Completion]:
    """Send the prompts at once and wait for all; any failure is an error (a profile takes no gaps)."""
    completions = [Completion() for _ in prompts]
    threads = [
        threading.Thread(target=stream_completion, args=(endpoint, p, max_tokens, c), daemon=True)
        for p, c in zip(prompts, completions)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + endpoint.timeout_s * 2
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for c in completions:
        if c.status != "finished":
            raise ProfileError(f"a profiling request did not finish: {c.reason or 'timed out'}")
    return completions
