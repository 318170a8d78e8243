"""The compiled latency predictor: what the simulator calls once per batch.

An additive model f(x) = link(base + sum_k f_k(x_k)) compiles exactly into one lookup per
feature: `tokens` is an integer, so f_tokens becomes a table indexed by the token count (with
linear extension past its end); a linear term is one multiply; a piecewise-linear part is a
bisection over its knots; a step function (a tree ensemble's per-feature sum) is a bisection over
its thresholds. The parts are read off the fitted model by probing it one feature at a time, which
is exact for an additive model.

The physics model adds one non-additive part, prefill_attention x a rate that depends on the
prefills' mean chunk length and context (CPU caches): a bilinear table over a (chunk, context)
grid, read off the fitted model as it is, and zero for a batch without prefills (so the probes
above never see it).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np

from capsim.profiles.batch import FEATURES

TOKEN_TABLE_MIN = 16384
MIN_STEP_S = 1e-5  # no step of any engine takes less: the floor under every prediction


class LatencyPredictor:
    """predictor(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> seconds."""

    def __init__(
        self,
        base: float,
        token_table: np.ndarray,
        linear: dict[int, float],
        bent: dict[int, tuple],
        steps: dict[int, tuple],
        link: str,
        coverage: np.ndarray,
        grid: tuple | None = None,
        floor: float = 0.0,
        host: tuple[float, float] = (0.0, 0.0),
    ):
        self.base = float(base)
        self.token_table = [float(v) for v in token_table]
        self.token_slope = float(token_table[-1] - token_table[-2])
        self.linear = {int(k): float(v) for k, v in linear.items()}
        self.bent = {
            int(k): (list(map(float, x)), list(map(float, y))) for k, (x, y) in bent.items()
        }  # piecewise linear
        self.steps = {int(k): (list(map(float, t)), list(map(float, v))) for k, (t, v) in steps.items()}
        # (chunk knots, context knots, rates [chunk, context]): the rate of prefill_attention
        self.grid = (
            None
            if grid is None
            else (list(map(float, grid[0])), list(map(float, grid[1])), [list(map(float, row)) for row in grid[2]])
        )
        self.link = link
        self.floor = float(floor)  # every prediction is at least this (MIN_STEP_S once made monotone)
        # The engine's host time outside its kernels: seconds a step, and a sequence in it (profiles/host_time.py).
        self.host = (float(host[0]), float(host[1]))
        self.coverage = np.asarray(coverage, dtype=np.float64)  # largest value of each feature in the profile
        self._call = self._specialize()
        self._decodes = self._specialize_decodes()

    def monotone(self) -> LatencyPredictor:
        """This model held to the latency contract over the whole feature space, extrapolation
        included: each part non-decreasing in its feature and every step at least MIN_STEP_S. The
        regressors are fitted monotone, so this changes nothing but the floor; it is the check that
        keeps a future regressor honest. Tables go through isotonic regression (the nearest
        non-decreasing sequence), negative slopes and attention rates become 0."""
        from sklearn.isotonic import isotonic_regression  # at fit time only

        table = isotonic_regression(np.asarray(self.token_table, dtype=np.float64))
        slope = max(self.token_slope, 0.0)
        table = np.append(table, table[-1] + slope)  # the slope past the end is the last difference
        bent = {k: (x, isotonic_regression(np.asarray(y, dtype=np.float64))) for k, (x, y) in self.bent.items()}
        steps = {k: (t, isotonic_regression(np.asarray(v, dtype=np.float64))) for k, (t, v) in self.steps.items()}
        grid = None if self.grid is None else (self.grid[0], self.grid[1], np.maximum(np.asarray(self.grid[2]), 0.0))
        return LatencyPredictor(
            self.base,
            table,
            {k: max(v, 0.0) for k, v in self.linear.items()},
            bent,
            steps,
            self.link,
            self.coverage,
            grid,
            floor=MIN_STEP_S,
            host=self.host,
        )

    def with_host_time(self, step_s: float, per_sequence_s: float) -> LatencyPredictor:
        """This model plus an engine's host time: step_s a batch and per_sequence_s each sequence in
        it, added after the link (the kernels' time and the host's add, whatever the regressor)."""
        if step_s < 0 or per_sequence_s < 0:
            raise ValueError(f"host time is never negative, got {step_s} s a step and {per_sequence_s} s a sequence")
        state = self.__getstate__() | {"host": (float(step_s), float(per_sequence_s))}
        copy = LatencyPredictor.__new__(LatencyPredictor)
        copy.__setstate__(state)
        return copy

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_call", "_decodes")}  # closures do not pickle

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"host": (0.0, 0.0)} | state)  # models pickled before host time had none
        self._call = self._specialize()
        self._decodes = self._specialize_decodes()

    def decode_iterations(
        self, tokens: list[int], decode_seqs: list[int], decode_kv: np.ndarray, counts: list[int]
    ) -> np.ndarray:
        """Seconds of decode-only batches (no prefills) that differ only in their KV length, in
        runs: counts[s] batches of tokens[s] and decode_seqs[s]. The same numbers as calling the
        predictor on each, bit for bit (the same operations in the same order, elementwise), for
        a decode stretch computed in one step. A new array, the caller's to write."""
        return self._decodes(tokens, decode_seqs, decode_kv, counts)

    @property
    def per_batch(self):
        """The predictor as a plain function of the six features: what a per-batch loop calls."""
        return self._call

    def __call__(self, tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv) -> float:
        return self._call(tokens, prefill_seqs, prefill_attention, prefill_context, decode_seqs, decode_kv)

    def _specialize(self):
        """A closure with the model's constants bound: no attribute look-ups per call."""
        table, n, slope, base = self.token_table, len(self.token_table), self.token_slope, self.base
        a1, a2, a3, a4, a5 = (self.linear.get(k, 0.0) for k in range(1, len(FEATURES)))
        bent = [(k - 1, knots, *_segments(knots, values)) for k, (knots, values) in self.bent.items()]
        steps = [(k - 1, thresholds, values) for k, (thresholds, values) in self.steps.items()]
        grid = self.grid is not None
        if grid:
            qk, ck, rates = self.grid
            q_lo, q_hi, nq, c_lo, c_hi, nc = qk[0], qk[-1], len(qk) - 1, ck[0], ck[-1], len(ck) - 1
            q_inv = [1.0 / (b - a) for a, b in zip(qk, qk[1:])]
            c_inv = [1.0 / (b - a) for a, b in zip(ck, ck[1:])]
        identity = self.link == "identity"
        exp = math.exp
        floor = self.floor
        host_step, host_seq = self.host

        def call(t, ps, pa, pc, ds, dk):
            total = base + (table[t] if t < n else table[-1] + slope * (t - n + 1))
            total += a1 * ps + a2 * pa + a3 * pc + a4 * ds + a5 * dk
            if bent or steps:
                x = (ps, pa, pc, ds, dk)
                for i, knots, starts, values, slopes in bent:
                    j = bisect_right(knots, x[i])
                    total += values[j] + slopes[j] * (x[i] - starts[j])
                for i, thresholds, values in steps:
                    total += values[bisect_left(thresholds, x[i])]
            if grid and ps:
                q, c = (t - ds) / ps, pc / ps  # the prefills' mean chunk and context, clamped to the grid
                q = q_lo if q < q_lo else (q_hi if q > q_hi else q)
                c = c_lo if c < c_lo else (c_hi if c > c_hi else c)
                i, j = bisect_right(qk, q, 1, nq) - 1, bisect_right(ck, c, 1, nc) - 1
                u, v = (q - qk[i]) * q_inv[i], (c - ck[j]) * c_inv[j]
                low, high = rates[i], rates[i + 1]
                at_low = low[j] + v * (low[j + 1] - low[j])
                total += pa * (at_low + u * (high[j] + v * (high[j + 1] - high[j]) - at_low))
            total = total if identity else exp(total)
            if host_seq or host_step:
                total += host_step + host_seq * (ps + ds)
            return total if total > floor else floor

        return call

    def _specialize_decodes(self):
        """The scalar path of _specialize with prefill_* = 0, per run of batches: a run's sum is
        one number up to the first term in decode_kv, then an array. A term whose coefficient is
        0 is left out (adding 0.0 changes nothing); a term in a prefill feature is a constant."""
        table, n, slope, base = self.token_table, len(self.token_table), self.token_slope, self.base
        a1, a2, a3, a4, a5 = (self.linear.get(k, 0.0) for k in range(1, len(FEATURES)))
        prefill_part = a1 * 0 + a2 * 0 + a3 * 0  # the prefill features are 0
        SEQS, KV = (
            len(FEATURES) - 3,
            len(FEATURES) - 2,
        )  # decode_seqs' and decode_kv's places among the features after tokens

        def term(kind, parts, x):
            if kind == "bent":
                knots, starts, values, slopes = parts
                j = bisect_right(knots, x)
                return float(values[j]) + float(slopes[j]) * (x - float(starts[j]))
            thresholds, values = parts
            return float(values[bisect_left(thresholds, x)])

        # The terms after the linear part, in the scalar path's order: (feature, kind, parts, the
        # constant for a prefill feature); those before the first in decode_kv stay per run.
        terms = [(k - 1, "bent", (knots, *_segments(knots, values))) for k, (knots, values) in self.bent.items()]
        terms += [(k - 1, "steps", (list(thresholds), list(values))) for k, (thresholds, values) in self.steps.items()]
        terms = [(i, kind, parts, term(kind, parts, 0) if i < SEQS else None) for i, kind, parts in terms]
        arrays = {i: tuple(np.asarray(a) for a in parts) for i, _, parts, _ in terms if i == KV}
        split = len(terms) if a5 == 0 else 0
        split = min([split] + [index for index, (i, *_) in enumerate(terms) if i == KV])
        per_run, after = terms[:split], terms[split:]
        identity = self.link == "identity"
        exp = math.exp
        floor = self.floor
        host_step, host_seq = self.host

        def decodes(tokens, seqs, dk, counts):
            def spread(values):  # one number a run -> one a batch (one run: the number, which numpy broadcasts alike)
                return values[0] if len(values) == 1 else np.repeat(np.array(values), counts)

            totals, linears = [], []
            for t, ds in zip(tokens, seqs):
                total = base + (table[t] if t < n else table[-1] + slope * (t - n + 1))
                linear = prefill_part + a4 * ds
                if not a5:
                    total = total + linear
                    for _, kind, parts, constant in per_run:
                        total = total + (constant if constant is not None else term(kind, parts, ds))
                totals.append(total)
                linears.append(linear)
            total = spread(totals)
            if a5:
                total = total + (spread(linears) + a5 * dk)
            for i, kind, parts, constant in after:
                if i == KV:
                    if kind == "bent":
                        knots, starts, values, slopes = arrays[i]
                        j = np.searchsorted(knots, dk, side="right")
                        total = total + (values[j] + slopes[j] * (dk - starts[j]))
                    else:
                        thresholds, values = arrays[i]
                        total = total + values[np.searchsorted(thresholds, dk, side="left")]
                elif constant is not None:
                    total = total + constant
                else:
                    total = total + spread([term(kind, parts, ds) for ds in seqs])
            if not isinstance(total, np.ndarray):
                total = np.full(len(dk), total)
            total = (
                total if identity else np.array([exp(v) for v in total.tolist()])
            )  # math.exp: np.exp may round apart
            if host_seq or host_step:  # as the scalar path adds it, batch by batch
                total = total + spread([host_step + host_seq * (0 + ds) for ds in seqs])
            return np.maximum(total, floor)

        return decodes

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """The same numbers for many batches at once (rows of batch.FEATURES)."""
        X = np.asarray(X, dtype=np.float64)
        tokens = X[:, 0].astype(np.int64)
        table = np.asarray(self.token_table)
        inside = tokens < len(table)
        total = np.where(
            inside, table[np.minimum(tokens, len(table) - 1)], table[-1] + self.token_slope * (tokens - len(table) + 1)
        )
        total = total + self.base
        for k, a in self.linear.items():
            total = total + a * X[:, k]
        for k, (knots, values) in self.bent.items():
            total = total + _interpolate(X[:, k], np.asarray(knots), np.asarray(values))
        for k, (thresholds, values) in self.steps.items():
            total = total + np.asarray(values)[np.searchsorted(thresholds, X[:, k], side="left")]
        if self.grid is not None:
            total = total + self._grid_part(X)
        total = total if self.link == "identity" else np.exp(total)
        if any(self.host):
            total = total + (self.host[0] + self.host[1] * (X[:, 1] + X[:, 4]))
        return np.maximum(total, self.floor)

    def _grid_part(self, X: np.ndarray) -> np.ndarray:
        qk, ck, rates = (np.asarray(a) for a in self.grid)
        has_prefill = X[:, 1] > 0
        seqs = np.where(has_prefill, X[:, 1], 1.0)
        q = np.clip((X[:, 0] - X[:, 4]) / seqs, qk[0], qk[-1])
        c = np.clip(X[:, 3] / seqs, ck[0], ck[-1])
        i = np.clip(np.searchsorted(qk, q, side="right") - 1, 0, len(qk) - 2)
        j = np.clip(np.searchsorted(ck, c, side="right") - 1, 0, len(ck) - 2)
        u, v = (q - qk[i]) / (qk[i + 1] - qk[i]), (c - ck[j]) / (ck[j + 1] - ck[j])
        at_low = rates[i, j] + v * (rates[i, j + 1] - rates[i, j])
        at_high = rates[i + 1, j] + v * (rates[i + 1, j + 1] - rates[i + 1, j])
        return np.where(has_prefill, X[:, 2] * (at_low + u * (at_high - at_low)), 0.0)

    def outside_coverage(self, X: np.ndarray) -> np.ndarray:
        """Which batches lie beyond what the profile measured in some feature (extrapolated)."""
        return (np.asarray(X, dtype=np.float64) > self.coverage * 1.0001).any(axis=1)


def _segments(knots: list[float], values: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Start, value there and slope of the line to use for j = bisect_right(knots, x), 0 .. len(knots):
    the segment x lies on, or the first or last one extended beyond the ends (no clamping per call)."""
    lines = [
        (knots[i], values[i], (values[i + 1] - values[i]) / (knots[i + 1] - knots[i])) for i in range(len(knots) - 1)
    ]
    lines = [lines[0]] + lines + [lines[-1]]
    return [a for a, _, _ in lines], [v for _, v, _ in lines], [s for _, _, s in lines]


def _interpolate(x: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (knots, values), extended linearly beyond both ends."""
    j = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    slopes = np.diff(values) / np.diff(knots)
    return values[j] + slopes[j] * (x - knots[j])


def compile_additive(regressor, X_train: np.ndarray, max_tokens: int) -> LatencyPredictor:
    """Read an additive regressor's per-feature parts off by probing, one feature at a time
    (and its (chunk, context) rate table as it is, where it has one)."""
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
        if hasattr(regressor, "thresholds"):  # a step function with known steps: one probe a step, exact anywhere
            thresholds = regressor.thresholds(k)
            if len(thresholds):
                values = np.append(thresholds, thresholds[-1] + 1.0)
                probe = np.zeros((len(values), len(FEATURES)))
                probe[:, k] = values
                steps[k] = (thresholds, regressor.raw_predict(probe) - base)
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
    grid = regressor.rate_grid() if hasattr(regressor, "rate_grid") else None
    return LatencyPredictor(base, token_table, linear, bent, steps, regressor.link, X_train.max(axis=0), grid)
