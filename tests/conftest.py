from pathlib import Path

import pytest

REFERENCE_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "traces"


@pytest.fixture
def reference_traces() -> Path:
    """The real trace files in ../shared/reference/traces; the test is skipped without them."""
    if not REFERENCE_TRACES.is_dir():
        pytest.skip(f"reference traces not found at {REFERENCE_TRACES} (../shared is absent)")
    return REFERENCE_TRACES


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
