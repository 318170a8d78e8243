"""A simulated RunResult in its compact form, exact to the bit: the iteration timeline once, and
per token only where it lies on it.

A running request makes one token an iteration, so a trial's token times are few distinct
instants (the end of each iteration) shared by the requests in each batch. Kept here: each
replica's iteration end times (microsecond integers, as second differences: a decode stretch's
iterations lengthen smoothly, so these are mostly tiny), each token's step along that timeline
(mostly 1), and per request its times relative to its arrival. Simulated times are whole
microseconds (sim.result.to_microseconds), so the integers give back the same floats. The
simulator hands over each token's place on the timeline with its result (RunResult.token_timeline,
from the iteration that made it), so a write sorts no tokens; a result without one is sorted here,
all its replicas' tokens on one timeline.

Both long arrays are mostly one small value, so each is kept as its usual part and its
exceptions (where they lie, and their values): the token steps as the tokens that do not step 1,
the second differences as one byte each plus the few that do not fit one. A tenth of the bytes
go to the compressor, which is what a cache write spent most of its time on.

The file is one Parquet row: a JSON header (the trial's info, the key, each array's dtype) and
each array as one binary value of its bytes, its pages checksummed, so damage is found on read.
Files of the first format (whole arrays, as Parquet lists) are still read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capsim.sim.result import RunResult, requests_table

FORMAT = "capsim-compact-trial/2"
FORMATS = ("capsim-compact-trial/1", FORMAT)  # read; the first kept token_steps and timeline_d2 whole
NAN = np.iinfo(np.int64).min  # an undefined time (never scheduled, no first token, not finished)
TIME_COLUMNS = ("scheduled_s", "first_token_s", "finish_s")
COUNT_COLUMNS = ("prompt_tokens", "output_tokens", "generated_tokens", "preemptions", "replica")


class CompactError(ValueError):
    """A compact file that is damaged or not one."""


def microseconds(seconds: np.ndarray) -> np.ndarray:
    """Whole microseconds as int64, NaN as the NAN sentinel."""
    seconds = np.asarray(seconds, dtype=np.float64)
    scaled = np.round(seconds * 1e6)
    known = ~np.isnan(scaled)
    if known.all():  # token times: no NaN, so no masked copies the size of the trial
        return scaled.astype(np.int64)
    out = np.full(len(seconds), NAN, dtype=np.int64)
    out[known] = scaled[known].astype(np.int64)
    return out


def seconds(us: np.ndarray) -> np.ndarray:
    out = us.astype(np.float64) / 1e6
    out[us == NAN] = np.nan
    return out


def exact_microseconds(seconds_: np.ndarray) -> np.ndarray:
    """microseconds(seconds_), refusing times that are not whole microseconds (they would not come back)."""
    us = microseconds(seconds_)
    known = us != NAN
    back = us / 1e6 if known.all() else seconds(us)  # what seconds() gives, without its masked copy where it can
    if not np.array_equal(back, seconds_, equal_nan=not known.all()):
        raise ValueError("only results with whole-microsecond times (simulated ones) have a compact form")
    return us


def timeline_and_index(us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `us`, sorted, and each value's position among them. `us` is many
    sorted runs (each request's tokens): a stable sort merges runs fast, and its order places
    every value without a search."""
    order = np.argsort(us, kind="stable")
    ordered = us[order]
    new = np.empty(len(ordered), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    index = np.empty(len(ordered), dtype=np.int64)
    index[order] = np.cumsum(new) - 1
    return ordered[new], index


def sorted_timeline(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """A result's token_timeline where it does not come with one (not the simulator's): its
    distinct token times, sorted, and each token's position among them."""
    return timeline_and_index(exact_microseconds(result.token_times[0]))


def write_compact(result: RunResult, path: str | Path, key: str | None = None) -> None:
    """Write result (its requests and info; batches are not kept) to path, one Parquet file;
    `key` (a cache key) is stored with it, for read_compact to check."""
    _, offsets = result.token_times
    timeline, index = result.token_timeline or sorted_timeline(result)
    steps = np.diff(index, prepend=0)
    firsts = offsets[:-1][np.diff(offsets) > 0]
    first_index = np.full(len(offsets) - 1, -1, dtype=np.int64)
    first_index[np.diff(offsets) > 0] = index[firsts]
    steps[firsts] = 1  # a request's first token is placed by first_index (its step is never read); the rest step along
    arrival = exact_microseconds(result.column("arrival_s"))
    counts = np.diff(offsets)
    first_token, last_token = np.zeros(len(counts), dtype=np.int64), np.zeros(len(counts), dtype=np.int64)
    first_token[counts > 0] = timeline[index[offsets[:-1][counts > 0]]]
    last_token[counts > 0] = timeline[index[offsets[1:][counts > 0] - 1]]
    status_words, status = np.unique(result.column("status").astype(str), return_inverse=True)
    reason_words, reason = np.unique(result.column("reason").astype(str), return_inverse=True)
    header = {
        "format": FORMAT,
        "key": key,
        "info": result.info,
        "status": status_words.tolist(),
        "reason": reason_words.tolist(),
    }
    d2 = np.diff(np.diff(timeline, prepend=0), prepend=0)
    byte = (d2 >= -128) & (d2 <= 127)
    arrays = {
        "timeline_d2_byte": np.where(byte, d2, 0).astype(np.int8),
        **exceptions("timeline_d2", d2, ~byte),
        **exceptions("token_steps", steps, steps != 1),
        "tokens_beyond_generated": narrow(np.diff(offsets) - result.column("generated_tokens")),  # 0 but for odd cases
        "first_index_steps": narrow(np.diff(first_index, prepend=0)),
        "id_steps": narrow(np.diff(result.column("id").astype(np.int64), prepend=0)),
        "arrival_steps": narrow(np.diff(arrival, prepend=0)),
        "status": status.astype(np.int8),
        "reason": reason.astype(np.int16),
        "scheduled_s": relative(exact_microseconds(result.column("scheduled_s")), arrival),
        # the first token's and the finish time are, but for rare cases, a token time: kept as the difference
        "first_token_s": relative(exact_microseconds(result.column("first_token_s")), first_token),
        "finish_s": relative(exact_microseconds(result.column("finish_s")), last_token),
        **{name: narrow(result.column(name).astype(np.int64)) for name in COUNT_COLUMNS},
    }
    arrays["output_tokens"] = narrow(
        result.column("output_tokens") - result.column("generated_tokens")
    )  # 0 once finished
    header["dtypes"] = {name: array.dtype.str for name, array in arrays.items()}  # with the byte order
    table = pa.table(
        {
            "header": pa.array([json.dumps(header, default=str).encode()], pa.binary()),
            # each array as its bytes: Parquet would widen int8 and int16 to 4 bytes, 4x the work to compress
            **{name: pa.array([array.tobytes()], pa.binary()) for name, array in arrays.items()},
        }
    )
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=7,
        use_dictionary=False,
        write_statistics=False,
        write_page_checksum=True,
        store_schema=False,
    )


def exceptions(name: str, values: np.ndarray, where: np.ndarray) -> dict[str, np.ndarray]:
    """The entries of `values` at the mask `where`: their positions (as steps) and their values."""
    at = np.flatnonzero(where)
    return {f"{name}_at": narrow(np.diff(at, prepend=0)), f"{name}_values": narrow(values[at])}


def with_exceptions(usual: np.ndarray, arrays: dict, name: str) -> np.ndarray:
    """`usual` (int64) with the exceptions that `exceptions(name, ...)` kept put back."""
    at = np.cumsum(arrays[f"{name}_at"].astype(np.int64))
    if at.size and (at.min() < 0 or at.max() >= len(usual)):  # a negative one would wrap round, unseen
        raise CompactError(f"an exception of {name} lies outside it")
    usual[at] = arrays[f"{name}_values"]
    return usual


def relative(us: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.where(us == NAN, NAN, us - base)


def narrow(values: np.ndarray) -> np.ndarray:
    """The smallest of int8/16/32/64 that holds the values: the file stores, and compresses, fewer bytes."""
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if not len(values) or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dtype)
    return values.astype(np.int64)


def read_compact(path: str | Path, key: str | None = None) -> RunResult:
    """The RunResult written by write_compact, bit for bit; CompactError if the file is damaged,
    or was written under another key than `key` (when given)."""
    try:
        with open(path, "rb") as file:  # a missing entry costs an open, not pyarrow's dataset machinery
            table = pq.ParquetFile(file, page_checksum_verification=True).read()
        header = json.loads(table.column("header")[0].as_py())
        if not isinstance(header, dict) or header.get("format") not in FORMATS:
            raise CompactError(f"not a {FORMAT} file")
        if key is not None and header.get("key") != key:
            raise CompactError(f"written for another trial (key {header.get('key')}, not {key})")
        names = [name for name in table.column_names if name != "header"]
        if header["format"] == FORMAT:
            arrays = {name: np.frombuffer(table.column(name)[0].as_buffer(), header["dtypes"][name]) for name in names}
        else:
            arrays = {name: np.asarray(table.column(name)[0].values.to_numpy(zero_copy_only=False)) for name in names}
        arrays["output_tokens"] = arrays["output_tokens"].astype(np.int64) + arrays["generated_tokens"]
        counts = arrays["tokens_beyond_generated"].astype(np.int64) + arrays["generated_tokens"]
        offsets = np.concatenate(([0], np.cumsum(counts)))
        if header["format"] == FORMAT:
            d2 = with_exceptions(arrays["timeline_d2_byte"].astype(np.int64), arrays, "timeline_d2")
            steps = with_exceptions(np.ones(offsets[-1], dtype=np.int64), arrays, "token_steps")
        else:
            d2, steps = arrays["timeline_d2"].astype(np.int64), arrays["token_steps"].astype(np.int64)
        timeline = np.cumsum(np.cumsum(d2))
        first_index = np.cumsum(arrays["first_index_steps"].astype(np.int64))
        n = len(counts)
        if steps.size != offsets[-1] or any(
            len(arrays[name]) != n
            for name in (
                *TIME_COLUMNS,
                *COUNT_COLUMNS,
                "status",
                "reason",
                "id_steps",
                "arrival_steps",
                "first_index_steps",
            )
        ):
            raise CompactError("its arrays do not agree in length")
        has = counts > 0
        walked = np.cumsum(steps)  # along each request's tokens: its steps since its first token
        index = walked - np.repeat(walked[offsets[:-1][has]], counts[has]) + np.repeat(first_index[has], counts[has])
        if index.size and (index.min() < 0 or index.max() >= len(timeline)):
            raise CompactError("a token lies off the timeline")
        arrival = np.cumsum(arrays["arrival_steps"].astype(np.int64))
        token_us = timeline[index]
        first_token, last_token = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        first_token[has], last_token[has] = token_us[offsets[:-1][has]], token_us[offsets[1:][has] - 1]
        bases = {"scheduled_s": arrival, "first_token_s": first_token, "finish_s": last_token}
        times = {name: seconds(np.where(arrays[name] == NAN, NAN, arrays[name] + bases[name])) for name in TIME_COLUMNS}
        status = np.asarray(header["status"], dtype=object)[arrays["status"]] if n else []
        reason = np.asarray(header["reason"], dtype=object)[arrays["reason"]] if n else []
        table = requests_table(
            np.cumsum(arrays["id_steps"].astype(np.int64)),
            arrays["replica"],
            seconds(arrival),
            times["scheduled_s"],
            times["first_token_s"],
            times["finish_s"],
            list(status),
            list(reason),
            arrays["prompt_tokens"],
            arrays["output_tokens"],
            arrays["generated_tokens"],
            arrays["preemptions"],
            seconds(token_us),
            offsets,
        )
    except (CompactError, FileNotFoundError):
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, pa.ArrowException) as error:
        raise CompactError(f"unreadable ({type(error).__name__}: {error})") from None
    return RunResult(table, None, header["info"], token_timeline=(timeline, index))
