"""The compiled latency predictor: what the simulator calls once per batch.

An additive model f(x) = link(base + sum_k f_k(x_k)) compiles exactly into one lookup per
feature: `tokens` is an integer, so f_tokens becomes a table indexed by the token count (with
linear extension past its end); a linear term is one multiply; a step function (a tree ensemble's
per-feature sum) is a bisection over its thresholds. The parts are read off the fitted model by
probing it one feature at a time, which is exact for an additive model.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np

from capsim.profiles.batch import FEATURES

TOKEN_TABLE_MIN = 16384


class LatencyPredictor:
    """predictor(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> seconds."""

    def __init__(self, base: float, token_table: np.ndarray, linear: dict[int, float], bent: dict[int, tuple],
                 steps: dict[int, tuple], link: str, coverage: np.ndarray):
        self.base = float(base)
        self.token_table = [float(v) for v in token_table]
        self.token_slope = float(token_table[-1] - token_table[-2])
        self.linear = {int(k): float(v) for k, v in linear.items()}
        self.bent = {int(k): (list(map(float, x)), list(map(float, y))) for k, (x, y) in bent.items()}  # piecewise linear
        self.steps = {int(k): (list(map(float, t)), list(map(float, v))) for k, (t, v) in steps.items()}
        self.link = link
        self.coverage = np.asarray(coverage, dtype=np.float64)  # largest value of each feature in the profile
        self._call = self._specialize()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_call"}  # closures do not pickle

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._call = self._specialize()

    def __call__(self, tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> float:
        return self._call(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv)

    def _specialize(self):
        """A closure with the model's constants bound: no attribute look-ups per call."""
        table, n, slope, base = self.token_table, len(self.token_table), self.token_slope, self.base
        a1, a2, a3, a4, a5 = (self.linear.get(k, 0.0) for k in range(1, len(FEATURES)))
        bent = [(k - 1, x, y, [(y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(len(x) - 1)]) for k, (x, y) in self.bent.items()]
        steps = [(k - 1, thresholds, values) for k, (thresholds, values) in self.steps.items()]
        identity = self.link == "identity"
        exp = math.exp

        def call(t, ps, pa, pc, ds, dk):
            total = base + (table[t] if t < n else table[-1] + slope * (t - n + 1))
            total += a1 * ps + a2 * pa + a3 * pc + a4 * ds + a5 * dk
            if bent or steps:
                x = (ps, pa, pc, ds, dk)
                for i, knots, values, slopes in bent:
                    j = min(max(bisect_right(knots, x[i]) - 1, 0), len(slopes) - 1)
                    total += values[j] + slopes[j] * (x[i] - knots[j])
                for i, thresholds, values in steps:
                    total += values[bisect_left(thresholds, x[i])]
            return total if identity else exp(total)

        return call

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """The same numbers for many batches at once (rows of batch.FEATURES)."""
        X = np.asarray(X, dtype=np.float64)
        tokens = X[:, 0].astype(np.int64)
        table = np.asarray(self.token_table)
        inside = tokens < len(table)
        total = np.where(inside, table[np.minimum(tokens, len(table) - 1)], table[-1] + self.token_slope * (tokens - len(table) + 1))
        total = total + self.base
        for k, a in self.linear.items():
            total = total + a * X[:, k]
        for k, (knots, values) in self.bent.items():
            total = total + _interpolate(X[:, k], np.asarray(knots), np.asarray(values))
        for k, (thresholds, values) in self.steps.items():
            total = total + np.asarray(values)[np.searchsorted(thresholds, X[:, k], side="left")]
        return total if self.link == "identity" else np.exp(total)

    def outside_coverage(self, X: np.ndarray) -> np.ndarray:
        """Which batches lie beyond what the profile measured in some feature (extrapolated)."""
        return (np.asarray(X, dtype=np.float64) > self.coverage * 1.0001).any(axis=1)


def _interpolate(x: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (knots, values), extended linearly beyond both ends."""
    j = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    slopes = np.diff(values) / np.diff(knots)
    return values[j] + slopes[j] * (x - knots[j])


def compile_additive(regressor, X_train: np.ndarray, max_tokens: int) -> LatencyPredictor:
    """Read an additive regressor's per-feature parts off by probing, one feature at a time."""
    zero = np.zeros((1, len(FEATURES)))
    base = float(regressor.raw_predict(zero)[0])
    table_size = max(TOKEN_TABLE_MIN, int(max_tokens) + 2)
    probe = np.zeros((table_size, len(FEATURES)))
    probe[:, 0] = np.arange(table_size)
    token_table = regressor.raw_predict(probe) - base

    linear, bent, steps = {}, {}, {}
    for k in range(1, len(FEATURES)):
        knots = regressor.breakpoints(k) if hasattr(regressor, "breakpoints") else None
        if knots is not None:  # piecewise linear: its values at the knots say everything
            probe = np.zeros((len(knots), len(FEATURES)))
            probe[:, k] = knots
            bent[k] = (knots, regressor.raw_predict(probe) - base)
            continue
        values = np.unique(np.concatenate(([0.0], X_train[:, k])))
        probe = np.zeros((len(values), len(FEATURES)))
        probe[:, k] = values
        part = regressor.raw_predict(probe) - base
        if regressor.link == "identity":  # a linear term: the slope, checked at every probe
            slope = part[-1] / values[-1] if values[-1] else 0.0
            if np.allclose(part, slope * values, rtol=1e-9, atol=1e-12):
                linear[k] = slope
                continue
        # A step function: constant between midpoints of adjacent distinct values, where any
        # tree threshold on this feature lies.
        steps[k] = ((values[:-1] + values[1:]) / 2, part)
    return LatencyPredictor(base, token_table, linear, bent, steps, regressor.link, X_train.max(axis=0))
