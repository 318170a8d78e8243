"""Which profile a system uses, for the engine it runs.

For an engine (vllm, sglang, trtllm, or capsim's own `reference`), in this order:
1. the profile file the user names;
2. a measured profile of that engine shipped with capsim (its GPU profiler, or the black-box
   engine profiler);
3. the engine's kernel-database profile: shipped for common systems, else made now from NVIDIA's
   kernel database when the `kernel-db` extra is installed (cached on disk);
4. the analytic roofline, calibrated against the kernel database where it has the GPU.
Every output names what it used (profiles/source.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

from capsim.profiles.analytic import analytic_profile
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.models import ModelSpec, get_model
from capsim.profiles.table import ProfileTable

KERNEL_DB_ENGINES = ("vllm", "sglang", "trtllm")
ENGINES = (*KERNEL_DB_ENGINES, "reference")


def shipped_profiles() -> list[Path]:
    """The profiles in the package (profiles/data/*.parquet)."""
    folder = resources.files("capsim.profiles").joinpath("data")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".parquet")) if folder.is_dir() else []


def shipped_profile_name(model: str, hardware: str, tp: int, engine: str, measured: bool = False) -> str:
    return f"{model}_{hardware}_tp{tp}_{engine}{'_measured' if measured else ''}.parquet"


def shipped_profile_key(path: Path) -> tuple[str, str, int, str, bool]:
    """(model, hardware, TP, engine, measured) of a shipped profile, from its name."""
    model, hardware, tp, engine, *measured = path.stem.split("_")
    return model, hardware, int(tp.removeprefix("tp")), engine, bool(measured)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ProfileError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def resolve_profile(
    model: str | ModelSpec,
    hardware: str,
    tp: int = 1,
    pp: int = 1,
    path: str | Path | None = None,
    engine: str = "vllm",
    ep: int = 1,
    dp: int = 1,
) -> ProfileTable:
    """The profile of one replica's pipeline stage group: PP=1 tables serve any PP (sim/ splits them).
    With expert or attention-data parallelism (a mixture of experts), one DP rank's steps, from the
    kernel database only: the roofline does not model expert dispatch."""
    if path is not None:
        return ProfileTable.read(path)
    check_engine(engine)
    model_spec, hardware_spec = (model if isinstance(model, ModelSpec) else get_model(model)), get_hardware(hardware)
    shipped = {p.name: p for p in shipped_profiles()}
    for measured in (True, False):
        name = shipped_profile_name(model_spec.name, hardware_spec.name, tp, engine, measured)
        if name in shipped and (ep, dp) == (1, 1):
            return ProfileTable.read(shipped[name])
    if engine in KERNEL_DB_ENGINES and (not model_spec.is_moe or model_spec.hf_id):
        table = _kernel_db_profile_if_installed(model_spec, hardware_spec.name, tp, engine, ep, dp)
        if table is not None:
            return table
    if (ep, dp) != (1, 1):
        raise ProfileError(
            f"expert and attention-data parallelism are priced from NVIDIA's kernel database, which has no {engine} "
            f"{model_spec.name} on {hardware_spec.name} here (install it: pip install 'capsim[kernel-db]'); "
            "or drop --ep and --dp-attention for the roofline estimate"
        )
    from capsim.profiles.calibration import calibrated_factors

    factors, calibration = calibrated_factors(hardware_spec.name, engine)
    return analytic_profile(model_spec, hardware_spec, tp, pp, factors=factors, calibration=calibration)


def _kernel_db_profile_if_installed(
    model: ModelSpec, hardware: str, tp: int, engine: str, ep: int = 1, dp: int = 1
) -> ProfileTable | None:
    """The kernel-database profile made now (and cached), or None where the database lacks it."""
    from capsim.profiles import kernel_db

    if hardware not in kernel_db.SYSTEMS:  # no such system in the database: skip its (seconds-long) index scan
        return None
    try:
        version = kernel_db.check_coverage(hardware, engine, None)  # raises without the extra or the data
    except ProfileError:
        return None
    layout = [ep, dp] if (ep, dp) != (1, 1) else []  # so a dense model's key stays as it was
    rules = kernel_db.rules_key(model, tp, hardware, engine, version)
    key = json.dumps(
        [model.to_dict(), hardware, tp, engine, version, kernel_db.package_version(), *layout, *rules], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    moe = f"_dp{dp}_ep{ep}" if layout else ""
    cache = _cache_dir() / f"{model.name.replace('/', '_')}_{hardware}_tp{tp}{moe}_{engine}-{digest}.parquet"
    if cache.is_file():
        try:
            return ProfileTable.read(cache)
        except ProfileError:
            pass  # a damaged entry is made again
    table = kernel_db.kernel_db_profile(kernel_db.KernelDatabase(model, hardware, engine, version, tp, 1, ep, dp))
    table.to_parquet(cache)
    return table


def _cache_dir() -> Path:
    return Path(os.environ.get("CAPSIM_CACHE", Path.home() / ".cache" / "capsim")) / "profiles"
