"""Result files as `vllm bench serve --save-result` writes them, so existing dashboards read them.

One JSON a load: vLLM's keys where the meaning is the same (date, label, model_id, num_prompts,
request_rate ("inf" for all at once), burstiness, max_concurrency, the figures of
serving_metrics, and --metadata KEY=VALUE pairs at the top level), plus a `capsim` object that
says what was computed: simulated or measured, the deployment, the trace, the latency source.
The default name is vLLM's: {label}-{rate}qps[-concurrency{N}]-{model}-{date}.json.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from capsim.capsearch.load.metrics import MetricsError
from capsim.common.files import strict_dumps, write_atomically


def parse_metadata(pairs) -> dict[str, str]:
    """vLLM's --metadata KEY=VALUE pairs (repeated, or several in one string)."""
    metadata: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise MetricsError(f"--metadata {item!r}: write KEY=VALUE")
            metadata[key] = value
    return metadata


def check_result_options(save_result: bool, result_dir, result_filename, metadata, loads: int) -> None:
    """Companions without --save-result would be ignored: refuse them."""
    if not save_result and (result_dir or result_filename or metadata):
        raise MetricsError(
            "--result-dir, --result-filename and --metadata shape the --save-result files: add --save-result"
        )
    if result_filename and loads != 1:
        raise MetricsError(
            "--result-filename names one file, and this run has several loads: leave it out (each load gets "
            "vLLM's own name)"
        )
    if result_filename and Path(result_filename).name != result_filename:
        raise MetricsError(f"--result-filename {result_filename!r}: a file name, no folder (use --result-dir for that)")


def vllm_result(
    figures: dict,
    *,
    label: str,
    model_id: str,
    num_prompts: int,
    burstiness: float,
    metadata: dict,
    capsim: dict,
    date: str,
) -> dict:
    rate = figures["request_rate"]
    result = {
        "date": date,
        "endpoint_type": "capsim",
        "label": label,
        "model_id": model_id,
        "tokenizer_id": model_id,
        "num_prompts": num_prompts,
        **metadata,
        "request_rate": "inf" if rate == math.inf else rate,
        "burstiness": burstiness,
        "max_concurrency": figures["max_concurrency"],
    }
    result.update({k: v for k, v in figures.items() if k not in ("request_rate", "max_concurrency", "load", "kind")})
    result["capsim"] = capsim
    return result


def result_filename(label: str, rate: float, max_concurrency: int | None, model_id: str, date: str) -> str:
    concurrency = f"-concurrency{max_concurrency}" if max_concurrency is not None else ""
    rate_word = "inf" if rate == math.inf else f"{rate:g}"
    return f"{label}-{rate_word}qps{concurrency}-{model_id.split('/')[-1]}-{date}.json"


def write_result(result: dict, folder: Path, name: str) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = strict_dumps(result, indent=2)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return path


def now_stamp() -> str:
    """vLLM's date format."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")
