"""scripts/gpu_validation.sh: the GPU run's stages. Their commands are tested where they are
defined; here, that the script parses and refuses what it does not know (exit 2, one line)."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_validation.sh"


def run(*args, tmp_path):
    env = os.environ | {"GPU_VALIDATION_DIR": str(tmp_path / "gv")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_unknown_stages_and_schedulers_are_refused(tmp_path):
    for args in [(), ("bogus",), ("confirm",), ("confirm", "orca")]:
        result = run(*args, tmp_path=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "usage: scripts/gpu_validation.sh" in result.stdout + result.stderr
