"""Fit each engine's host time on real runs and ship it (profiles/data/host_time.json).

Needs the kernel-db extra (`pip install 'capsim[kernel-db]'`: the kernel database and the real
runs of its silicon sample); takes about a minute on 2 cores.

    python scripts/fit_host_time.py

Training rows (every 16-bit run of these in the silicon sample): vLLM and SGLang serving
Qwen3-32B on H100 (TP 1-8), TensorRT-LLM serving Llama-3.1-8B on H100 (TP 1-8). Every other row
(FP8 Llama-3.1-70B and -8B, FP8 Qwen3-32B, Qwen3-32B on GB200) is left for `capsim validate` to
report as not fitted.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from capsim.capsearch.load.validate import fit_host_time
from capsim.profiles.host_time import HOST_TIME_FILE
from capsim.profiles.kernel_db import package_version
from capsim.profiles.measurements import read_silicon_sample

DATA = Path(__file__).resolve().parent.parent / "profiles" / "data"
TRAINING = {
    "vllm": ("Qwen3-32B", "H100-SXM"),
    "sglang": ("Qwen3-32B", "H100-SXM"),
    "trtllm": ("Llama-3.1-8B", "H100-SXM"),
}


def training_rows(measurements):
    return [m for m in measurements if m.quant == "bf16" and TRAINING.get(m.engine) == (m.model, m.hardware)]


def main() -> None:
    measurements, _ = read_silicon_sample()
    rows = training_rows(measurements)
    engines = {}
    for engine in TRAINING:
        host, replays = fit_host_time(engine, rows)
        engines[engine] = host.to_dict() | {"training_rows": sorted(m.id for m in rows if m.engine == engine)}
        print(f"{engine}: {host.words}")
    document = {
        "fitted": date.today().isoformat(),
        "package": f"aiconfigurator-core {package_version()}",
        "data": "aiconfigurator_core/systems/silicon_sample.csv",
        "engines": engines,
    }
    (DATA / HOST_TIME_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {DATA / HOST_TIME_FILE}")


if __name__ == "__main__":
    main()
