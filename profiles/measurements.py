"""Real measurements to hold capsim to: published closed-loop runs of real engines.

NVIDIA ships 5,221 real runs of vLLM, SGLang and TensorRT-LLM with its kernel database
(`aiconfigurator_core/systems/silicon_sample.csv` in the `kernel-db` extra): engine and version,
model, GPU, precision, TP/PP/DP, input and output length, concurrency, and the measured mean TTFT
and TPOT. AIConfigurator collects them with its generated benchmark script (aiperf, streaming,
ignore_eos, fixed lengths, `--concurrency c`, 20 x c requests after 2 x c warm-up requests that
it lets finish first), so its rows are the closed loop `ClosedLoop.aiperf(c)` describes; the rows
of InferenceMAX's matrix were measured by its client (`ClosedLoop.inferencemax(c)`).

Rows capsim cannot price are kept with the reason (disaggregated pools, pipeline parallelism,
a model outside the catalog, a quantization it has no kernels for), never dropped in silence.
A mixture of experts' rows carry their layout: attention TP x DP, and the MoE's TP x EP over the
same GPUs.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from capsim.profiles.errors import ProfileError
from capsim.profiles.kernel_db import SYSTEMS
from capsim.profiles.models import get_model

HARDWARE = {system: hardware for hardware, system in SYSTEMS.items()}  # the package's system name -> capsim's
QUANTS = {"": "bf16", "bf16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "nvfp4": "nvfp4", "int4_wo": "int4"}
PRICED_QUANTS = ("bf16", "fp8", "nvfp4")  # weights capsim has kernels for
COLUMNS = (
    "id",
    "backend",
    "backend_version",
    "model_path",
    "system",
    "mode",
    "isl",
    "osl",
    "gemm_quant_mode",
    "batch_size",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "silicon_ttft_ms",
    "silicon_tpot_ms",
)


@dataclass(frozen=True)
class Measurement:
    """One real closed-loop run: `concurrency` users, each sending fixed-length requests in turn."""

    id: str
    engine: str  # vllm | sglang | trtllm
    engine_version: str  # "" where the source does not say
    model: str  # capsim's catalog name
    hardware: str  # capsim's GPU name
    quant: str  # weights: bf16 | fp8
    kv_quant: str  # KV cache: bf16 | fp8
    tp: int
    ep: int  # expert parallelism (MoE)
    dp: int  # attention data-parallel ranks (MoE)
    isl: int
    osl: int
    concurrency: int
    ttft_ms: float  # mean, measured
    tpot_ms: float  # mean, measured
    source: str  # where it came from, in words
    client: str = "aiperf"  # the benchmark client that measured it: aiperf | inferencemax

    @property
    def concurrency_bucket(self) -> str:
        for top, label in ((8, "1-8"), (32, "9-32"), (128, "33-128")):
            if self.concurrency <= top:
                return label
        return ">128"


def silicon_sample_path() -> Path:
    try:
        import aiconfigurator_core
    except ImportError:
        raise ProfileError(
            "the silicon sample ships with NVIDIA's aiconfigurator-core package: pip install 'capsim[kernel-db]'"
        ) from None
    return Path(aiconfigurator_core.__file__).parent / "systems" / "silicon_sample.csv"


def catalog_model(model_path: str) -> str | None:
    """capsim's name of a Hugging Face id, also for an FP8 checkpoint of a catalog model."""
    for name in (model_path, model_path.split("/")[-1], model_path.split("/")[-1].removesuffix("-FP8")):
        for candidate in (name, name.removesuffix("-Instruct")):
            try:
                return get_model(candidate).name
            except ProfileError:
                continue
    return None


