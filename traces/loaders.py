"""Read trace files of the formats people publish into Workloads.

The format is chosen by the file's content (Parquet magic bytes, a JSON line, or the CSV header's
columns) unless the caller names it. Every loader checks every value and reports the first bad
one by file, line and column; nothing is written anywhere.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from capsim.traces.errors import TraceError
from capsim.traces.workload import Workload

MOONCAKE_BLOCK_TOKENS = 512
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, as spreadsheet programs write it
csv.field_size_limit(1 << 30)  # traces may carry whole prompts as text; the default 128 KiB is too small


@dataclass(frozen=True)
class CsvFormat:
    """A CSV trace format: which file columns hold the prompt, output and arrival time."""

    name: str
    prompt: str
    output: str
    arrival: str | None  # None: the format has no timestamps
    arrival_optional: bool = False
    description: str = ""


CSV_FORMATS = {
    "sarathi": CsvFormat(
        "sarathi",
        "num_prefill_tokens",
        "num_decode_tokens",
        "arrived_at",
        arrival_optional=True,
        description="processed traces of Sarathi-Serve, Etalon and Vidur (arrived_at optional, seconds)",
    ),
    "azure": CsvFormat(
        "azure",
        "ContextTokens",
        "GeneratedTokens",
        "TIMESTAMP",
        description="Azure LLM inference trace 2023/2024 (TIMESTAMP as a date-time)",
    ),
    "burstgpt": CsvFormat(
        "burstgpt",
        "Request tokens",
        "Response tokens",
        "Timestamp",
        description="BurstGPT (Timestamp in seconds; failed rows with 0 response tokens are skipped)",
    ),
}
FORMATS = {
    **{name: f.description for name, f in CSV_FORMATS.items()},
    "mooncake": "Mooncake JSONL (timestamp in ms, input_length, output_length, hash_ids)",
    "parquet": "a workload written by capsim",
}


def load_trace(path: str | Path, format: str | None = None) -> Workload:
    """Load a trace file into a Workload, in file order sorted stably by arrival time."""
    path = Path(path)
    if path.is_dir():
        raise TraceError(f"{path}: is a folder; give a trace file")
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    if format is not None and format not in FORMATS:
        raise TraceError(f"unknown trace format {format!r}; known formats: {', '.join(FORMATS)}")
    try:
        format = format or detect_format(path)
        if format == "parquet":
            return _load_parquet(path)
        if format == "mooncake":
            return _load_mooncake(path)
        return _load_csv(path, CSV_FORMATS[format])
    except OSError as error:
        raise TraceError(f"{path}: cannot read the file ({error.strerror or error})") from None


def detect_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise TraceError(f"{path}: the file is empty")
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.removeprefix(BOM).lstrip().startswith(b"{"):
        return "mooncake"
    header = _csv_header(path)
    for name, fmt in CSV_FORMATS.items():
        if fmt.prompt in header and fmt.output in header:
            return name
    known = "; ".join(f"{n}: {f.prompt}, {f.output}" for n, f in CSV_FORMATS.items())
    raise TraceError(
        f"{path}: unknown trace format (header: {', '.join(header)}). "
        f"A CSV trace needs the length columns of one of these formats ({known}); "
        "or name the format with --format"
    )


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        try:
            return next(csv.reader(f), [])
        except csv.Error as error:
            raise TraceError(f"{path}: line 1 (the header) is not valid CSV: {error}") from None


def _load_csv(path: Path, fmt: CsvFormat) -> Workload:
    header = _csv_header(path)
    for column in (fmt.prompt, fmt.output) + ((fmt.arrival,) if fmt.arrival and not fmt.arrival_optional else ()):
        if column not in header:
            raise TraceError(
                f"{path}: missing column {column!r} for the {fmt.name} format (header: {', '.join(header)})"
            )
    types = {fmt.prompt: pa.float64(), fmt.output: pa.float64()}
    with_arrivals = fmt.arrival is not None and fmt.arrival in header
    if with_arrivals:
        types[fmt.arrival] = pa.string() if fmt.name == "azure" else pa.float64()
    twice = [column for column in types if header.count(column) > 1]
    if twice:
        raise TraceError(
            f"{path}: the header names {', '.join(map(repr, twice))} more than once: keep one column of each name"
        )

    def read(block_size: int):
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=True, block_size=block_size),
            convert_options=pacsv.ConvertOptions(include_columns=list(types), column_types=types),
        )

    try:
        try:
            table = read(1 << 24)
        except pa.ArrowInvalid as error:
            if "straddl" not in str(error):
                raise
            table = read(min(path.stat().st_size + 1, 2**31 - 1))  # a field larger than a block: the file as one block
    except pa.ArrowInvalid as error:
        raise _locate_csv_problem(path, header, types, error) from None
    if table.num_rows == 0:
        raise TraceError(f"{path}: the file has a header but no requests")
    if table.num_rows < _record_lines(path) - 1:  # a quoted field ran over lines: legitimate, or a quote left open
        problem = _locate_csv_problem(path, header, types, None)
        if problem is not None:
            raise problem

    prompt = table.column(fmt.prompt).to_numpy(zero_copy_only=False)
    output = table.column(fmt.output).to_numpy(zero_copy_only=False)
    info = {"source": str(path), "format": fmt.name}
    keep = None
    if fmt.name == "burstgpt":
        keep = output != 0  # failed requests are logged with no response
        info["skipped_failed_requests"] = int((~keep).sum())
    arrivals = None
    if with_arrivals:
        column = table.column(fmt.arrival)
        arrivals = (
            _parse_datetimes(column, path, fmt.arrival)
            if fmt.name == "azure"
            else column.to_numpy(zero_copy_only=False)
        )
    return _build(
        path,
        prompt,
        output,
        arrivals,
        keep,
        info,
        {"prompt_tokens": fmt.prompt, "output_tokens": fmt.output},
        line_offset=2,
    )


def _build(path, prompt, output, arrivals, keep, info, labels, line_offset, **extra) -> Workload:
    """Check rows (naming their line in the file), drop skipped ones, sort by arrival."""
    lines = np.arange(len(prompt)) + line_offset
    if keep is not None:
        prompt, output, lines = prompt[keep], output[keep], lines[keep]
        arrivals = None if arrivals is None else arrivals[keep]
        extra = {k: v[keep] for k, v in extra.items()}
        if len(prompt) == 0:
            raise TraceError(f"{path}: every request in the file failed; nothing to replay")
    if arrivals is not None:
        bad = ~np.isfinite(arrivals)
        if bad.any():
            raise TraceError(f"{path}: line {lines[np.flatnonzero(bad)[0]]}: empty or invalid timestamp")
        order = np.argsort(arrivals, kind="stable")
        if (order != np.arange(len(order))).any():
            prompt, output, lines, arrivals = prompt[order], output[order], lines[order], arrivals[order]
            extra = {k: v[order] for k, v in extra.items()}
        arrivals = arrivals - arrivals[0]
    return Workload.from_arrays(
        prompt,
        output,
        arrivals,
        info=info,
        where=str(path),
        row_name=lambda i: f"line {lines[i]}",
        labels=labels,
        **extra,
    )


def _parse_datetimes(column: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """Date-time strings (with or without a zone offset) as seconds since the epoch."""
    import pyarrow.compute as pc  # here: a third of the imports of every search's workers otherwise

    for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            stamps = pc.cast(column, target)
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    else:
        strings = column.to_pylist()
        for i, value in enumerate(strings):
            try:
                pc.cast(pa.array([value]), pa.timestamp("ns", tz="UTC"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                try:
                    pc.cast(pa.array([value]), pa.timestamp("ns"))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise TraceError(
                        f"{path}: line {i + 2}, column {name!r}: {value!r} is not a date-time "
                        "(expected e.g. 2023-11-16 18:15:46.6805900)"
                    ) from None
        raise TraceError(f"{path}: column {name!r} mixes date-times with and without a zone offset")
    nanos = pc.cast(stamps.cast(pa.timestamp("ns")), pa.int64()).to_numpy(zero_copy_only=False)
    return np.where(pc.is_null(stamps).to_numpy(zero_copy_only=False), np.nan, nanos / 1e9)


def _record_lines(path: Path) -> int:
    """Non-empty lines of the file: its records, if no quoted field holds a line break."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            lines += block.count(b"\n") - block.count(b"\n\n") - block.count(b"\n\r\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _locate_csv_problem(path: Path, header: list[str], types: dict, error: Exception | None) -> TraceError | None:
    """pyarrow names no line when a CSV is malformed: scan the file once to find it for the user.
    With no error from pyarrow, None when the scan finds nothing wrong either."""
    wanted = [(header.index(c), c) for c, t in types.items() if t == pa.float64()]
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f, strict=True)
        next(reader, None)
        while True:
            line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                return TraceError(f"{path}: line {line}: malformed CSV ({error}); is a quote left open?")
            if not row:
                continue
            if len(row) != len(header):
                return TraceError(
                    f"{path}: line {line} has {len(row)} fields but the header has {len(header)} "
                    "(is the file truncated or malformed?)"
                )
            for index, column in wanted:
                value = row[index].strip()
                if value:
                    try:
                        float(value)
                    except ValueError:
                        return TraceError(f"{path}: line {line}, column {column!r}: {value!r} is not a number")
    return TraceError(f"{path}: cannot read the file as CSV: {error}") if error is not None else None


