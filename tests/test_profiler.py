"""The measured profiler, run for real: `tiny` on this CPU with the reference engine's runner."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="profiling needs torch: pip install 'capsim[torch]'")

from capsim.profiles.grid import GRIDS  # noqa: E402
from capsim.profiles.latency_model import LatencyModel  # noqa: E402
from capsim.profiles.models import get_model  # noqa: E402
from capsim.profiles.table import ProfileTable  # noqa: E402

CAPSIM = str(Path(sys.executable).parent / "capsim")
PROFILE = [
    CAPSIM,
    "profile",
    "--model",
    "tiny",
    "--device",
    "cpu",
    "--grid",
    "quick",
    "--dtype",
    "float32",
    "--warmup",
    "1",
    "--repeats",
    "2",
]


@pytest.fixture(scope="module")
def tiny_profile(tiny_cpu_profile) -> ProfileTable:
    return ProfileTable.read(tiny_cpu_profile)


def test_measured_profile_says_where_it_came_from(tiny_profile):
    m = tiny_profile.metadata
    assert (m["model"], m["hardware"], m["source"], m["engine"], m["device"]) == (
        "tiny",
        "cpu",
        "measured",
        "capsim-reference",
        "cpu",
    )
    assert "torch" in m["versions"] and m["run_dtype"] == "float32"
    expected = GRIDS["quick"].shapes(get_model("tiny").max_context, 10**9, 16384)
    assert len(tiny_profile) == len(expected)
    assert set(tiny_profile.kinds) == {"prefill", "decode", "mixed"}


def test_measured_latencies_follow_the_physics(tiny_profile):
    rows = tiny_profile.table.to_pylist()
    prefill = {
        (r["prefill_chunks"][0], r["prefill_contexts"][0]): r["latency_s"]
        for r in rows
        if r["kind"] == "prefill" and len(r["prefill_chunks"]) == 1
    }
    assert prefill[(1024, 0)] > 4 * prefill[(32, 0)]
    assert prefill[(512, 2048)] > prefill[(512, 0)]
    decode = {
        (len(r["decode_contexts"]), r["decode_contexts"][0]): r["latency_s"] for r in rows if r["kind"] == "decode"
    }
    assert decode[(64, 2048)] > decode[(64, 16)]


def test_a_latency_model_fits_the_measured_profile(tiny_profile, tmp_path):
    model = LatencyModel.for_profile(tiny_profile, cache_dir=tmp_path)
    assert model.source == "measured"
    errors = model.accuracy["compiled"]["all"]
    assert errors["rows"] >= 10 and np.isfinite(errors["mape"])
    # a loose bound: this CPU is shared and noisy; bench/bench_latency_model.py reports the real figure
    assert errors["mape"] < 50


def test_an_interrupted_profile_resumes(tmp_path):
    out = tmp_path / "tiny.parquet"
    partial = tmp_path / "tiny.parquet.partial.parquet"
    quickest = [
        *PROFILE[:-4],
        "--warmup",
        "0",
        "--repeats",
        "1",
    ]  # what is measured does not matter here, only what is kept
    victim = subprocess.Popen([*quickest, "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not partial.exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert partial.exists() and not out.exists()
    saved = ProfileTable.read(partial)
    subprocess.run([*quickest, "-o", out], check=True, capture_output=True, timeout=300)
    done = ProfileTable.read(out)
    assert not partial.exists()
    assert done.metadata["resumed_samples"] == len(saved)  # kept, not measured again


def test_no_gpu_gives_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(
        [CAPSIM, "profile", "--model", "tiny", "--device", "cuda", "-o", tmp_path / "x.parquet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "torch sees no CUDA GPU" in result.stderr and "Traceback" not in result.stderr
