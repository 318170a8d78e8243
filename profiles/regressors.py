"""The two candidate regressors of batch latency, both additive in the physics features.

Additive because the physics is: a batch runs its linear layers over all tokens, then attention
kernels for prefill and decode, then per-sequence work, one after the other. Additive models also
compile exactly into per-feature lookup tables (predictor.py), which is what makes a prediction
cost about a microsecond.

- PhysicsLinearRegressor: non-negative piecewise-linear responses in `tokens` (flat while the
  weights' memory traffic dominates, then rising once compute-bound), `prefill_attention` and
  `decode_kv`, plus non-negative linear terms in the counts. Fitted to relative error (weights
  1/y^2), since the SLOs care about ratios.
- AdditiveTreesRegressor: gradient-boosted trees on log latency, each tree splitting on a single
  feature (scikit-learn's interaction_cst="no_interactions"): a flexible additive model.

Both follow scikit-learn's estimator contract and take X with the columns of batch.FEATURES.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import SplineTransformer
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data

from capsim.profiles.batch import FEATURES


class PhysicsLinearRegressor(RegressorMixin, BaseEstimator):
    link = "identity"
    # Piecewise-linear in the three big costs (flat-then-linear GEMMs; caches filling up under
    # attention and KV reads, which bend the curves on CPUs); linear in the rest.
    splined = (0, 2, 5)  # tokens, prefill_attention, decode_kv

    def __init__(self, n_knots: int = 10):
        self.n_knots = n_knots

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.knots_ = {k: self._knots(X[:, k]) for k in self.splined}
        self.splines_ = {
            k: SplineTransformer(degree=1, knots=knots.reshape(-1, 1), extrapolation="linear").fit(X[:, k:k + 1])
            for k, knots in self.knots_.items()
        }
        self.linear_ = LinearRegression(fit_intercept=False, positive=True)
        self.linear_.fit(self._design(X), y, sample_weight=1.0 / y**2)
        return self

    def _knots(self, values: np.ndarray) -> np.ndarray:
        """Knots at quantiles of the values seen, and at zero (most batches lack one kind of work)."""
        positive = values[values > 0]
        inner = np.quantile(positive, np.linspace(0, 1, self.n_knots)) if len(positive) else np.array([1.0])
        knots = np.unique(np.concatenate(([0.0], inner)))
        return knots if len(knots) >= 2 else np.array([0.0, 1.0])

    def _design(self, X):
        linear = [k for k in range(X.shape[1]) if k not in self.splined]
        return np.hstack([self.splines_[k].transform(X[:, k:k + 1]) for k in self.splined] + [X[:, linear]])

    def breakpoints(self, k: int) -> np.ndarray | None:
        """Where the part of feature k bends (None: it is linear); exact for compiling."""
        check_is_fitted(self, "linear_")
        return self.knots_.get(k)

    def predict(self, X):
        check_is_fitted(self, "linear_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.linear_.predict(self._design(X))

    def raw_predict(self, X):
        """The prediction before the link function (here the same)."""
        return self.predict(X)


class AdditiveTreesRegressor(RegressorMixin, BaseEstimator):
    link = "exp"

    def __init__(self, max_iter: int = 400, learning_rate: float = 0.1, max_leaf_nodes: int = 15, random_state: int = 0):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.trees_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=2,
            interaction_cst="no_interactions",
            early_stopping=False,
            random_state=self.random_state,
        ).fit(X, np.log(y))
        return self

    def raw_predict(self, X):
        """Log latency: additive in the features."""
        check_is_fitted(self, "trees_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.trees_.predict(X)

    def predict(self, X):
        return np.exp(self.raw_predict(X))


CANDIDATES = {"physics-linear": PhysicsLinearRegressor, "additive-trees": AdditiveTreesRegressor}
assert FEATURES[0] == "tokens"  # the piecewise-linear term and the token table rely on it
