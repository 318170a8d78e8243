"""The metadata every profile carries: what was profiled, where, with what, and when."""

from __future__ import annotations

import datetime
import platform
from importlib import metadata as importlib_metadata

from capsim.profiles.models import ModelSpec


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


def profile_metadata(model: ModelSpec, hardware: str, tp: int, pp: int, engine: str, source: str, **extra) -> dict:
    versions = {p: _version(p) for p in ("capsim", "torch", "numpy", "scikit-learn")}
    return {
        "model": model.name,
        "model_spec": model.to_dict(),
        "hardware": hardware,
        "tp": tp,
        "pp": pp,
        "dtype": model.dtype,
        "engine": engine,
        "source": source,
        "versions": {k: v for k, v in versions.items() if v} | {"python": platform.python_version()},
        "date": datetime.date.today().isoformat(),
        **extra,
    }
