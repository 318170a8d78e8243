"""Two latency profiles of one model, batch by batch: where they agree and what makes them differ.

Each batch of the first profile (its seconds, as measured or estimated) stands beside what the
second profile's latency model predicts for that very batch: the two grids differ, so the second
is read through its fit, and batches beyond what it covers are left out and counted.

- By kind and regime: the median ratio (second / first) and its P10-P90 spread. Large prefills
  are mostly the linear layers' GEMMs; small decode batches mostly per-step overhead and weight
  reads; long-context decodes mostly attention.
- The difference split three ways, by least squares over the batches, each weighted by 1 / its
  first-profile seconds (every batch's relative error counts alike): a per-step constant
  (launches, scheduling, sampling), a term per token (the linear layers) and a term per attention
  element (prefill_attention + decode_kv: the attention kernels). Each term's share is its mean
  absolute size over the batches, against the three together.
"""

from __future__ import annotations

import numpy as np

from capsim.profiles.batch import FEATURES
from capsim.profiles.errors import ProfileError
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.table import ProfileTable

TOKENS, PREFILL_ATTENTION, DECODE_SEQS, DECODE_KV = (
    FEATURES.index(n) for n in ("tokens", "prefill_attention", "decode_seqs", "decode_kv")
)
SMALL_PREFILL = 512  # tokens
SMALL_DECODE = 16  # sequences
SHORT_CONTEXT = 2048  # mean KV length of a decode batch


def regimes(table: ProfileTable) -> list[tuple[str, np.ndarray]]:
    """(name, rows) of each kind and regime that has batches, then all batches."""
    X, kinds = table.features, table.kinds
    seqs = np.maximum(X[:, DECODE_SEQS], 1)
    context = X[:, DECODE_KV] / seqs
    prefill, decode = kinds == "prefill", kinds == "decode"
    groups = [
        (f"prefill <={SMALL_PREFILL} tokens", prefill & (X[:, TOKENS] <= SMALL_PREFILL)),
        (f"prefill >{SMALL_PREFILL} tokens", prefill & (X[:, TOKENS] > SMALL_PREFILL)),
        (
            f"decode <={SMALL_DECODE} seqs, context <={SHORT_CONTEXT}",
            decode & (seqs <= SMALL_DECODE) & (context <= SHORT_CONTEXT),
        ),
        (
            f"decode <={SMALL_DECODE} seqs, context >{SHORT_CONTEXT}",
            decode & (seqs <= SMALL_DECODE) & (context > SHORT_CONTEXT),
        ),
        (
            f"decode >{SMALL_DECODE} seqs, context <={SHORT_CONTEXT}",
            decode & (seqs > SMALL_DECODE) & (context <= SHORT_CONTEXT),
        ),
        (
            f"decode >{SMALL_DECODE} seqs, context >{SHORT_CONTEXT}",
            decode & (seqs > SMALL_DECODE) & (context > SHORT_CONTEXT),
        ),
        ("mixed", kinds == "mixed"),
        ("all", np.ones(len(kinds), dtype=bool)),
    ]
    return [(name, rows) for name, rows in groups if rows.any()]


def compare_profiles(first: ProfileTable, second: ProfileTable, second_model: LatencyModel | None = None) -> dict:
    """The comparison as a dict (rows by regime, the three-way split of the difference)."""
    if first.metadata["model"] != second.metadata["model"]:
        raise ProfileError(
            f"the profiles are of different models: {first.metadata['model']} and {second.metadata['model']}"
        )
    if not len(first):
        raise ProfileError(f"{first.label} has no batches")
    model = second_model or LatencyModel.for_profile(second)
    X, measured = first.features, first.latency_s
    outside = model.predictor.outside_coverage(X)
    if outside.all():
        raise ProfileError(f"every batch of {first.label} lies beyond what {second.label} covers: nothing to compare")
    predicted = model.predictor.predict_many(X)
    ratio = predicted / measured
    rows = []
    for name, group in regimes(first):
        kept = group & ~outside
        entry = {"regime": name, "batches": int(kept.sum()), "beyond_coverage": int((group & outside).sum())}
        if kept.any():
            p10, p50, p90 = np.percentile(ratio[kept], (10, 50, 90))
            entry |= {
                "first_ms_median": float(np.median(measured[kept]) * 1e3),
                "ratio_median": float(p50),
                "ratio_p10": float(p10),
                "ratio_p90": float(p90),
            }
        rows.append(entry)
    kept = ~outside
    return {
        "first": _describe(first),
        "second": _describe(second),
        "rows": rows,
        "difference": _split(X[kept], measured[kept], predicted[kept]),
    }


def _describe(table: ProfileTable) -> dict:
    m = table.metadata
    return {
        "label": table.label,
        "model": m["model"],
        "hardware": m["hardware"],
        "tp": m["tp"],
        "engine": m["engine"],
        "source": m["source"],
        "batches": len(table),
    }


def _split(X: np.ndarray, measured: np.ndarray, predicted: np.ndarray) -> dict:
    """difference = per_step + per_token x tokens + per_attention x (prefill_attention + decode_kv),
    fitted to each batch's difference (second - first) with weights 1 / first."""
    terms = np.column_stack([np.ones(len(X)), X[:, TOKENS], X[:, PREFILL_ATTENTION] + X[:, DECODE_KV]])
    difference = predicted - measured
    weights = 1.0 / measured
    coefficients, *_ = np.linalg.lstsq(terms * weights[:, None], difference * weights, rcond=None)
    parts = np.abs(terms * coefficients)  # each term's size in each batch (seconds)
    sizes = parts.mean(axis=0)
    fitted = terms @ coefficients
    residual = np.sqrt(np.mean(((difference - fitted) * weights) ** 2))  # relative to each batch's first seconds
    shares = sizes / sizes.sum() if sizes.sum() > 0 else np.zeros(3)
    return {
        "batches": len(X),
        "per_step_ms": float(coefficients[0] * 1e3),
        "per_token_us": float(coefficients[1] * 1e6),
        "per_million_attention_ms": float(coefficients[2] * 1e9),
        "share": {"per_step": float(shares[0]), "linear": float(shares[1]), "attention": float(shares[2])},
        "mean_abs_difference_ms": float(np.mean(np.abs(difference)) * 1e3),
        "rms_relative_residual": float(residual),
    }


def split_words(difference: dict) -> str:
    """The three-way split of the difference, in one sentence."""
    share = difference["share"]
    return (
        f"{difference['per_step_ms']:+.3f} ms a step ({share['per_step']:.0%}), {difference['per_token_us']:+.3f} us "
        f"a token "
        f"({share['linear']:.0%}, linear layers), {difference['per_million_attention_ms']:+.4f} ms per million "
        f"attention "
        f"elements ({share['attention']:.0%}); residual {difference['rms_relative_residual']:.1%} of a batch (RMS)"
    )
