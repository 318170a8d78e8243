"""Which profile a system uses: a file the user names, else a measured profile shipped with capsim
for that model x hardware x TP, else an analytic estimate (labelled as such wherever it is used)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from capsim.profiles.analytic import analytic_profile
from capsim.profiles.hardware import get_hardware
from capsim.profiles.models import get_model
from capsim.profiles.table import ProfileTable


def shipped_profiles() -> list[Path]:
    """The measured profiles in the package (profiles/data/*.parquet)."""
    folder = resources.files("capsim.profiles").joinpath("data")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".parquet")) if folder.is_dir() else []


def shipped_profile_name(model: str, hardware: str, tp: int) -> str:
    return f"{model}_{hardware}_tp{tp}.parquet"


def resolve_profile(model: str, hardware: str, tp: int = 1, pp: int = 1, path: str | Path | None = None) -> ProfileTable:
    if path is not None:
        return ProfileTable.read(path)
    model_spec, hardware_spec = get_model(model), get_hardware(hardware)
    wanted = shipped_profile_name(model_spec.name, hardware_spec.name, tp)
    for shipped in shipped_profiles():
        if shipped.name == wanted and pp == 1:
            return ProfileTable.read(shipped)
    return analytic_profile(model_spec, hardware_spec, tp, pp)
