"""A simulated run's RunResult, assembled from the replay's books: the requests' table, and the batch
table from the batch log and the decode stretches (built on first use). The reference engine's batch log
becomes a table the same way (batch_table)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from capsim.profiles.batch import FEATURES
from capsim.sim.compact import microseconds, timeline_and_index
from capsim.sim.decode_stretch import stretch_features, stretch_rows
from capsim.sim.request import UNFINISHED
from capsim.sim.result import BATCH_COLUMNS, RunResult, requests_table, to_microseconds


def _spread_bursts(requests, values, offsets, counts):
    """Speculating requests' tokens: a decode step's burst of tokens all at its end time (`values`:
    each token's place on the timeline)."""
    times, new_counts = [], counts.copy()
    for i, r in enumerate(requests):
        own = values[offsets[i] : offsets[i + 1]]
        if r.bursts is not None and len(own) > 1:
            steps = len(own) - 1
            repeats = np.concatenate(([1], r.bursts[:steps], np.ones(max(0, steps - len(r.bursts)), dtype=np.int64)))
            own = np.repeat(own, repeats)
            new_counts[i] = len(own)
        times.append(own)
    values = np.concatenate(times) if times else values
    return values, np.concatenate(([0], np.cumsum(new_counts))), new_counts


def build_result(
    system,
    workload,
    requests,
    engines,
    log,
    latency_model,
    now,
    time_limit_s,
    stopped_early=None,
    stretches: list | None = None,
) -> RunResult:
    """Turn the simulation's requests and batch log (rows of BATCH_COLUMNS, and the decode stretches
    applied: decode_stretch.stretch_rows) into a RunResult. The batch table is built on first use."""
    by_key = {(e.replica, e.index): e for e in engines}
    for r in requests:  # close the decode spans of requests still decoding at the time limit
        if r.entry_iteration >= 0:
            by_key[(r.replica, r.engine)].scheduler.leave_decode(r)
    timeline, index, counts = token_timeline(requests, by_key)
    offsets = np.concatenate(([0], np.cumsum(counts)))
    if any(r.bursts is not None for r in requests):
        index, offsets, counts = _spread_bursts(requests, index, offsets, counts)
    values = (timeline / 1e6)[index]  # whole microseconds: what to_microseconds makes of the times
    generated = (
        [int(n) for n in counts] if any(r.bursts is not None for r in requests) else [r.generated for r in requests]
    )
    status = [r.status for r in requests]
    whole = to_microseconds
    cut = f"stopped early: {stopped_early}" if stopped_early else "time limit"
    reason = [
        cut if s == UNFINISHED else ("longer than the model or KV cache can hold" if s == "rejected" else "")
        for s in status
    ]
    table = requests_table(
        [r.id for r in requests],
        [r.replica for r in requests],
        whole([r.arrival_s for r in requests]),
        whole([r.scheduled_s for r in requests]),
        whole([r.first_token_s for r in requests]),
        whole([r.finish_s for r in requests]),
        status,
        reason,
        [r.prompt_tokens for r in requests],
        [r.real_output_tokens for r in requests],
        generated,
        [r.preemptions for r in requests],
        values,
        offsets,
    )
    features, weights = log[:, 4 : 4 + len(FEATURES)], None
    if stretches:  # each stretch stands for its iterations: two rows, those within the profile and those beyond
        extra, extra_weights = stretch_features(stretches, latency_model.predictor.coverage)
        features = np.concatenate((features, extra))
        weights = np.concatenate((np.ones(len(log), dtype=np.int64), extra_weights))
    info = {
        "kind": "simulated",
        "system": system.to_dict(),
        "workload": workload.info,
        "qps": workload.info.get("qps"),
        "latency_source": latency_model.source,
        "latency_source_words": latency_model.source_words,
        "latency_profile": {k: latency_model.profile[k] for k in ("model", "hardware", "tp", "pp", "engine", "source")},
        "kv_blocks_per_engine": engines[0].scheduler.config.num_blocks,
        "peak_running": max(engine.scheduler.pool.peak_running for engine in engines),
        "simulated_until_s": now,
        "time_limit_s": time_limit_s,
        "stopped_early": stopped_early,
        "extrapolation": latency_model.extrapolation(features, weights) if len(features) else None,
    }
    return RunResult(table, lambda: batch_table(log, stretches), info, token_timeline=(timeline, index))


def token_timeline(requests, engines: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where every token lies on its replica's iteration timeline: (the timelines, one a replica
    after another: the end times of its engines' decode iterations and of the prefills that made a
    first token, distinct and sorted, in whole microseconds; each token's position on them, request
    after request; each request's token count). Tokens are placed by the iteration that made them,
    so no sort of the trial's tokens is needed (sim.compact keeps the trial in this form)."""
    counts = [len(r.extra_tokens) + sum(b - a + 1 for a, b, _ in r.spans) for r in requests]
    ends = {key: microseconds(e.scheduler.decode_end_times) for key, e in engines.items()}
    extra_counts = [len(r.extra_tokens) for r in requests]
    extra = microseconds([t for r in requests for t in r.extra_tokens])
    extra_replica = np.repeat([r.replica for r in requests], extra_counts).astype(np.int64)
    extra_place = np.empty(len(extra), dtype=np.int64)
    place, lines, base = {}, [], 0
    for replica in sorted({key[0] for key in ends} | set(extra_replica.tolist())):
        mine = extra_replica == replica
        keys = [key for key in ends if key[0] == replica]
        runs = [extra[mine], *(ends[key] for key in keys)]  # sorted runs (the first tokens' nearly)
        line, where = timeline_and_index(np.concatenate(runs))
        parts = np.split(where + base, np.cumsum([len(run) for run in runs[:-1]]))
        extra_place[mine] = parts[0]
        place.update(zip(keys, parts[1:]))
        lines.append(line)
        base += len(line)
    index = np.empty(sum(counts), dtype=np.int64)
    start, first_extra = 0, 0
    for r, count, extras in zip(requests, counts, extra_counts):
        stop = start + count
        if count and not r.preemptions:  # the first token, then one decode span: already in order
            index[start] = extra_place[first_extra]
            if r.spans:
                a, b, engine = r.spans[0]
                index[start + 1 : stop] = place[(r.replica, engine)][a : b + 1]
        elif count:  # spans may lie on several engines (a re-admitted request can change micro-batch slot)
            spans = (place[(r.replica, engine)][a : b + 1] for a, b, engine in r.spans)
            index[start:stop] = np.sort(np.concatenate([extra_place[first_extra : first_extra + extras], *spans]))
        start, first_extra = stop, first_extra + extras
    timeline = np.concatenate(lines) if lines else np.empty(0, dtype=np.int64)
    return timeline, index, np.array(counts, dtype=np.int64)


def batch_table(log: np.ndarray, stretches: list | None = None) -> pa.Table:
    """The batches, one row each, by start (then replica and engine), not in the order they were logged."""
    # Column by column: the stretches' rows come column-major, and a column of a row-major table
    # is read once, not once a gather.
    extra = stretch_rows(stretches) if stretches else None
    columns = [
        log[:, i] if extra is None else np.concatenate((log[:, i], extra[:, i])) for i in range(len(BATCH_COLUMNS))
    ]
    order = np.lexsort((columns[1], columns[0], columns[2]))
    return pa.table(
        {
            name: pa.array(column[order] if name.endswith("_s") else column[order].astype(np.int64))
            for name, column in zip(BATCH_COLUMNS, columns)
        }
    )
