import numpy as np
import pytest

from capsim.profiles.analytic import analytic_latency, analytic_profile
from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import get_model
from capsim.profiles.regressors import AdditiveTreesRegressor
from capsim.profiles.predictor import compile_additive
from capsim.profiles.store import resolve_profile
from capsim.profiles.table import ProfileTable


@pytest.fixture(scope="module")
def profile():
    return analytic_profile(get_model("Llama-3-8B"), get_hardware("H100-SXM"))


@pytest.fixture(scope="module")
def fitted(profile):
    return LatencyModel.fit(profile)


def test_roofline_follows_the_physics():
    model, hw = get_model("Llama-3-8B"), get_hardware("H100-SXM")
    decode = lambda batch, kv: analytic_latency(BatchShape(decode_contexts=(kv,) * batch), model, hw)  # noqa: E731
    # one decode is bound by reading 16 GB of weights: ~6 ms at 80% of 3.35 TB/s, plus overhead
    assert 0.006 < decode(1, 128) < 0.012
    assert decode(64, 128) < 1.2 * decode(1, 128)  # memory-bound: batching is almost free
    assert decode(64, 4096) > 1.5 * decode(64, 128)  # ... until the KV reads add up
    prefill = lambda q, c=0: analytic_latency(BatchShape((q,), (c,)), model, hw)  # noqa: E731
    assert prefill(8192) > 6 * prefill(1024)  # compute-bound, attention quadratic
    assert analytic_latency(BatchShape((512,), (0,)), model, hw, tp=2) < prefill(512)


def test_held_out_error_is_reported_and_compilation_keeps_it(fitted):
    assert fitted.regressor in ("physics-linear", "additive-trees")
    for kind in ("all", "prefill", "decode", "mixed"):
        assert fitted.accuracy["compiled"][kind]["mape"] == pytest.approx(fitted.accuracy[fitted.regressor][kind]["mape"], rel=1e-6)
    assert fitted.accuracy["compiled"]["all"]["mape"] < 5


def test_fast_call_equals_vectorized_prediction(profile, fitted):
    X = profile.features
    one_by_one = [fitted(*map(int, row)) for row in X]
    assert one_by_one == pytest.approx(fitted.predictor.predict_many(X), rel=1e-12)
    shape = BatchShape((512,), (1024,), (300,) * 32)
    assert fitted.predict(shape) == pytest.approx(fitted(*shape.features()), rel=1e-12)


def test_additive_trees_compile_exactly(profile):
    X, y = profile.features, profile.latency_s
    trees = AdditiveTreesRegressor(max_iter=60).fit(X, y)
    predictor = compile_additive(trees, X, X[:, 0].max())
    rng = np.random.default_rng(0)
    probes = X[rng.choice(len(X), 40)] * rng.uniform(0.7, 1.3, (40, X.shape[1]))
    probes[:, 0] = np.rint(probes[:, 0])
    assert predictor.predict_many(probes) == pytest.approx(trees.predict(probes), rel=1e-9)
    assert [predictor(int(row[0]), *row[1:]) for row in probes] == pytest.approx(trees.predict(probes), rel=1e-9)


def test_extrapolation_is_flagged(fitted):
    inside = np.asarray([BatchShape((512,), (0,)).features()])
    assert fitted.extrapolation(inside) is None
    beyond = np.asarray([BatchShape(decode_contexts=(8000,) * 1024).features()])
    message = fitted.extrapolation(beyond)
    assert "extrapolated" in message and "decode_seqs up to 1024" in message
    assert fitted.predict(BatchShape(decode_contexts=(8000,) * 1024)) > fitted.predict(BatchShape(decode_contexts=(8000,) * 128))


def test_fitted_models_are_cached_by_profile_hash(profile, tmp_path):
    first = LatencyModel.for_profile(profile, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    again = LatencyModel.for_profile(profile, cache_dir=tmp_path)
    assert again.accuracy == first.accuracy and again(100, 1, 5000, 0, 0, 0) == first(100, 1, 5000, 0, 0, 0)
    next(tmp_path.iterdir()).write_bytes(b"damaged")
    assert LatencyModel.for_profile(profile, cache_dir=tmp_path).regressor == first.regressor


def test_profile_file_round_trip_and_bad_files(profile, tmp_path):
    path = profile.to_parquet(tmp_path / "p.parquet")
    back = ProfileTable.read(path)
    assert back.content_hash() == profile.content_hash()
    assert back.metadata["source"] == "analytic"
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ProfileError, match="not a readable Parquet profile"):
        ProfileTable.read(cut)
    with pytest.raises(ProfileError, match="no such profile file"):
        ProfileTable.read(tmp_path / "none.parquet")
    too_small = ProfileTable.from_batches([BatchShape((8,), (0,))] * 3, [0.01] * 3, profile.metadata)
    with pytest.raises(ProfileError, match="at least 10 batches"):
        LatencyModel.fit(too_small)


def test_default_profile_is_analytic_until_a_measured_one_ships():
    table = resolve_profile("Mistral-7B", "A100", tp=1)
    assert table.metadata["source"] == "analytic" and table.metadata["engine"] == "roofline"