def _load_parquet(path: Path) -> Workload:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise TraceError(f"{path}: not a readable Parquet file (truncated or corrupt?): {error}") from None
    if table.num_rows == 0:
        raise TraceError(f"{path}: the file holds no requests")
    workload = Workload.from_parquet_table(table, str(path))
    workload.info.setdefault("source", str(path))
    return workload


def _load_mooncake(path: Path) -> Workload:
    """Mooncake JSONL: one request a line; shared leading hash_ids become prefix groups.

    Mooncake hashes each 512-token block together with everything before it, so a hash_id that
    two requests share at position k means they share all k+1 leading blocks. A request's prefix
    group is the hash_id of the last of its leading blocks that some other request also has.
    """
    timestamps, prompt, output, hash_lists = [], [], [], []
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                row = (record["timestamp"], record["input_length"], record["output_length"])
            except json.JSONDecodeError as error:
                raise TraceError(
                    f"{path}: line {line_number} is not valid JSON ({error.msg}); is the file truncated?"
                ) from None
            except RecursionError:
                raise TraceError(f"{path}: line {line_number} nests too deeply to be a Mooncake request") from None
            except (KeyError, TypeError) as error:
                raise TraceError(
                    f"{path}: line {line_number} lacks the field {error}; a Mooncake line has "
                    "timestamp, input_length, output_length and optionally hash_ids"
                ) from None
            for field, value in zip(("timestamp", "input_length", "output_length"), row):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) > 1e300:
                    raise TraceError(f"{path}: line {line_number}, field {field!r}: {value!r} is not a number")
            hashes = record.get("hash_ids") or []
            if not isinstance(hashes, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) and -(2**63) <= h < 2**63 for h in hashes
            ):
                raise TraceError(f"{path}: line {line_number}, field 'hash_ids': must be a list of integers")
            timestamps.append(row[0])
            prompt.append(row[1])
            output.append(row[2])
            hash_lists.append(hashes)
    if not prompt:
        raise TraceError(f"{path}: the file holds no requests")
    prompt_array = np.asarray(prompt, dtype=np.float64)
    group, shared_tokens = _prefix_groups(hash_lists, prompt_array)
    return _build(
        path,
        prompt_array,
        np.asarray(output, dtype=np.float64),
        np.asarray(timestamps, dtype=np.float64) / 1000.0,
        None,
        {"source": str(path), "format": "mooncake"},
        {"prompt_tokens": "input_length", "output_tokens": "output_length"},
        line_offset=1,
        prefix_group=group,
        prefix_tokens=shared_tokens,
    )


def _prefix_groups(hash_lists: list[list[int]], prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts: dict[int, int] = {}
    for hashes in hash_lists:
        for h in hashes:
            counts[h] = counts.get(h, 0) + 1
    group = np.full(len(hash_lists), -1, dtype=np.int64)
    blocks = np.zeros(len(hash_lists), dtype=np.int64)
    for i, hashes in enumerate(hash_lists):
        shared = 0
        while shared < len(hashes) and counts[hashes[shared]] > 1:
            shared += 1
        if shared:
            group[i], blocks[i] = hashes[shared - 1], shared
    return group, np.minimum(blocks * MOONCAKE_BLOCK_TOKENS, np.nan_to_num(prompt).astype(np.int64))
