"""Make the shipped kernel-database profiles and the roofline calibration (profiles/data/).

Needs the kernel-db extra (`pip install 'capsim[kernel-db]'`); takes a few minutes on 2 cores.

    python scripts/make_kernel_db_profiles.py            # every table below, then the calibration
    python scripts/make_kernel_db_profiles.py --model Llama-2-7B --engine vllm   # those tables, then the calibration
    python scripts/make_kernel_db_profiles.py --calibrate-only

Each table is a kernel-database profile (profiles/kernel_db.py) of one engine, model, GPU and
TP at PP 1 (the simulator derives PP stages from it). Systems whose weights leave no room for
the KV cache are skipped and listed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from capsim.profiles.calibration import CALIBRATION_FILE, fit_factors, roofline_errors, transfer_factors
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.kernel_db import ENGINES, KernelDatabase, kernel_db_profile, package_version
from capsim.profiles.models import get_model
from capsim.profiles.store import shipped_profile_name
from capsim.profiles.table import ProfileTable

DATA = Path(__file__).resolve().parent.parent / "profiles" / "data"
SMALL = [(m, 1) for m in ("Llama-3.1-8B", "Llama-3-8B", "Mistral-7B", "Qwen2.5-7B", "Llama-2-7B")]
LARGE = [("Yi-34B", 1), ("Yi-34B", 2)] + [(m, tp) for m in ("Llama-2-70B", "Llama-3.1-70B") for tp in (2, 4, 8)]
TABLES = {
    "vllm": {gpu: SMALL + LARGE for gpu in ("A100-80GB-SXM", "H100-SXM", "H200", "B200")},
    "sglang": {gpu: SMALL + [("Llama-3.1-70B", 4)] for gpu in ("H100-SXM", "H200", "B200")},
    "trtllm": {gpu: SMALL + [("Llama-3.1-70B", 4)] for gpu in ("H100-SXM", "H200", "B200")},
}


def make_tables(models: set[str] | None = None, engines: set[str] | None = None) -> list[str]:
    skipped = []
    for engine, gpus in TABLES.items():
        if engines and engine not in engines:
            continue
        for gpu, systems in gpus.items():
            for model, tp in systems:
                if models and model not in models:
                    continue
                path = DATA / shipped_profile_name(model, gpu, tp, engine)
                start = time.perf_counter()
                try:
                    table = kernel_db_profile(KernelDatabase(get_model(model), gpu, engine, tp=tp))
                except ProfileError as error:
                    skipped.append(f"{engine} {model} {gpu} TP{tp}: {error}")
                    print("skipped", skipped[-1])
                    continue
                table.to_parquet(path)
                print(f"{path.name}: {len(table)} batches, {time.perf_counter() - start:.1f} s")
    return skipped


def calibrate() -> dict:
    calibration = {}
    for engine in ENGINES:
        per_gpu = {}
        for gpu in TABLES[engine]:
            profiles = [ProfileTable.read(p) for p in sorted(DATA.glob(f"*_{gpu}_tp*_{engine}.parquet"))]
            if not profiles:
                continue
            factors = fit_factors(profiles, get_hardware(gpu))
            per_gpu[gpu] = factors
            errors = [abs(roofline_errors(p, factors)).mean() for p in profiles]
            print(
                f"{engine} {gpu}: mean |error| {100 * sum(errors) / len(errors):.1f}% over {len(profiles)} profiles: "
                f"{factors}"
            )
        if per_gpu:
            calibration[engine] = {
                "source": f"{ENGINES[engine]} kernel database (aiconfigurator-core {package_version()})",
                "gpus": {gpu: vars(f) for gpu, f in per_gpu.items()},
                "transfer": vars(transfer_factors(per_gpu)),
            }
    (DATA / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=1) + "\n")
    return calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calibrate-only", action="store_true", help="Refit the calibration from the tables already made."
    )
    parser.add_argument("--model", action="append", help="Only this model's tables (repeatable).")
    parser.add_argument("--engine", action="append", choices=list(ENGINES), help="Only this engine's (repeatable).")
    args = parser.parse_args()
    if not args.calibrate_only:
        make_tables(set(args.model or ()), set(args.engine or ()))
    calibrate()


if __name__ == "__main__":
    main()
