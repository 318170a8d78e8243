import pickle

import numpy as np
import pytest

from capsim.profiles.analytic import analytic_latency, analytic_profile
from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import get_model
from capsim.profiles.predictor import compile_additive
from capsim.profiles.regressors import AdditiveTreesRegressor, PhysicsLinearRegressor
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
        assert fitted.accuracy["compiled"][kind]["mape"] == pytest.approx(
            fitted.accuracy[fitted.regressor][kind]["mape"], rel=1e-6
        )
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


def cache_bent_profile(metadata: dict) -> ProfileTable:
    """A CPU-like profile: each prefill token's attention costs more the longer its chunk and its
    context (caches), a product no sum of per-feature curves follows; decodes cost a fixed 1.5 ms
    once there are any."""

    def seconds(shape: BatchShape) -> float:
        total = 1e-3 + 2e-6 * sum(shape.prefill_chunks) + 2e-5 * len(shape.prefill_chunks)
        for q, c in zip(shape.prefill_chunks, shape.prefill_contexts):
            total += 1e-9 * q * (q + c) * (1 + (q / 512) * (c / 1024))
        if shape.decode_contexts:
            total += 1.5e-3 + 1e-5 * len(shape.decode_contexts) + 1e-8 * sum(shape.decode_contexts)
        return total

    shapes = [
        BatchShape((q,), (c,))
        for q in (8, 16, 32, 64, 128, 256, 384, 512, 768, 1024)
        for c in (0, 256, 512, 1024, 2048)
    ]
    shapes += [BatchShape((q,) * n, (0,) * n) for q in (64, 256) for n in (2, 4)]
    shapes += [BatchShape(decode_contexts=(kv,) * b) for b in (1, 4, 16, 64) for kv in (16, 128, 512, 1024, 2048)]
    shapes += [
        BatchShape((q,), (c,), (kv,) * b)
        for q in (32, 256, 512)
        for c in (0, 1024)
        for b in (4, 48)
        for kv in (128, 1024)
    ]
    return ProfileTable.from_batches(shapes, [seconds(s) for s in shapes], metadata)


@pytest.fixture(scope="module")
def cache_bent(profile):
    return cache_bent_profile(profile.metadata)


def test_chunk_by_context_rates_follow_a_non_additive_prefill_cost(cache_bent):
    model = LatencyModel.fit(cache_bent)
    assert model.regressor == "physics-linear"
    assert model.accuracy["compiled"]["all"]["mape"] < 2
    # without its (chunk, context) grid the same model cannot follow the product
    X, y, kinds = cache_bent.features, cache_bent.latency_s, cache_bent.kinds
    prefill = kinds == "prefill"
    flat = PhysicsLinearRegressor(grid_knots=0).fit(X, y)
    with_grid = PhysicsLinearRegressor().fit(X, y)
    ape = lambda r: np.mean(np.abs(r.predict(X[prefill]) / y[prefill] - 1))  # noqa: E731
    assert ape(with_grid) < 0.2 * ape(flat)
    # a decode batch smaller than any profiled still pays the fixed cost of decoding
    tiny = BatchShape(decode_contexts=(4,))
    assert model.predict(tiny) == pytest.approx(1e-3 + 2e-6 + 1.5e-3 + 1e-5 + 4e-8, rel=0.05)


def test_physics_model_compiles_exactly_with_its_grid(cache_bent):
    X, y = cache_bent.features, cache_bent.latency_s
    physics = PhysicsLinearRegressor().fit(X, y)
    assert physics.rate_grid() is not None
    predictor = compile_additive(physics, X, X[:, 0].max())
    # probes inside and beyond the grid, off its knots, with fractional features, and without prefills
    rng = np.random.default_rng(1)
    probes = X[rng.choice(len(X), 60)] * rng.uniform(0.3, 2.5, (60, X.shape[1]))
    probes[:, 0] = np.rint(probes[:, 0])
    probes = np.vstack([probes, [[1, 0, 0, 0, 1, 0.5], [9000, 3, 5e7, 9000, 40, 50000], [0, 0, 0, 0, 0, 0]]])
    assert predictor.predict_many(probes) == pytest.approx(physics.predict(probes), rel=1e-9)
    assert [predictor(int(row[0]), *row[1:]) for row in probes] == pytest.approx(physics.predict(probes), rel=1e-9)


def test_fitting_is_reproducible_bit_for_bit(cache_bent):
    first, again = LatencyModel.fit(cache_bent, seed=3), LatencyModel.fit(cache_bent, seed=3)
    assert pickle.dumps(first.predictor) == pickle.dumps(again.predictor)
    assert np.array_equal(first.holdout["predicted"], again.holdout["predicted"])


def test_extrapolation_is_flagged(fitted):
    inside = np.asarray([BatchShape((512,), (0,)).features()])
    assert fitted.extrapolation(inside) is None
    beyond = np.asarray([BatchShape(decode_contexts=(8000,) * 1024).features()])
    message = fitted.extrapolation(beyond)
    assert "extrapolated" in message and "decode_seqs up to 1024" in message
    assert fitted.predict(BatchShape(decode_contexts=(8000,) * 1024)) > fitted.predict(
        BatchShape(decode_contexts=(8000,) * 128)
    )


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


def test_a_scaled_profile_keeps_its_batches_and_says_why(profile, tmp_path):
    slower = profile.scaled(1.25, "a busy machine")
    assert np.array_equal(slower.features, profile.features)
    assert np.allclose(slower.latency_s, profile.latency_s * 1.25)
    back = ProfileTable.read(slower.to_parquet(tmp_path / "slower.parquet"))
    assert back.metadata["scaled"] == {"factor": 1.25, "why": "a busy machine"}
    assert back.content_hash() != profile.content_hash()  # fitted and cached apart from the original
    for factor in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ProfileError, match="positive factor"):
            profile.scaled(factor, "")
        with pytest.raises(ProfileError, match="positive factor"):
            profile.scaled(1.0, "", with_prefill=factor)
    by_kind = profile.scaled(1.0, "prefills slower", with_prefill=1.5)  # as an engine's steps drifted, by kind
    prefill = profile.features[:, 1] > 0
    assert prefill.any() and (~prefill).any()
    assert np.allclose(by_kind.latency_s[prefill], profile.latency_s[prefill] * 1.5)
    assert np.array_equal(by_kind.latency_s[~prefill], profile.latency_s[~prefill])
    assert by_kind.metadata["scaled"] == {"decode_only": 1.0, "with_prefill": 1.5, "why": "prefills slower"}


def test_a_gpu_without_kernel_data_gets_the_calibrated_roofline():
    table = resolve_profile("Mistral-7B", "A40", tp=1)
    assert table.metadata["source"] == "analytic" and table.metadata["engine"] == "roofline"
    assert "median of the fits" in table.metadata["calibration"]
