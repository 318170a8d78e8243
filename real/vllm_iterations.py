"""vLLM's own record of its batches: with `--enable-logging-iteration-details` (vLLM 0.11+) its
engine logs every step as "Iteration(i): a context requests, b context tokens, c generation
requests, d generation tokens, iteration elapsed time: t ms". Read from its log, those steps set
what vLLM's scheduler did against what capsim's policy does with the same arrivals (batch_mix).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ITERATION = re.compile(
    r"Iteration\(\d+\): (\d+) context requests, (\d+) context tokens, (\d+) generation requests, "
    r"(\d+) generation tokens, iteration elapsed time: ([\d.]+) ms(?! \(dummy\))"
)
COLUMNS = ("prefill_seqs", "prefill_tokens", "decode_seqs", "decode_tokens", "elapsed_s")


def read_iterations(log: str | Path) -> np.ndarray:
    """One row a step (COLUMNS), in the order vLLM ran them; empty where the log has none."""
    rows = [tuple(float(v) for v in m.groups()) for m in ITERATION.finditer(Path(log).read_text(errors="replace"))]
    table = np.array(rows, dtype=np.float64).reshape(-1, len(COLUMNS))
    table[:, 4] /= 1e3
    return table


def batch_mix(prefill_tokens: np.ndarray, prefill_seqs: np.ndarray, decode_seqs: np.ndarray) -> dict:
    """How a scheduler filled its steps: how many, the share that held a prompt chunk, the prompt
    tokens and prompts such a step held, and the decodes a step held (mean and P90)."""
    with_prefill = prefill_seqs > 0
    return {
        "steps": int(len(prefill_tokens)),
        "with_prefill": float(with_prefill.mean()) if len(with_prefill) else 0.0,
        "prefill_tokens": float(prefill_tokens[with_prefill].mean()) if with_prefill.any() else 0.0,
        "prefill_seqs": float(prefill_seqs[with_prefill].mean()) if with_prefill.any() else 0.0,
        "decode_seqs": float(decode_seqs.mean()) if len(decode_seqs) else 0.0,
        "decode_seqs_p90": float(np.percentile(decode_seqs, 90)) if len(decode_seqs) else 0.0,
    }
