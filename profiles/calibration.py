"""The roofline calibrated against NVIDIA's kernel database.

For each GPU the database covers, the roofline's achieved fractions (GEMM and attention compute,
memory and link bandwidth) and fixed costs (per step, sequence, layer and all-reduce) are fitted
to the kernel-database profiles of several models and TPs at once, minimizing the squared log
ratio (a relative error). GPUs without data (A40, A100 PCIe, H100 PCIe, ...) get the median of
the fitted factors, which are fractions of their own datasheet figures. The factors ship in
profiles/data/roofline_calibration.json, written by scripts/make_kernel_db_profiles.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from functools import lru_cache
from importlib import resources

import numpy as np

from capsim.profiles.analytic import FACTORS, TERMS, RooflineFactors, combine, roofline_terms
from capsim.profiles.hardware import HardwareSpec, get_hardware
from capsim.profiles.models import get_model
from capsim.profiles.table import ProfileTable

CALIBRATION_FILE = "roofline_calibration.json"
BOUNDS = {
    "gemm_compute": (0.05, 1.0),
    "attention_compute": (0.02, 1.0),
    "memory": (0.05, 1.0),
    "iteration_overhead_s": (0.0, 0.05),
    "per_sequence_s": (0.0, 1e-3),
    "layer_overhead_s": (0.0, 1e-3),
    "link": (0.02, 4.0),
    "link_latency": (0.0, 2.0),
    "collective_s": (0.0, 1e-3),
}
SCALE = {"iteration_overhead_s": 1e-3, "per_sequence_s": 1e-6, "layer_overhead_s": 1e-5, "collective_s": 1e-5}


def stacked_terms(profile: ProfileTable) -> dict:
    """Roofline terms of every row of a profile, as arrays (GEMM terms: a list of 4 arrays)."""
    model = get_model(profile.metadata["model"])
    tp, pp = profile.metadata["tp"], profile.metadata["pp"]
    rows = [roofline_terms(shape, model, tp, pp) for shape in profile.shapes()]
    stacked = {}
    for name in TERMS:
        if name.startswith("gemm"):
            stacked[name] = [np.array([r[name][i] for r in rows], dtype=np.float64) for i in range(4)]
        else:
            stacked[name] = np.array([r[name] for r in rows], dtype=np.float64)
    return stacked


def _concat(parts: list[dict]) -> dict:
    return {
        name: [np.concatenate([p[name][i] for p in parts]) for i in range(4)]
        if name.startswith("gemm")
        else np.concatenate([p[name] for p in parts])
        for name in TERMS
    }


def fit_factors(profiles: list[ProfileTable], hardware: HardwareSpec) -> RooflineFactors:
    """Factors minimizing the squared log error of the roofline against these profiles (one GPU)."""
    from scipy.optimize import least_squares  # scikit-learn's dependency; loaded only to calibrate

    terms = _concat([stacked_terms(p) for p in profiles])
    target = np.log(np.concatenate([p.latency_s for p in profiles]))
    names = [f.name for f in fields(RooflineFactors)]
    scale = np.array([SCALE.get(n, 1.0) for n in names])

    def residuals(x):
        factors = RooflineFactors(**dict(zip(names, x * scale)))
        return np.log(combine(terms, hardware, factors)) - target

    lower, upper = (np.array([BOUNDS[n][side] for n in names]) / scale for side in (0, 1))
    start = np.clip(
        np.array([getattr(FACTORS, n) for n in names]) / scale, lower, upper
    )  # from the uncalibrated factors
    fit = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
    return RooflineFactors(**dict(zip(names, (fit.x * scale).tolist())))


def roofline_errors(profile: ProfileTable, factors: RooflineFactors) -> np.ndarray:
    """Signed relative error of the roofline against a profile's latencies, a row each."""
    predicted = combine(stacked_terms(profile), get_hardware(profile.metadata["hardware"]), factors)
    return predicted / profile.latency_s - 1


@lru_cache(maxsize=1)
def _shipped() -> dict:
    path = resources.files("capsim.profiles").joinpath("data", CALIBRATION_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


def calibrated_factors(hardware: str, engine: str) -> tuple[RooflineFactors, str | None]:
    """The roofline factors for a GPU and engine, and what they were calibrated to (None: not at all).

    capsim's reference engine runs eager torch, not these engines' kernels: it keeps the
    uncalibrated roofline until a measured profile of it exists for the GPU."""
    calibration = _shipped().get(engine)
    if not calibration:
        return FACTORS, None
    words = calibration["source"]
    if hardware in calibration["gpus"]:
        return RooflineFactors(**calibration["gpus"][hardware]), f"{words} on {hardware}"
    fitted = ", ".join(calibration["gpus"])
    return RooflineFactors(
        **calibration["transfer"]
    ), f"{words}, median of the fits on {fitted}; {hardware} has no data"


def transfer_factors(per_gpu: dict[str, RooflineFactors]) -> RooflineFactors:
    """The median of each factor over the fitted GPUs: for GPUs the database does not cover."""
    names = [f.name for f in fields(RooflineFactors)]
    return RooflineFactors(**{n: float(np.median([asdict(f)[n] for f in per_gpu.values()])) for n in names})
