"""Files written safely: atomically (temp name, then rename) and as strict JSON."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, write) -> None:
    """Call write(temp_path) next to path, then rename over it; on any failure leave path as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )  # the writer's pid: see temp_files_of
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results and caches are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_files_of(folder: Path, pids) -> list[Path]:
    """The temporary files that the processes `pids` left in folder, writing with write_atomically."""
    marks = tuple(f".{pid}." for pid in pids)
    try:
        return [
            p
            for p in folder.iterdir()
            if p.name.startswith(".") and p.name.endswith(".tmp") and any(m in p.name for m in marks)
        ]
    except OSError:
        return []


def strict(value, reasons: dict | None = None, key: str | None = None):
    """value with every NaN or infinity made null, for parsers that hold to the JSON standard.
    Each dict that had one gets "why_null": {key: reason}."""
    if isinstance(value, float) and not math.isfinite(value):
        if reasons is not None and key is not None:
            reasons[key] = "not a number: nothing to measure it on" if math.isnan(value) else "unbounded"
        return None
    if isinstance(value, dict):
        why: dict = {}
        out = {k: strict(v, why, k) for k, v in value.items()}
        if why:
            out["why_null"] = {**(out.get("why_null") or {}), **why}
        return out
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def strict_dumps(data, **kwargs) -> str:
    """JSON text with no NaN or Infinity (a ValueError, rather than writing them)."""
    return json.dumps(strict(data), allow_nan=False, default=_plain, **kwargs) + "\n"


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return strict(value.item())
    return str(value)
