"""The analytic producer: a roofline estimate of every grid batch, for any model x hardware x TP.

An estimate, never a measurement: every profile it makes says source = analytic, and every
output built on one says so. Each matrix multiply takes max(FLOPs / achieved compute, bytes /
achieved bandwidth); attention likewise on its FLOPs and KV bytes; tensor parallelism adds two
ring all-reduces a layer; pipeline parallelism gives each stage its share of the layers plus the
activation transfer to the next stage. The achieved fractions of peak and the fixed costs are
stated once, below; profiles/calibration.py fits them to NVIDIA's kernel database per GPU.

A batch's latency is split in two steps: `roofline_terms` (FLOPs, bytes and counts of one batch;
plain numbers) and `combine` (seconds from those terms and the factors), which works as well on
numpy arrays of terms, so that a calibration evaluates thousands of batches at once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from capsim.profiles.batch import BatchShape
from capsim.profiles.hardware import HardwareSpec
from capsim.profiles.models import ModelSpec


@dataclass(frozen=True)
class RooflineFactors:
    gemm_compute: float = 0.70  # large bf16 GEMMs reach ~70% of dense peak
    attention_compute: float = 0.45  # flash-style attention kernels reach less
    memory: float = 0.80  # of the datasheet bandwidth, for weights and KV reads
    iteration_overhead_s: float = 2e-3  # scheduling, input preparation, kernel launches, sampling
    per_sequence_s: float = 10e-6  # per sequence in the batch: metadata, detokenization hooks
    layer_overhead_s: float = 0.0  # per layer: kernel floors of norms, rotary, small launches
    link: float = 1.0  # of the datasheet link bandwidth that an all-reduce reaches
    link_latency: float = 1.0  # of the catalog's latency a ring step (one-shot all-reduces skip most steps)
    collective_s: float = 0.0  # fixed cost of one all-reduce (launch, synchronization)


FACTORS = RooflineFactors()
TERMS = (
    "gemm_flops",
    "gemm_bytes",
    "attention_flops",
    "attention_bytes",
    "elementwise_bytes",
    "allreduce_bytes",
    "allreduce_steps",
    "allreduces",
    "layers",
    "sequences",
    "head_flops",
    "head_bytes",
    "pp_bytes",
)


def roofline_terms(shape: BatchShape, model: ModelSpec, tp: int = 1, pp: int = 1) -> dict:
    """The work of one batch on one pipeline stage; GEMM terms are per GEMM (4 a layer). Weights,
    activations and the KV cache each in their own precision: an FP8 model reads one byte a
    weight and runs its GEMMs on FP8 tensor cores at twice the bf16 rate (Hopper, Blackwell), but
    its activations, all-reduces and LM head (left unquantized) stay 16-bit."""
    w, b, kv = model.dtype_bytes, model.activation_dtype_bytes, model.kv_dtype_bytes
    fp8_rate = {"fp8": 0.5, "nvfp4": 0.25}.get(model.dtype, 1)  # bf16-equivalent FLOPs of an FP8 / FP4 GEMM
    tokens = sum(shape.prefill_chunks) + len(shape.decode_contexts)
    heads, kv_heads, hd = model.heads / tp, max(1, model.kv_heads / tp), model.head_dim
    ffn = model.expert_ffn  # an expert's, for a mixture of experts (shared experts and dense layers not apart)
    mlp_out = (2 if model.ffn_kind == "swiglu" else 1) * ffn / tp
    gemms = (
        (model.hidden, (heads + 2 * kv_heads) * hd),
        (heads * hd, model.hidden),
        (model.hidden, mlp_out),
        (ffn / tp, model.hidden),
    )
    # Attention: causal chunk of q after c cached tokens does q*c + q(q+1)/2 query-key pairs.
    pairs = sum(q * c + q * (q + 1) / 2 for q, c in zip(shape.prefill_chunks, shape.prefill_contexts))
    pairs += sum(kv + 1 for kv in shape.decode_contexts)
    kv_read = sum(c + q for q, c in zip(shape.prefill_chunks, shape.prefill_contexts)) + sum(shape.decode_contexts)
    sequences = len(shape.prefill_chunks) + len(shape.decode_contexts)
    # A mixture of experts: each token runs through active_experts MLPs; a batch reads the weights
    # of every expert some token chose (all of them once tokens x active >= experts).
    routed = (1, 1, model.active_experts, model.active_experts)
    weights = (
        1,
        1,
        min(model.experts, tokens * model.active_experts),
        min(model.experts, tokens * model.active_experts),
    )
    return {
        "gemm_flops": [2 * tokens * r * n_in * n_out * fp8_rate for r, (n_in, n_out) in zip(routed, gemms)],
        "gemm_bytes": [
            (e * n_in * n_out * (w / b) + r * tokens * (n_in + n_out)) * b
            for r, e, (n_in, n_out) in zip(routed, weights, gemms)
        ],
        "attention_flops": 4 * heads * hd * pairs,
        "attention_bytes": 2 * kv_heads * hd * kv * kv_read + 2 * tokens * (heads + kv_heads) * hd * b,
        "elementwise_bytes": 6 * tokens * model.hidden * b,  # norms, residual adds, activations
        "allreduce_bytes": 2 * (tp - 1) / tp * tokens * model.hidden * b
        if tp > 1
        else 0.0,  # ring: reduce-scatter + all-gather
        "allreduce_steps": 2 * (tp - 1),
        "allreduces": 2 if tp > 1 else 0,  # a layer
        "layers": math.ceil(model.layers / pp),
        "sequences": sequences,
        "head_flops": 2 * sequences * model.hidden * model.vocab / tp / pp,  # LM head rows, amortized over stages
        "head_bytes": (model.hidden * model.vocab / tp + sequences * (model.hidden + model.vocab / tp))
        * b
        / pp,  # LM head: 16-bit
        "pp_bytes": tokens * model.hidden * b if pp > 1 else 0.0,
    }


def combine(terms: dict, hardware: HardwareSpec, factors: RooflineFactors = FACTORS):
    """Seconds from roofline terms (numbers, or numpy arrays of many batches' terms)."""
    flops_rate = hardware.bf16_flops * factors.gemm_compute
    bytes_rate = hardware.memory_bandwidth * factors.memory
    layer = sum(np.maximum(f / flops_rate, m / bytes_rate) for f, m in zip(terms["gemm_flops"], terms["gemm_bytes"]))
    layer = layer + np.maximum(
        terms["attention_flops"] / (hardware.bf16_flops * factors.attention_compute),
        terms["attention_bytes"] / bytes_rate,
    )
    layer = layer + terms["elementwise_bytes"] / bytes_rate + factors.layer_overhead_s
    layer = layer + terms["allreduces"] * (
        terms["allreduce_bytes"] / (hardware.tp_link_bandwidth * factors.link)
        + terms["allreduce_steps"] * hardware.tp_link_latency * factors.link_latency
        + factors.collective_s
    )
    seconds = terms["layers"] * layer + factors.iteration_overhead_s + factors.per_sequence_s * terms["sequences"]
    seconds = seconds + np.maximum(terms["head_flops"] / flops_rate, terms["head_bytes"] / bytes_rate)
    return seconds + terms["pp_bytes"] / hardware.pp_link_bandwidth


def analytic_latency(
    shape: BatchShape,
    model: ModelSpec,
    hardware: HardwareSpec,
    tp: int = 1,
    pp: int = 1,
    factors: RooflineFactors = FACTORS,
) -> float:
    """Seconds for one pipeline stage (the whole model when pp = 1) to run the batch."""
    return float(combine(roofline_terms(shape, model, tp, pp), hardware, factors))


def factors_metadata(factors: RooflineFactors = FACTORS) -> dict:
    return asdict(factors)


def analytic_profile(
    model: ModelSpec,
    hardware: HardwareSpec,
    tp: int = 1,
    pp: int = 1,
    grid: str = "default",
    factors: RooflineFactors = FACTORS,
    calibration: str | None = None,
):
    """A ProfileTable of roofline estimates over the grid batches that fit the hardware's KV memory;
    `calibration` says what the factors were fitted to, if anything."""
    from capsim.profiles.grid import GRIDS
    from capsim.profiles.memory import kv_capacity
    from capsim.profiles.table import ProfileTable
    from capsim.profiles.versions import profile_metadata

    budget = kv_capacity(model, hardware, tp, pp).tokens
    shapes = GRIDS[grid].shapes(model.max_context, budget, max_batch_tokens=16384)
    latencies = [analytic_latency(s, model, hardware, tp, pp, factors) for s in shapes]
    metadata = profile_metadata(model, hardware.name, tp, pp, engine="roofline", source="analytic")
    metadata["roofline_factors"] = factors_metadata(factors)
    if calibration:
        metadata["calibration"] = calibration
    return ProfileTable.from_batches(shapes, latencies, metadata)
