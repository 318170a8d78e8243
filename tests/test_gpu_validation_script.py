"""scripts/gpu_validation.sh: the GPU run's stages. Their commands are tested where they are
defined; here, that the script parses and refuses what it does not know (exit 2, one line)."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_validation.sh"


def run(*args, tmp_path):
    env = os.environ | {"GPU_VALIDATION_DIR": str(tmp_path / "gv"), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_unknown_stages_and_schedulers_are_refused(tmp_path):
    for args in [(), ("bogus",), ("confirm",), ("confirm", "orca")]:
        result = run(*args, tmp_path=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "usage: scripts/gpu_validation.sh" in result.stdout + result.stderr


def test_the_table_is_made_from_the_runs_files(tmp_path):
    """The `table` stage's rows, from files as the stages write them."""
    import json

    from test_profile_compare import BASE, profile

    from capsim.capsearch.capacity.confirm import Confirmation
    from capsim.capsearch.report.confirm import write_confirmation
    from capsim.profiles.compare import compare_profiles

    folder = tmp_path / "gv"
    (folder / "confirm-sarathi").mkdir(parents=True)
    first = profile("capsim-reference", *BASE)
    accuracy = {"all": {"mape": 3.5, "p95_ape": 9.0, "rows": 40}}
    (folder / "latency-model_tiny.json").write_text(
        json.dumps({"profile": first.metadata, "regressor": "physics-linear", "accuracy": {"compiled": accuracy}})
    )
    (folder / "profile-compare_tiny.json").write_text(
        json.dumps(compare_profiles(first, profile("vllm", 3e-3, 3e-6, 3e-9)))
    )
    percentiles = [
        {"metric": m, "percentile": p, "predicted_s": 0.1, "measured_s": 0.11, "error": -0.09}
        for m in ("ttft", "tbt")
        for p in (50, 90, 99)
    ]
    system = {
        "model": "tiny",
        "hardware": "H100-SXM",
        "scheduler": "sarathi",
        "token_budget": 512,
        "max_batch_size": 128,
    }
    write_confirmation(
        Confirmation(
            {},
            "P99 TBT<=0.1s, P50 TTFT<=2s",
            10.0,
            9.0,
            9.5,
            percentiles=percentiles,
            system=system,
            workload={"trace": "chat", "num_requests": 256},
            predicted_outcome="simulated search: converged",
        ),
        folder / "confirm-sarathi",
    )
    result = run("table", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    table = (folder / "validation.md").read_text()
    assert "| tiny reference engine, all | 40 | 3.50% | 9.00% |" in table
    assert "| prefill <=512 tokens |" in table and "ms a step" in table
    assert (
        "| H100-SXM, reference engine | tiny, sarathi chunk 512, batch 128; `chat`, 256 requests; P99 TBT<=0.1s, P50 "
        "TTFT<=2s "
        "| 10 QPS (simulated search: converged) | 9 QPS ([9, 9.5)) | +11.1%; TTFT P50/P90/P99 -9/-9/-9%, TBT "
        "-9/-9/-9% |"
    ) in table
