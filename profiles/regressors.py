"""The two candidate regressors of batch latency, both (almost) additive in the physics features.

Additive because the physics is: a batch runs its linear layers over all tokens, then attention
kernels for prefill and decode, then per-sequence work, one after the other. Additive models also
compile exactly into per-feature lookup tables (predictor.py), which is what makes a prediction
cost about a microsecond.

- PhysicsLinearRegressor: non-negative, non-decreasing piecewise-linear responses in `tokens`
  (flat while the weights' memory traffic dominates, then rising once compute-bound),
  `prefill_attention` and `decode_kv` (each with a fixed cost once there is any such work),
  non-negative linear terms in the counts, and one non-additive part: prefill_attention x a rate that is bilinear over a
  grid
  of (mean chunk length, mean context) of the batch's prefills. On CPUs the cost of attention
  bends with both at once (score matrices and KV outgrowing caches and the allocator's
  thresholds). Fitted to least absolute relative error (the MAPE it is judged by, and robust to
  the odd badly timed batch).
- AdditiveTreesRegressor: gradient-boosted trees on log latency, each tree splitting on a single
  feature (scikit-learn's interaction_cst="no_interactions"), non-decreasing in every feature
  (monotonic_cst): a flexible additive model.

Both follow scikit-learn's estimator contract and take X with the columns of batch.FEATURES.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import SplineTransformer
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data
from threadpoolctl import threadpool_limits

from capsim.profiles.batch import FEATURES


class PhysicsLinearRegressor(RegressorMixin, BaseEstimator):
    link = "identity"
    # Piecewise-linear in the three big costs (flat-then-linear GEMMs; caches filling up under
    # attention and KV reads, which bend the curves on CPUs); linear in the rest.
    splined = (0, 2, 5)  # tokens, prefill_attention, decode_kv

    def __init__(
        self,
        n_knots: int = 10,
        grid_knots: int = 16,
        smoothing: float = 0.1,
        irls_iterations: int = 10,
        irls_floor: float = 0.02,
    ):
        self.n_knots = n_knots
        self.grid_knots = grid_knots
        self.smoothing = smoothing
        self.irls_iterations = irls_iterations
        self.irls_floor = irls_floor

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.knots_ = {k: self._knots(X[:, k], from_zero=k == 0) for k in self.splined}
        self.splines_ = {k: _Ramps(knots) for k, knots in self.knots_.items()}
        self.grid_ = self._grid_knots(X) if self.grid_knots else None
        if self.grid_ is not None:
            self.grid_splines_ = tuple(_hats(knots, "constant") for knots in self.grid_)
        design = self._design(X)
        rows, targets, penalty = design, y, self._smoothness_rows(X, y, design.shape[1])
        if len(penalty):
            rows, targets = np.vstack([design, penalty]), np.concatenate([y, np.zeros(len(penalty))])
        # Least absolute relative error (the MAPE the model is judged by, and robust to the odd
        # batch a noisy CPU timed badly) by iteratively reweighted least squares: a row's weight
        # is 1 / (y^2 |relative residual|), the residual floored so that no row dominates.
        residual = np.ones(len(y))
        for _ in range(self.irls_iterations + 1):
            weights = 1.0 / (y**2 * np.maximum(residual, self.irls_floor))
            weights = np.concatenate([weights, np.full(len(penalty), self.smoothing / self.irls_floor)])
            self.linear_ = LinearRegression(fit_intercept=False, positive=True).fit(
                rows, targets, sample_weight=weights
            )
            residual = np.abs(self.linear_.predict(design) / y - 1)
        return self

    def _knots(self, values: np.ndarray, from_zero: bool) -> np.ndarray:
        """Knots at quantiles of the positive values seen (and at zero for `tokens`)."""
        positive = values[values > 0]
        knots = np.unique(np.quantile(positive, np.linspace(0, 1, self.n_knots))) if len(positive) else np.array([1.0])
        if from_zero:
            # `tokens`: also a knot at every token count profiled over and over (a designed
            # grid's chunk sizes, the budgets schedulers fill), where GEMM tiling bends the curve.
            seen, repeats = np.unique(positive, return_counts=True)
            knots = np.unique(np.concatenate(([0.0], knots, seen[repeats >= 5])))
        return knots if len(knots) >= 2 else np.array([knots[0], knots[0] + 1.0])

    def _grid_knots(self, X) -> tuple[np.ndarray, np.ndarray] | None:
        """The (chunk, context) grid: the distinct values profiled, or quantiles of them if many."""
        has_prefill, chunk, context = _per_chunk(X)
        if not has_prefill.any():
            return None
        knots = []
        for values in (chunk[has_prefill], context[has_prefill]):
            values = np.unique(values)
            if len(values) > self.grid_knots:
                values = np.unique(np.quantile(values, np.linspace(0, 1, self.grid_knots)))
            knots.append(values if len(values) >= 2 else np.array([values[0], values[0] + 1.0]))
        return tuple(knots)

    def _grid_basis(self, X) -> np.ndarray:
        """Bilinear hats over the (chunk, context) grid, times prefill_attention."""
        has_prefill, chunk, context = _per_chunk(X)
        chunk_hats = self.grid_splines_[0].transform(chunk[:, None])
        context_hats = self.grid_splines_[1].transform(context[:, None])
        basis = (chunk_hats[:, :, None] * context_hats[:, None, :]).reshape(len(X), -1)
        return basis * np.where(has_prefill, X[:, 2], 0.0)[:, None]

    def _design(self, X):
        columns = [self.splines_[0].transform(X[:, :1])]
        for k in self.splined[1:]:
            # Zero without this kind of work; with it, a fixed cost (flat below the first knot, so
            # that a tiny batch is not interpolated towards zero) plus a bent curve. The ramp from
            # 0 to 1 (no integer feature lies inside it) keeps the part exactly piecewise linear.
            x, first = X[:, k : k + 1], self.knots_[k][0]
            columns.append(self.splines_[k].transform(np.maximum(x, first)) * np.minimum(x / min(first, 1.0), 1.0))
        columns.append(X[:, [k for k in range(X.shape[1]) if k not in self.splined]])
        if self.grid_ is not None:
            columns.append(self._grid_basis(X))
        return np.hstack(columns)

    def _smoothness_rows(self, X, y, width: int) -> np.ndarray:
        """Pseudo-rows asking adjacent grid rates to be equal (and, faintly, zero).

        Most grid points have a batch or two, some none (or only held-out ones): the penalty
        fills those in from their neighbours instead of leaving them free. Scaled to relative
        latency like the data rows.
        """
        if self.grid_ is None:
            return np.zeros((0, width))
        has_prefill = _per_chunk(X)[0]
        scale = np.median(X[has_prefill, 2] / y[has_prefill])
        n_chunk, n_context = len(self.grid_[0]), len(self.grid_[1])
        index = width - n_chunk * n_context + np.arange(n_chunk * n_context).reshape(n_chunk, n_context)
        pairs = [(a, b) for a, b in zip(index[:-1].ravel(), index[1:].ravel())]
        pairs += [(a, b) for a, b in zip(index[:, :-1].ravel(), index[:, 1:].ravel())]
        rows = np.zeros((len(pairs) + index.size, width))
        for row, (a, b) in enumerate(pairs):
            rows[row, a], rows[row, b] = 1.0, -1.0
        rows[np.arange(len(pairs), len(rows)), index.ravel()] = 0.01
        return rows * scale

    def breakpoints(self, k: int) -> np.ndarray | None:
        """Where the part of feature k bends (None: it is linear); exact for compiling."""
        check_is_fitted(self, "linear_")
        if k not in self.knots_:
            return None
        knots = self.knots_[k]
        return knots if k == 0 else np.unique(np.concatenate(([0.0, min(knots[0], 1.0)], knots)))

    def rate_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(chunk knots, context knots, rates): the 2-D part is prefill_attention x the bilinear
        interpolation of rates at the mean chunk and context of the prefills, each clamped to the grid."""
        check_is_fitted(self, "linear_")
        if self.grid_ is None:
            return None
        n = len(self.grid_[0]) * len(self.grid_[1])
        return self.grid_[0], self.grid_[1], self.linear_.coef_[-n:].reshape(len(self.grid_[0]), len(self.grid_[1]))

    def predict(self, X):
        check_is_fitted(self, "linear_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.linear_.predict(self._design(X))

    def raw_predict(self, X):
        """The prediction before the link function (here the same)."""
        return self.predict(X)


class _Ramps:
    """A constant and one ramp a segment between knots (0 before it, 1 after it; the last rises on
    past the end): with non-negative coefficients, exactly the non-decreasing piecewise-linear
    functions through the knots, extended linearly beyond the last. A batch with more work is
    then never predicted faster, by construction."""

    def __init__(self, knots: np.ndarray):
        self.knots = np.asarray(knots, dtype=np.float64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        low, width = self.knots[:-1], np.diff(self.knots)
        ramps = (x - low) / width
        ramps[:, :-1] = np.clip(ramps[:, :-1], 0.0, 1.0)
        ramps[:, -1] = np.maximum(ramps[:, -1], 0.0)
        return np.hstack([np.ones((len(x), 1)), ramps])


def _hats(knots: np.ndarray, extrapolation: str) -> SplineTransformer:
    """Degree-1 B-splines: hat functions peaking at the knots, so coefficients are node values."""
    return SplineTransformer(degree=1, knots=knots.reshape(-1, 1), extrapolation=extrapolation).fit(
        knots.reshape(-1, 1)
    )


def _per_chunk(X):
    """(has prefill, mean chunk tokens, mean context) of each batch's prefills (0 where none)."""
    prefill_seqs = X[:, 1]
    has_prefill = prefill_seqs > 0
    seqs = np.where(has_prefill, prefill_seqs, 1.0)
    chunk = np.where(has_prefill, (X[:, 0] - X[:, 4]) / seqs, 0.0)
    context = np.where(has_prefill, X[:, 3] / seqs, 0.0)
    return has_prefill, chunk, context


class AdditiveTreesRegressor(RegressorMixin, BaseEstimator):
    link = "exp"

    def __init__(
        self, max_iter: int = 400, learning_rate: float = 0.1, max_leaf_nodes: int = 15, random_state: int = 0
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        # One OpenMP thread: faster for a few hundred rows, and not slowed down by a busy shared
        # CPU (where OpenMP's spinning threads made this fit 50x slower).
        with threadpool_limits(1, user_api="openmp"):
            self.trees_ = HistGradientBoostingRegressor(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=2,
                interaction_cst="no_interactions",
                monotonic_cst=[1] * X.shape[1],  # more of any feature is more work: never faster
                early_stopping=False,
                random_state=self.random_state,
            ).fit(X, np.log(y))
        return self

    def thresholds(self, k: int) -> np.ndarray:
        """Every split threshold on feature k (a tree sends x <= threshold left): between two of
        them the feature's part is constant, wherever the training values lay."""
        check_is_fitted(self, "trees_")
        found = [
            node["num_threshold"]
            for trees in self.trees_._predictors
            for tree in trees
            for node in tree.nodes
            if not node["is_leaf"] and node["feature_idx"] == k
        ]
        return np.unique(np.asarray(found, dtype=np.float64))

    def raw_predict(self, X):
        """Log latency: additive in the features."""
        check_is_fitted(self, "trees_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with threadpool_limits(1, user_api="openmp"):
            return self.trees_.predict(X)

    def predict(self, X):
        return np.exp(self.raw_predict(X))


CANDIDATES = {"physics-linear": PhysicsLinearRegressor, "additive-trees": AdditiveTreesRegressor}
assert FEATURES[0] == "tokens"  # the piecewise-linear term and the token table rely on it
