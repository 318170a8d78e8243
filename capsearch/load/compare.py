"""Load sweeps of one deployment set side by side: read from result folders, matched load by load,
and each one's error against the reference. Errors are (value - reference) / reference."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from capsim.capsearch.errors import ConfigError
from capsim.capsearch.load.metrics import METRICS
from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model

THROUGHPUTS = ("request_throughput", "output_throughput")


def read_sweep(folder: Path) -> tuple[dict, list[dict]]:
    """(info, rows) of a result folder: a load sweep, or one load."""
    folder = Path(folder)
    try:
        if (folder / "load_sweep.json").is_file():
            data = json.loads((folder / "load_sweep.json").read_text())
            info, rows = data["info"], data["loads"]
        elif (folder / "serving.json").is_file():
            info = json.loads((folder / "summary.json").read_text())["info"]
            rows = [json.loads((folder / "serving.json").read_text())]
        else:
            raise ConfigError(
                f"{folder} holds no load_sweep.json or serving.json: give folders written by `capsim simulate` "
                "or `capsim bench`"
            )
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{folder}: not a readable capsim result ({type(error).__name__}: {error})") from None
    if (
        not isinstance(info, dict)
        or not isinstance(rows, list)
        or not rows
        or not all(isinstance(r, dict) and isinstance(r.get("request_throughput"), (int, float)) for r in rows)
    ):
        raise ConfigError(f"{folder}: not a readable capsim result (its loads lack vLLM's figures)")
    return info, rows


def series_name(info: dict, folder: Path) -> str:
    kind = "measured" if info.get("kind") == "real" else "simulated"
    return f"{kind}: {folder.name}"


def load_key(row: dict) -> tuple:
    rate = row.get("request_rate")
    return row.get("kind"), None if rate == math.inf else rate, row.get("max_concurrency")  # JSON writes inf as null


def compared_keys(rows: list[dict]) -> list[str]:
    """The figures every row has: throughputs, then each latency at each percentile."""
    keys = list(THROUGHPUTS)
    for metric in METRICS:
        keys += sorted(
            (k for k in rows[0] if k.endswith(f"_{metric}_ms") and k.startswith("p")),
            key=lambda k: float(k[1:].split("_")[0]),
        )
    return [k for k in keys if all(k in r and r[k] is not None for r in rows)]


def errors(reference: list[dict], other: list[dict], keys: list[str]) -> list[dict]:
    """At each load both have: every figure's relative error against the reference."""
    theirs = {load_key(r): r for r in other}
    table = []
    for row in reference:
        match = theirs.get(load_key(row))
        if match is None:
            continue
        entry = {"load": row["load"]}
        for key in keys:
            base, value = row[key], match[key]
            entry[key] = (
                (value - base) / base if base and math.isfinite(base) and math.isfinite(value) else None
            )  # NaN: no figure
        table.append(entry)
    return table


def deployment(info: dict) -> str:
    """The model (and GPU, where known) a result is of: a simulated system's, or a measured run's served model."""
    system = info.get("system")
    hardware = system.get("hardware") if isinstance(system, dict) else None
    return f"{catalog_name(info)} on {hardware}" if hardware else catalog_name(info)


def catalog_name(info: dict) -> str:
    """The model's catalog name, so that a served Hugging Face id and capsim's name compare equal."""
    system = info.get("system") if isinstance(info.get("system"), dict) else {}
    model = str(system.get("model") or info.get("model") or "?")
    try:
        return get_model(model).name
    except ProfileError:
        return model


@dataclass(frozen=True)
class Comparison:
    """Sweeps of one deployment against a reference: each other one's errors at the loads they share."""

    reference: str
    keys: list[str]  # the figures every sweep has
    errors: dict[str, list[dict]]  # series name: a row a shared load
    deployments: dict[str, str]  # series name: what it is of
    same_deployment: bool  # every one of the same model

    def to_json(self, folders: list[str]) -> dict:
        return {
            "reference": self.reference,
            "folders": folders,
            "deployments": self.deployments,
            "same_deployment": self.same_deployment,
            "error": "simulated against measured: other / reference - 1",
            "errors": self.errors,
        }


def compare_sweeps(series: dict[str, tuple[dict, list[dict]]], reference: str) -> Comparison:
    """`series`: name: (info, rows) of each result; errors of every other one against `reference`'s."""
    keys = compared_keys([row for _, rows in series.values() for row in rows])
    reference_rows = series[reference][1]
    return Comparison(
        reference,
        keys,
        {name: errors(reference_rows, rows, keys) for name, (_, rows) in series.items() if name != reference},
        {name: deployment(info) for name, (info, _) in series.items()},
        len({catalog_name(info) for info, _ in series.values()}) == 1,
    )
