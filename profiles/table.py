"""ProfileTable: one row a measured (or estimated) batch, its composition, features and latency.

Stored as Parquet with the metadata (model, hardware or device, TP/PP, dtype, engine, source =
measured | analytic, versions, date) in the schema, so a file says where its numbers came from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from capsim.common.files import write_atomically
from capsim.profiles.batch import FEATURES, BatchShape
from capsim.profiles.errors import ProfileError

SOURCES = ("measured", "kernel-db", "analytic")
REQUIRED_METADATA = ("model", "hardware", "tp", "pp", "dtype", "engine", "source")
_METADATA_KEY = b"capsim.profile"
_LIST = pa.list_(pa.int32())


def _checked_metadata(metadata) -> dict:
    """The metadata every reader relies on, of the types it relies on."""
    if not isinstance(metadata, dict):
        raise ProfileError("its profile metadata is not a mapping")
    for key in ("model", "hardware", "dtype", "engine", "source"):
        if key in metadata and not isinstance(metadata[key], str):
            raise ProfileError(f"its metadata's {key} must be text, got {metadata[key]!r}")
    for key in ("tp", "pp"):
        value = metadata.get(key)
        if key in metadata and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31):
            raise ProfileError(f"its metadata's {key} must be a whole number of GPUs, got {value!r}")
    return metadata


def _check_columns(table: pa.Table) -> None:
    """Numeric features without gaps, and batch kinds capsim knows."""
    for name in (*FEATURES, "latency_s"):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) or column.null_count:
            raise ProfileError(
                f"its column {name} must be numbers without gaps, got {column.type}"
                + (f" with {column.null_count} missing" if column.null_count else "")
            )
        values = column.to_numpy().astype(np.float64)
        if name != "latency_s" and not (np.isfinite(values) & (values >= 0)).all():
            raise ProfileError(f"its column {name} holds a negative or non-finite value")
    kinds = set(table.column("kind").to_pylist()) if pa.types.is_string(table.column("kind").type) else None
    if kinds is None or not kinds <= {"prefill", "decode", "mixed"}:
        raise ProfileError("its column kind must hold prefill, decode or mixed")


@dataclass
class ProfileTable:
    table: pa.Table
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise ProfileError(f"profile metadata lacks {', '.join(missing)}")
        if self.metadata["source"] not in SOURCES:
            raise ProfileError(f"profile source must be one of {', '.join(SOURCES)}, got {self.metadata['source']!r}")

    @classmethod
    def from_batches(cls, shapes: list[BatchShape], latencies_s, metadata: dict) -> ProfileTable:
        latencies = np.asarray(latencies_s, dtype=np.float64)
        if len(shapes) != len(latencies):
            raise ProfileError("one latency per batch is needed")
        if len(latencies) and not (np.isfinite(latencies) & (latencies > 0)).all():
            raise ProfileError("batch latencies must be positive seconds")
        features = np.array([s.features() for s in shapes], dtype=np.int64).reshape(len(shapes), len(FEATURES))
        columns = {
            "kind": pa.array([s.kind for s in shapes], pa.string()),
            "prefill_chunks": pa.array([list(s.prefill_chunks) for s in shapes], _LIST),
            "prefill_contexts": pa.array([list(s.prefill_contexts) for s in shapes], _LIST),
            "decode_contexts": pa.array([list(s.decode_contexts) for s in shapes], _LIST),
            **{name: pa.array(features[:, i]) for i, name in enumerate(FEATURES)},
            "latency_s": pa.array(latencies),
        }
        return cls(pa.table(columns), dict(metadata))

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def features(self) -> np.ndarray:
        return np.column_stack([self.table.column(n).to_numpy() for n in FEATURES]).astype(np.float64)

    def shapes(self) -> list[BatchShape]:
        """The batch of each row."""
        t = self.table
        return [
            BatchShape(tuple(q), tuple(c), tuple(d))
            for q, c, d in zip(
                t.column("prefill_chunks").to_pylist(),
                t.column("prefill_contexts").to_pylist(),
                t.column("decode_contexts").to_pylist(),
            )
        ]

    @property
    def latency_s(self) -> np.ndarray:
        return self.table.column("latency_s").to_numpy()

    @property
    def kinds(self) -> np.ndarray:
        return np.asarray(self.table.column("kind").to_pylist())

    @property
    def label(self) -> str:
        m = self.metadata
        return f"{m['model']} on {m['hardware']} TP{m['tp']} PP{m['pp']} ({m['source']}, {m['engine']})"

    def content_hash(self) -> str:
        """A hash of the rows and metadata: the key of fitted models cached on disk."""
        digest = hashlib.sha256(json.dumps(self.metadata, sort_keys=True, default=str).encode())
        digest.update(self.features.tobytes())
        digest.update(self.latency_s.tobytes())
        return digest.hexdigest()[:16]

    def scaled(self, factor: float, why: str, with_prefill: float | None = None) -> ProfileTable:
        """The same batches, every latency times `factor`, or, given `with_prefill`, the batches
        that hold a prefill times that and the decode-only ones times `factor` (an engine's steps
        may drift apart by kind); the metadata says by how much and why."""
        factors = {"factor": factor} if with_prefill is None else {"decode_only": factor, "with_prefill": with_prefill}
        for value in factors.values():
            if not (math.isfinite(value) and value > 0):
                raise ProfileError(f"a profile can only be scaled by a positive factor, got {value}")
        prefill = self.table.column("prefill_seqs").to_numpy() > 0
        each = np.where(prefill, factor if with_prefill is None else with_prefill, factor)
        latency = pa.array(self.latency_s * each)
        table = self.table.set_column(self.table.column_names.index("latency_s"), "latency_s", latency)
        return ProfileTable(table, self.metadata | {"scaled": factors | {"why": why}})

    def concat(self, other: ProfileTable) -> ProfileTable:
        return ProfileTable(pa.concat_tables([self.table, other.table]), self.metadata)

    def to_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        table = self.table.replace_schema_metadata({_METADATA_KEY: json.dumps(self.metadata, default=str)})
        write_atomically(path, lambda tmp: pq.write_table(table, tmp))
        return path

    @classmethod
    def read(cls, path: str | Path) -> ProfileTable:
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise ProfileError(f"{path}: not a readable Parquet profile (truncated or corrupt?): {error}") from None
        raw = (table.schema.metadata or {}).get(_METADATA_KEY)
        if raw is None:
            raise ProfileError(f"{path}: not a capsim profile (no profile metadata); make one with `capsim profile`")
        missing = [c for c in (*FEATURES, "latency_s", "kind") if c not in table.column_names]
        if missing:
            raise ProfileError(f"{path}: the profile lacks the column(s) {', '.join(missing)}")
        try:
            metadata = json.loads(raw)
        except (ValueError, RecursionError):
            raise ProfileError(f"{path}: its profile metadata is not JSON") from None
        try:
            _check_columns(table)
            profile = cls(table.replace_schema_metadata(None), _checked_metadata(metadata))
        except ProfileError as error:
            raise ProfileError(f"{path}: {error}") from None
        latency = profile.latency_s
        if len(latency) == 0 or not (np.isfinite(latency) & (latency > 0)).all():
            raise ProfileError(f"{path}: the profile has no rows or a latency that is not a positive number")
        return profile