def read_silicon_sample(path: str | Path | None = None) -> tuple[list[Measurement], Counter]:
    """The rows capsim can replay, and a count of the others by reason."""
    path = Path(path) if path else silicon_sample_path()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ProfileError(f"{path}: not a silicon-sample file: it lacks the columns {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ProfileError(f"{path}: cannot read it as a CSV file ({error})") from None
    measurements, skipped = [], Counter()
    for row in rows:
        try:
            measurement, reason = _measurement(row)
        except (TypeError, ValueError, KeyError):
            measurement, reason = None, "a field that does not parse"
        if measurement is None:
            skipped[reason] += 1
        else:
            measurements.append(measurement)
    return measurements, skipped


INFERENCEMAX_LENGTHS = {(1024, 1024), (1024, 8192), (8192, 1024)}
DATED_FILE = re.compile(r"source_file=\d{4}-\d{2}-\d{2}\.csv")


def _client(row: dict) -> str:
    """Which client measured a row. The file says it only by shape: the rows of a dated file at
    InferenceMAX's lengths (1K/1K, 1K/8K, 8K/1K) and concurrencies 4-64 are InferenceMAX's runs
    (SemiAnalysis, October 2025); the others come from AIConfigurator's own aiperf collection."""
    dated = DATED_FILE.search(row.get("silicon_data_source", "")) is not None
    return "inferencemax" if dated and (int(row["isl"]), int(row["osl"])) in INFERENCEMAX_LENGTHS else "aiperf"


def _kv_quant(row: dict, quant: str) -> str:
    """NVIDIA's ModelOpt FP8 checkpoints (nvidia/...-FP8, and the ones InferenceMAX serves) carry
    KV-cache scales, and vLLM and TensorRT-LLM then keep the KV cache in FP8; a checkpoint
    quantized at load time (SGLang's fp8 on a 16-bit model) keeps it in 16 bits."""
    nvidia = row["model_path"].startswith("nvidia/") or _client(row) == "inferencemax"
    return "fp8" if quant == "fp8" and nvidia else "bf16"


def _measurement(row: dict) -> tuple[Measurement | None, str]:
    if row["mode"] != "agg":
        return None, "disaggregated (separate prefill and decode pools)"
    if int(row["pp_size"] or 1) > 1:
        return None, "pipeline parallelism"
    hardware = HARDWARE.get(row["system"])
    if hardware is None:
        return None, f"GPU {row['system']} outside the kernel database's systems"
    model = catalog_model(row["model_path"])
    if model is None:
        return None, f"model {row['model_path']} outside capsim's catalog"
    spec = get_model(model)
    tp, dp = int(row["tp_size"]), max(1, int(row["attention_dp_size"] or 1))  # "0" in some rows: one rank
    if dp > 1 and not spec.is_moe:
        return None, "data parallelism of a dense model"
    ep = int(row.get("moe_ep_size") or 1) if spec.is_moe else 1
    if spec.is_moe and tp * dp != int(row.get("moe_tp_size") or 1) * ep:
        return None, "a parallelism that does not add up (TP x DP differs from MoE TP x EP)"
    quant = QUANTS.get(row["gemm_quant_mode"], row["gemm_quant_mode"])
    if quant not in PRICED_QUANTS:
        return None, f"{quant} weights"
    if spec.moe_dtype and quant == "nvfp4":
        quant = "auto"  # gpt-oss: the sample's 4-bit label for its own MXFP4 experts (16-bit attention)
    elif spec.hf_id and quant == {"bfloat16": "bf16"}.get(spec.dtype, spec.dtype):
        quant = "auto"  # the checkpoint's own precision (DeepSeek-R1's and Qwen3-...-FP8's block-scaled FP8)
    ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    if not (ttft > 0 and tpot > 0):
        return None, "no measured TTFT or TPOT"
    return Measurement(
        id=row["id"],
        engine=row["backend"],
        engine_version=row["backend_version"],
        model=model,
        hardware=hardware,
        quant=quant,
        kv_quant=_kv_quant(row, quant) if not spec.hf_id else "auto",
        tp=tp,
        ep=ep,
        dp=dp,
        isl=int(row["isl"]),
        osl=int(row["osl"]),
        concurrency=int(row["batch_size"]),
        ttft_ms=ttft,
        tpot_ms=tpot,
        source="silicon_sample.csv (aiconfigurator-core)",
        client=_client(row),
    ), ""
