"""Derive the built-in traces' figures (traces/data/builtin_traces.json).

From the real processed trace files where we have them (pass their folder, by default
../shared/reference/traces), and from published statistics where we do not (the 16K arxiv
summarization trace of the Sarathi-Serve paper). Deterministic: running it again on the same
files writes the same JSON.

    python scripts/derive_builtin_traces.py [--reference-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from capsim.common.files import write_atomically
from capsim.traces.loaders import load_trace

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "traces" / "data" / "builtin_traces.json"

PROMPT_GRID = np.round(np.concatenate(([0, 0.001, 0.005], np.arange(1, 100) / 100, [0.995, 0.999, 1])), 4)
OUTPUT_GRID = np.round(
    np.concatenate(([0, 0.001, 0.01, 0.025], np.arange(1, 20) / 20, [0.975, 0.99, 0.995, 0.999, 1])), 4
)
PROMPT_BINS = 10

FROM_FILES = {
    "chat": (
        "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        8192,
        "ShareGPT chat (openchat_sharegpt4), the chat trace of the Sarathi-Serve capacity experiments",
    ),
    "arxiv4k": (
        "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        4096,
        "arXiv summarization, total <= 4096 tokens",
    ),
    "bwb": ("bwb_stats_llama2_tokenizer_filtered_v2.csv", None, "Bilingual Web Book translation: decode-heavy"),
    "azure-code": ("splitwise_code.csv", None, "Azure LLM inference trace 2023, code completion"),
    "azure-conv": ("splitwise_conv.csv", None, "Azure LLM inference trace 2023, conversation"),
}

# The Sarathi-Serve paper's 16K arxiv summarization trace (Table 2); its file is not public here.
ARXIV16K = {"prompt_median": 7059, "prompt_p90": 12985, "output_median": 208, "output_p90": 371, "max_total": 16384}
Z90 = stats.norm.ppf(0.9)


def tables(prompt: np.ndarray, output: np.ndarray) -> dict:
    """Prompt quantiles, and output quantiles per prompt decile (ranks, so ties split evenly)."""
    ranks = stats.rankdata(prompt, method="ordinal") - 1
    decile = ranks * PROMPT_BINS // len(prompt)
    conditional = [np.quantile(output[decile == b], OUTPUT_GRID) for b in range(PROMPT_BINS)]
    return {
        "prompt": {"p": PROMPT_GRID.tolist(), "q": np.round(np.quantile(prompt, PROMPT_GRID), 1).tolist()},
        "output_given_prompt_decile": {"p": OUTPUT_GRID.tolist(), "q": np.round(conditional, 1).tolist()},
    }


def synthesize_arxiv16k(rank_correlation: float, n: int = 400_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lognormal lengths with a Gaussian copula, truncated at the total cap, fitted so that the
    kept requests have the published medians and P90s. The prompt/output rank correlation is
    borrowed from the real (4K-capped) arxiv file: same task, same tokenizer."""
    rho = 2 * np.sin(np.pi * rank_correlation / 6)  # Spearman -> Gaussian correlation
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    params = {}
    for side in ("prompt", "output"):
        median, p90 = ARXIV16K[f"{side}_median"], ARXIV16K[f"{side}_p90"]
        params[side] = [np.log(median), np.log(p90 / median) / Z90]
    for _ in range(50):  # fixed-point fit of the truncated sample to the published figures
        prompt = np.rint(np.exp(params["prompt"][0] + params["prompt"][1] * z[:, 0]))
        output = np.rint(np.exp(params["output"][0] + params["output"][1] * z[:, 1]))
        keep = (prompt + output <= ARXIV16K["max_total"]) & (prompt >= 1) & (output >= 1)
        for side, values in (("prompt", prompt[keep]), ("output", output[keep])):
            median, p90 = np.quantile(values, [0.5, 0.9])
            params[side][0] += np.log(ARXIV16K[f"{side}_median"] / median)
            params[side][1] *= np.log(ARXIV16K[f"{side}_p90"] / ARXIV16K[f"{side}_median"]) / np.log(p90 / median)
    return prompt[keep], output[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-dir", type=Path, default=ROOT.parent / "shared" / "reference" / "traces")
    args = parser.parse_args()

    traces = {}
    for name, (filename, cap, description) in FROM_FILES.items():
        workload = load_trace(args.reference_dir / filename)
        prompt, output = workload.prompt_tokens, workload.output_tokens
        entry = {
            "description": description,
            "derived_from": f"{filename} ({len(workload)} requests)",
            "max_total_tokens": cap,
            **tables(prompt, output),
        }
        if workload.has_arrivals:
            gaps = np.diff(workload.arrival_s)
            entry["interarrival_cv"] = round(float(gaps.std() / gaps.mean()), 3)
        traces[name] = entry
        if name == "arxiv4k":
            arxiv_rank_correlation = stats.spearmanr(prompt, output).statistic

    prompt, output = synthesize_arxiv16k(arxiv_rank_correlation)
    traces = {
        "chat": traces["chat"],
        "arxiv": {
            "description": "arXiv summarization, total <= 16384 tokens (the Sarathi-Serve paper's)",
            "derived_from": (
                "published statistics (prompt median 7059 / P90 12985, output median 208 / P90 371, "
                f"total <= 16384), lognormal fit, rank correlation {arxiv_rank_correlation:.3f} of arxiv4k"
            ),
            "max_total_tokens": ARXIV16K["max_total"],
            **tables(prompt, output),
        },
        **{k: v for k, v in traces.items() if k != "chat"},
    }
    text = json.dumps({"version": 1, "traces": traces}, indent=1) + "\n"
    write_atomically(OUTPUT, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text) // 1024} KiB, {len(traces)} traces)")


if __name__ == "__main__":
    main()
