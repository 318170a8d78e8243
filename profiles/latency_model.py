"""LatencyModel: fitted on a ProfileTable, compiled, and honest about its own accuracy.

Fitting holds out a seeded 20% of the profile's rows (stratified by batch kind), fits every
candidate regressor on the rest, keeps the one with the lower held-out MAPE, compiles it, and
checks that the compiled predictor gives the same held-out numbers. Fitted models are cached on
disk keyed by the profile's content hash, so a profile is fitted once.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from capsim.common.files import write_atomically
from capsim.profiles.batch import FEATURES, BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.predictor import LatencyPredictor, compile_additive
from capsim.profiles.table import ProfileTable

FIT_VERSION = 8  # bump when fitting changes, so that cached models are refitted
HOLDOUT_FRACTION = 0.2


def default_cache_dir() -> Path:
    return Path(os.environ.get("CAPSIM_CACHE", Path.home() / ".cache" / "capsim")) / "latency-models"


@dataclass
class LatencyModel:
    predictor: LatencyPredictor
    regressor: str  # which candidate was kept
    accuracy: dict  # held-out error of every candidate, overall and per batch kind
    profile: dict  # the profile's metadata: model, hardware, source, ...
    holdout: dict = field(default_factory=dict)  # held-out features, measured and predicted latency
    profile_hash: str = ""  # content hash of the profile it was fitted on

    @property
    def source(self) -> str:
        return self.profile["source"]

    @property
    def source_words(self) -> str:
        from capsim.profiles.source import describe_source

        return describe_source(self.profile)

    @property
    def frontend_s(self) -> float:
        """Seconds each request spends before the engine sees it (host time), 0 without."""
        return float(self.profile.get("host_time", {}).get("frontend_s", 0.0))

    def with_host_time(self, host) -> LatencyModel:
        """This model plus an engine's host time (profiles/host_time.py) where its source lacks it;
        itself where the source holds it already (measured) or `host` is None."""
        from capsim.profiles.host_time import SOURCES_WITHOUT_HOST_TIME

        if host is None or self.source not in SOURCES_WITHOUT_HOST_TIME or "host_time" in self.profile:
            return self
        return replace(
            self,
            predictor=self.predictor.with_host_time(host.step_s, host.per_sequence_s),
            profile=self.profile | {"host_time": host.to_dict(), "host_time_words": host.words},
        )

    def __call__(self, tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> float:
        return self.predictor(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv)

    def predict(self, shape: BatchShape) -> float:
        """Seconds for one batch (see extrapolation() for batches the profile does not cover)."""
        return float(self.predictor.predict_many(np.asarray([shape.features()], dtype=np.float64))[0])

    def extrapolation(self, features: np.ndarray, weights: np.ndarray | None = None) -> str | None:
        """None when the profile covers every batch (rows of batch.FEATURES, each standing for
        `weights` batches, 1 by default); else what went beyond it."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
        weights = np.ones(len(features), dtype=np.int64) if weights is None else np.asarray(weights)
        outside = self.predictor.outside_coverage(features) & (weights > 0)
        if not outside.any():
            return None
        peak = features[weights > 0].max(axis=0)
        over = [
            f"{n} up to {v:g} (profiled up to {c:g})"
            for n, v, c in zip(FEATURES, peak, self.predictor.coverage)
            if v > c
        ]
        return (
            f"{int(weights[outside].sum())} of {int(weights.sum())} batches extrapolated beyond the profile along the "
            f"physics "
            "features: " + ", ".join(over)
        )

    @classmethod
    def fit(cls, profile: ProfileTable, seed: int = 0) -> LatencyModel:
        from capsim.profiles.regressors import CANDIDATES  # scikit-learn loads only when fitting

        X, y, kinds = profile.features, profile.latency_s, profile.kinds
        if len(y) < 10:
            raise ProfileError(f"a profile needs at least 10 batches to fit a latency model, this one has {len(y)}")
        test = _holdout(kinds, seed)
        accuracy, fitted = {}, {}
        for name, make in CANDIDATES.items():
            regressor = make().fit(X[~test], y[~test])
            fitted[name] = regressor
            accuracy[name] = errors(y[test], regressor.predict(X[test]), kinds[test])
        best = min(accuracy, key=lambda name: accuracy[name]["all"]["mape"])
        predictor = compile_additive(fitted[best], X[~test], X[:, 0].max())
        compiled = predictor.predict_many(X[test])
        if not np.allclose(compiled, fitted[best].predict(X[test]), rtol=1e-6):
            raise ProfileError(f"compiling the {best} latency model changed its predictions; this is a bug in capsim")
        predictor = predictor.monotone()  # positive, and never less for more work, also where it extrapolates
        compiled = predictor.predict_many(X[test])
        accuracy["compiled"] = errors(y[test], compiled, kinds[test])
        holdout = {"features": X[test], "measured": y[test], "predicted": compiled, "kinds": kinds[test]}
        return cls(predictor, best, accuracy, dict(profile.metadata), holdout, profile.content_hash())

    @classmethod
    def for_profile(cls, profile: ProfileTable, cache_dir: Path | None = None) -> LatencyModel:
        """The fitted model of a profile, from the cache when it was fitted before."""
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache_dir / f"{profile.content_hash()}-v{FIT_VERSION}.pkl"
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    return pickle.load(f)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
                pass  # a damaged cache entry is refitted and overwritten
        model = cls.fit(profile)
        blob = pickle.dumps(model)
        write_atomically(path, lambda tmp: Path(tmp).write_bytes(blob))
        return model


def errors(measured: np.ndarray, predicted: np.ndarray, kinds: np.ndarray) -> dict:
    """MAPE and P95 absolute percentage error, overall and per batch kind (in percent)."""
    ape = 100 * np.abs(predicted - measured) / measured
    groups = {"all": np.ones(len(ape), dtype=bool)} | {k: kinds == k for k in ("prefill", "decode", "mixed")}
    return {
        name: {"mape": float(ape[mask].mean()), "p95_ape": float(np.percentile(ape[mask], 95)), "rows": int(mask.sum())}
        for name, mask in groups.items()
        if mask.any()
    }


def _holdout(kinds: np.ndarray, seed: int) -> np.ndarray:
    """A seeded HOLDOUT_FRACTION of the rows of each kind (at least one row where a kind has 3+)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(kinds), dtype=bool)
    for kind in np.unique(kinds):
        rows = np.flatnonzero(kinds == kind)
        count = int(round(len(rows) * HOLDOUT_FRACTION)) or (1 if len(rows) >= 3 else 0)
        test[rng.choice(rows, count, replace=False)] = True
    return test
