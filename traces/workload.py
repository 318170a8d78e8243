"""Workload: one row a request, held as a pyarrow Table and stored as Parquet.

Columns
- prompt_tokens (int64, > 0) and output_tokens (int64, > 0): always present.
- arrival_s (float64, seconds from the first request, non-decreasing): present once arrivals are
  known, either from the trace file's own timestamps or from an arrival process.
- prefix_group (int64, -1 = none) and prefix_tokens (int64): requests of one group share their
  first prefix_tokens prompt tokens (Mooncake's hash_ids, or a user's Parquet).
- session_id: passed through untouched when a file has it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capsim.common.files import write_atomically
from capsim.traces.errors import TraceError
from capsim.traces.seeding import rng_for

LENGTH_COLUMNS = ("prompt_tokens", "output_tokens")
MAX_TOKENS = 2**31 - 1  # token counts beyond int32 are no real request, and would overflow downstream
OPTIONAL_COLUMNS = ("arrival_s", "prefix_group", "prefix_tokens", "session_id")
_METADATA_KEY = b"capsim.workload"


class Workload:
    """An immutable table of requests; every transformation returns a new Workload."""

    def __init__(self, table: pa.Table, info: dict | None = None):
        missing = [c for c in LENGTH_COLUMNS if c not in table.column_names]
        if missing:
            raise TraceError(f"a workload needs the columns {', '.join(missing)}")
        self.table = table.replace_schema_metadata(None)
        self.info = dict(info or {})

    @classmethod
    def from_arrays(
        cls,
        prompt_tokens,
        output_tokens,
        arrival_s=None,
        *,
        prefix_group=None,
        prefix_tokens=None,
        session_id=None,
        info: dict | None = None,
        where: str = "workload",
        row_name=lambda i: f"request {i + 1}",
        labels: dict[str, str] | None = None,
    ) -> Workload:
        """Build a Workload from arrays, checking every value.

        Errors name the input (`where`), its i-th row (`row_name(i)`, a file's line, say) and the
        column as the input calls it (`labels`, e.g. {"prompt_tokens": "ContextTokens"}).
        """
        label = (labels or {}).get
        columns = {
            name: _check_lengths(values, label(name, name), where, row_name)
            for name, values in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens))
        }
        if len(columns["prompt_tokens"]) != len(columns["output_tokens"]):
            raise TraceError(f"{where}: prompt_tokens and output_tokens differ in length")
        if arrival_s is not None:
            columns["arrival_s"] = _check_arrivals(arrival_s, where, row_name)
        if prefix_group is not None:
            columns["prefix_group"] = _check_whole(
                prefix_group, "prefix_group", where, row_name, low=-(2**63), high=2**63 - 1
            )
            columns["prefix_tokens"] = _check_whole(
                prefix_tokens, "prefix_tokens", where, row_name, low=0, high=MAX_TOKENS
            )
            over = columns["prefix_tokens"] > columns["prompt_tokens"]
            if over.any():
                raise TraceError(f"{where}: {row_name(_first_bad(over))}: prefix_tokens exceeds the prompt's tokens")
        if session_id is not None:
            columns["session_id"] = pa.array(session_id)
        return cls(pa.table(columns), info)

    # ---- columns -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def prompt_tokens(self) -> np.ndarray:
        return self._numpy("prompt_tokens")

    @property
    def output_tokens(self) -> np.ndarray:
        return self._numpy("output_tokens")

    @property
    def has_arrivals(self) -> bool:
        return "arrival_s" in self.table.column_names

    @property
    def arrival_s(self) -> np.ndarray:
        if not self.has_arrivals:
            raise TraceError("this workload has no arrival times yet: give it an arrival process")
        return self._numpy("arrival_s")

    def _numpy(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()

    # ---- transformations ---------------------------------------------------------------------

    def head(self, n: int) -> Workload:
        """The first n requests (an error if the workload has fewer)."""
        if n <= 0:
            raise TraceError(f"number of requests must be positive, got {n}")
        if n > len(self):
            raise TraceError(
                f"{self.info.get('source', 'the trace')} has only {len(self)} requests; ask for at most {len(self)}"
            )
        return Workload(self.table.slice(0, n), self.info | {"num_requests": n})

    def shuffled(self, seed: int) -> Workload:
        """Requests in a seeded random order; arrival times stay where they were, lengths move."""
        order = rng_for(seed, "shuffle").permutation(len(self))
        table = self.table.take(pa.array(order))
        if self.has_arrivals:
            table = table.set_column(table.column_names.index("arrival_s"), "arrival_s", self.table.column("arrival_s"))
        return Workload(table, self.info | {"shuffle_seed": seed})

    def capped(self, max_total_tokens: int) -> Workload:
        """Shrink prompt and output in proportion where prompt + output exceeds the cap.

        As Vidur's trace length generator does: the prompt/output ratio is kept, the total becomes
        exactly the cap, and each side keeps at least one token.
        """
        if max_total_tokens < 2:
            raise TraceError(f"max total tokens must be at least 2, got {max_total_tokens}")
        prompt, output = self.prompt_tokens, self.output_tokens
        total = prompt + output
        over = total > max_total_tokens
        if not over.any():
            return Workload(self.table, self.info | {"max_total_tokens": max_total_tokens})
        new_prompt = prompt.copy()
        new_prompt[over] = np.clip(
            np.rint(max_total_tokens * prompt[over] / total[over]), 1, max_total_tokens - 1
        ).astype(np.int64)
        new_output = output.copy()
        new_output[over] = max_total_tokens - new_prompt[over]
        return self._with_lengths(new_prompt, new_output, {"max_total_tokens": max_total_tokens})

    def scaled(self, prompt_scale: float = 1.0, output_scale: float = 1.0) -> Workload:
        """Multiply lengths by scale factors (rounded, at least one token), as Vidur's are."""
        for name, factor in (("prompt", prompt_scale), ("output", output_scale)):
            if not factor > 0:
                raise TraceError(f"{name} scale factor must be positive, got {factor}")
            if not factor < float("inf"):
                raise TraceError(f"{name} scale factor must be a finite number, got {factor}")
        prompt = np.maximum(1, np.rint(self.prompt_tokens * prompt_scale))
        output = np.maximum(1, np.rint(self.output_tokens * output_scale))
        for name, values in (("prompt", prompt), ("output", output)):
            if values.max(initial=0) > MAX_TOKENS:
                raise TraceError(
                    f"the {name} scale factor makes requests of {values.max():.3g} tokens; "
                    f"at most {MAX_TOKENS} are possible"
                )
        prompt, output = prompt.astype(np.int64), output.astype(np.int64)
        return self._with_lengths(prompt, output, {"prompt_scale": prompt_scale, "output_scale": output_scale})

    def with_arrivals(self, arrival_s: np.ndarray, **info) -> Workload:
        """The same requests arriving at the given times (seconds, non-decreasing)."""
        arrivals = pa.array(_check_arrivals(arrival_s, "arrival times"))
        if len(arrivals) != len(self):
            raise TraceError(f"{len(arrivals)} arrival times for {len(self)} requests")
        table = self.table
        if self.has_arrivals:
            table = table.set_column(table.column_names.index("arrival_s"), "arrival_s", arrivals)
        else:
            table = table.add_column(0, "arrival_s", arrivals)
        return Workload(table, self.info | info)

    def _with_lengths(self, prompt: np.ndarray, output: np.ndarray, info: dict) -> Workload:
        table = self.table
        for name, values in (("prompt_tokens", prompt), ("output_tokens", output)):
            table = table.set_column(table.column_names.index(name), name, pa.array(values))
        return Workload(table, self.info | info)

    # ---- storage -----------------------------------------------------------------------------

    def to_parquet(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file, then rename): a crash never leaves half a file."""
        path = Path(path)
        table = self.table.replace_schema_metadata({_METADATA_KEY: json.dumps(self.info, default=str)})
        write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        return path

    @classmethod
    def from_parquet_table(cls, table: pa.Table, where: str) -> Workload:
        """Check a table read from a capsim Parquet file and turn it into a Workload."""
        missing = [c for c in LENGTH_COLUMNS if c not in table.column_names]
        if missing:
            raise TraceError(
                f"{where}: missing column {missing[0]!r}; a capsim workload has "
                f"{', '.join(LENGTH_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
            )
        raw_info = (table.schema.metadata or {}).get(_METADATA_KEY)
        try:
            info = json.loads(raw_info) if raw_info else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TraceError(f"{where}: its capsim.workload metadata is not valid JSON (a damaged file?)") from None
        if not isinstance(info, dict):
            raise TraceError(f"{where}: its capsim.workload metadata is not a JSON object (a damaged file?)")
        get = lambda name: table.column(name).to_numpy() if name in table.column_names else None  # noqa: E731
        if (get("prefix_group") is None) != (get("prefix_tokens") is None):
            raise TraceError(f"{where}: prefix_group and prefix_tokens must come together")
        return cls.from_arrays(
            _column_as_float(table, "prompt_tokens", where),
            _column_as_float(table, "output_tokens", where),
            None if get("arrival_s") is None else _column_as_float(table, "arrival_s", where),
            prefix_group=get("prefix_group"),
            prefix_tokens=get("prefix_tokens"),
            session_id=table.column("session_id") if "session_id" in table.column_names else None,
            info=info,
            where=where,
        )


def _column_as_float(table: pa.Table, name: str, where: str) -> np.ndarray:
    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise TraceError(f"{where}: column {name!r} must be numeric, found {column.type}")
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_lengths(values, name: str, where: str, row_name) -> np.ndarray:
    """Token counts as int64, or a TraceError naming the first bad row."""
    array = np.asarray(values, dtype=np.float64)
    problems = (
        (~np.isfinite(array), "is empty or not a number"),
        (array != np.floor(array), "is not a whole number of tokens"),
        (array <= 0, "must be a positive number of tokens"),
        (array > MAX_TOKENS, f"is too many tokens (at most {MAX_TOKENS})"),
    )
    for mask, what in problems:
        if mask.any():
            i = _first_bad(mask)
            raise TraceError(f"{where}: {row_name(i)}, column {name!r}: value {array[i]:g} {what}")
    return array.astype(np.int64)


def _check_whole(values, name: str, where: str, row_name, low: int, high: int) -> np.ndarray:
    """Whole numbers in [low, high] as int64, or a TraceError naming the first bad row."""
    array = np.asarray(values)
    if array.dtype.kind in "iu" and (not array.size or (array.min() >= low and array.max() <= high)):
        return array.astype(np.int64)
    try:
        floats = array.astype(np.float64)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: column {name!r} must hold whole numbers, found {array.dtype}") from None
    bad = ~np.isfinite(floats) | (floats != np.floor(floats)) | (floats < low) | (floats > high)
    if bad.any():
        i = _first_bad(bad)
        raise TraceError(
            f"{where}: {row_name(i)}, column {name!r}: {floats[i]:g} is not a whole number in [{low}, {high}]"
        )
    return floats.astype(np.int64)


def _check_arrivals(values, where: str, row_name=lambda i: f"request {i + 1}") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size and not np.isfinite(array).all():
        i = _first_bad(~np.isfinite(array))
        raise TraceError(f"{where}: {row_name(i)}, arrival time {array[i]} is not a time")
    if array.size and (array < 0).any():
        i = _first_bad(array < 0)
        raise TraceError(f"{where}: {row_name(i)}, arrival time {array[i]} is negative")
    if array.size > 1 and (np.diff(array) < 0).any():
        i = _first_bad(np.diff(array) < 0) + 1
        raise TraceError(f"{where}: {row_name(i)} arrives before the request above it")
    return array
