from pathlib import Path

import pytest

REFERENCE_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "traces"


@pytest.fixture
def reference_traces() -> Path:
    """The real trace files in ../shared/reference/traces; the test is skipped without them."""
    if not REFERENCE_TRACES.is_dir():
        pytest.skip(f"reference traces not found at {REFERENCE_TRACES} (../shared is absent)")
    return REFERENCE_TRACES


_TINY_PROFILE_FAILURE: list[str] = []


@pytest.fixture(scope="session")
def tiny_cpu_profile(tmp_path_factory) -> Path:
    """`tiny` measured on this CPU with the reference engine's runner (quick grid, fp32): made once
    a session, for the profiler's tests and the closed loops that simulate the reference engine.
    A failure is remembered: the tests that need it fail at once with its reason, not each after
    making it again (on a loaded machine that took 300 s a test)."""
    pytest.importorskip("torch", reason="profiling needs torch: pip install 'capsim[torch]'")
    import subprocess
    import sys

    if _TINY_PROFILE_FAILURE:
        pytest.fail(_TINY_PROFILE_FAILURE[0])
    path = tmp_path_factory.mktemp("tiny-profile") / "tiny_cpu.parquet"
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "capsim.capsearch.cli",
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
                "3",
                "-o",
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )  # about 30 s alone; a machine with both cores busy takes several times that
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        _TINY_PROFILE_FAILURE.append(f"profiling tiny on this CPU failed once this session: {error}")
        pytest.fail(_TINY_PROFILE_FAILURE[0])
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Fitted latency models go to a cache of the test session's own, not the user's."""
    import os

    os.environ["CAPSIM_CACHE"] = str(tmp_path_factory.mktemp("capsim-cache"))
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu run only where torch sees a CUDA GPU."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch sees none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
