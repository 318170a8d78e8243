"""The latency contract: every prediction is positive, and more work is never predicted faster, over
the whole feature space (extrapolation included), for every shipped profile and the calibrated
roofline. A negative or shrinking step time once reached SimPy as a negative delay; the models are
fitted monotone and the predictor is checked (LatencyPredictor.monotone).

Known limit, tested here as it stands: the prefill-attention rate is read at the batch's mean chunk
and context, so adding a short chunk to a batch of long ones, or context to one chunk, moves that
mean and can lower the batch's price (by up to ~10% on kernel-database profiles)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsim.profiles.batch import BatchShape
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import get_model
from capsim.profiles.predictor import MIN_STEP_S
from capsim.profiles.store import resolve_profile, shipped_profile_key, shipped_profiles

ROOFLINES = [("Mixtral-8x7B", "H100-SXM", 4), ("Llama-3-70B", "H100-SXM", 8), ("Falcon-180B", "A100-80GB-SXM", 8)]


def models():
    for path in shipped_profiles():
        model, hardware, tp, engine, measured = shipped_profile_key(path)
        yield pytest.param(path, id=path.stem)
    for model, hardware, tp in ROOFLINES:
        yield pytest.param((model, hardware, tp), id=f"roofline-{model}-{hardware}-tp{tp}")


def latency_model(which) -> LatencyModel:
    if isinstance(which, tuple):
        model, hardware, tp = which
        profile = resolve_profile(model, hardware, tp, engine="vllm")
    else:
        model, hardware, tp, engine, measured = shipped_profile_key(which)
        profile = resolve_profile(model, hardware, tp, engine=engine)
    return LatencyModel.for_profile(profile)


@pytest.mark.parametrize("which", list(models()))
def test_every_part_of_every_model_is_positive_and_non_decreasing(which):
    p = latency_model(which).predictor
    assert p.floor >= MIN_STEP_S and p.token_slope >= 0
    assert np.all(np.diff(p.token_table) >= 0)
    assert all(v >= 0 for v in p.linear.values())
    assert all(np.all(np.diff(values) >= 0) for _, values in p.bent.values())
    assert all(np.all(np.diff(values) >= 0) for _, values in p.steps.values())
    assert p.grid is None or np.min(p.grid[2]) >= 0


chunks = st.lists(st.tuples(st.integers(1, 8192), st.integers(0, 32768)), max_size=8)
decodes = st.lists(st.integers(1, 131072), max_size=64)
more = st.sampled_from(["token", "decode", "kv", "scale"])  # see the module's known limit for a new chunk or context


@pytest.mark.parametrize(
    "which",
    [
        pytest.param(p, id=p.stem)
        for p in shipped_profiles()
        if shipped_profile_key(p)[:3]
        in {("Llama-3.1-8B", "H100-SXM", 2), ("Llama-3.1-8B", "H100-SXM", 4), ("Mistral-7B", "A100-80GB-SXM", 1)}
    ]
    + [pytest.param(r, id=f"roofline-{r[0]}") for r in ROOFLINES[:2]],
)
@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=chunks, decodes=decodes, grow=more, where=st.integers(0, 63), by=st.integers(1, 4096))
def test_more_work_is_never_predicted_faster(which, chunks, decodes, grow, where, by):
    predictor = latency_model(which).predictor
    chunks, decodes = list(chunks), list(decodes)
    if not chunks and not decodes:
        decodes = [1]
    bigger_chunks, bigger_decodes = list(chunks), list(decodes)
    if grow == "token" and chunks:
        q, c = chunks[where % len(chunks)]
        bigger_chunks[where % len(chunks)] = (q + by, c)
    elif grow == "kv" and decodes:
        bigger_decodes[where % len(decodes)] += by
    elif grow == "scale":  # the same batch, every length longer: prompts, contexts and KV
        factor = 1 + by / 1024
        bigger_chunks = [(max(q + 1, round(q * factor)), round(c * factor)) for q, c in chunks]
        bigger_decodes = [max(kv + 1, round(kv * factor)) for kv in decodes]
    else:
        bigger_decodes.append(by)

    def seconds(prefills, kvs):
        shape = BatchShape(tuple(q for q, _ in prefills), tuple(c for _, c in prefills), tuple(kvs))
        return predictor(*shape.features())

    base, bigger = seconds(chunks, decodes), seconds(bigger_chunks, bigger_decodes)
    # A token more moves the mean chunk along the rate grid's interpolation: at most a 0.01% dip
    assert base >= MIN_STEP_S and bigger >= base * (1 - 1e-4)


def test_the_reported_negative_step_time_is_gone():
    """Llama-3.1-8B, H100, TP 2 and 4: a 4-sequence prefill of 8192, 12288, 16384 tokens once read
    104, 30, -43 ms."""
    assert get_model("Llama-3.1-8B")
    for tp in (2, 4):
        predictor = LatencyModel.for_profile(resolve_profile("Llama-3.1-8B", "H100-SXM", tp, engine="vllm")).predictor
        times = [predictor(*BatchShape((t // 4,) * 4, (0,) * 4).features()) for t in (8192, 12288, 16384, 65536)]
        assert all(t > 0 for t in times) and times == sorted(times)
