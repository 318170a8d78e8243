"""The analytic producer: a roofline estimate of every grid batch, for any model x hardware x TP.

An estimate, never a measurement: every profile it makes says source = analytic, and every
output built on one says so. Each matrix multiply takes max(FLOPs / achieved compute, bytes /
achieved bandwidth); attention likewise on its FLOPs and KV bytes; tensor parallelism adds two
ring all-reduces a layer; pipeline parallelism gives each stage its share of the layers plus the
activation transfer to the next stage. The achieved fractions of peak are stated once, below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


FACTORS = RooflineFactors()


def analytic_latency(
    shape: BatchShape, model: ModelSpec, hardware: HardwareSpec, tp: int = 1, pp: int = 1, factors: RooflineFactors = FACTORS
) -> float:
    """Seconds for one pipeline stage (the whole model when pp = 1) to run the batch."""
    b = model.dtype_bytes
    tokens = sum(shape.prefill_chunks) + len(shape.decode_contexts)
    flops_rate = hardware.bf16_flops * factors.gemm_compute
    bytes_rate = hardware.memory_bandwidth * factors.memory

    def gemm(rows: int, n_in: int, n_out: int) -> float:
        flops = 2 * rows * n_in * n_out
        moved = (n_in * n_out + rows * (n_in + n_out)) * b
        return max(flops / flops_rate, moved / bytes_rate)

    heads, kv_heads, hd = model.heads / tp, max(1, model.kv_heads / tp), model.head_dim
    mlp_out = (2 if model.ffn_kind == "swiglu" else 1) * model.ffn / tp
    layer = (
        gemm(tokens, model.hidden, (heads + 2 * kv_heads) * hd)
        + gemm(tokens, heads * hd, model.hidden)
        + gemm(tokens, model.hidden, mlp_out)
        + gemm(tokens, model.ffn / tp, model.hidden)
    )
    # Attention: causal chunk of q after c cached tokens does q*c + q(q+1)/2 query-key pairs.
    pairs = sum(q * c + q * (q + 1) / 2 for q, c in zip(shape.prefill_chunks, shape.prefill_contexts))
    pairs += sum(kv + 1 for kv in shape.decode_contexts)
    kv_read = sum(c + q for q, c in zip(shape.prefill_chunks, shape.prefill_contexts)) + sum(shape.decode_contexts)
    attention_flops = 4 * heads * hd * pairs
    attention_bytes = 2 * kv_heads * hd * b * kv_read + 2 * tokens * (heads + kv_heads) * hd * b
    layer += max(attention_flops / (hardware.bf16_flops * factors.attention_compute), attention_bytes / bytes_rate)
    layer += 6 * tokens * model.hidden * b / bytes_rate  # norms, residual adds, activations
    if tp > 1:
        steps = 2 * (tp - 1)  # ring all-reduce: reduce-scatter then all-gather
        message = tokens * model.hidden * b
        layer += 2 * (steps / tp * message / hardware.tp_link_bandwidth + steps * hardware.tp_link_latency)

    layers = math.ceil(model.layers / pp)
    seconds = layers * layer + factors.iteration_overhead_s
    sequences = len(shape.prefill_chunks) + len(shape.decode_contexts)
    seconds += factors.per_sequence_s * sequences
    seconds += gemm(sequences, model.hidden, model.vocab / tp) / pp  # LM head rows, amortized over stages
    if pp > 1:
        seconds += tokens * model.hidden * b / hardware.pp_link_bandwidth
    return seconds


def factors_metadata(factors: RooflineFactors = FACTORS) -> dict:
    return asdict(factors)


def analytic_profile(model: ModelSpec, hardware: HardwareSpec, tp: int = 1, pp: int = 1, grid: str = "default"):
    """A ProfileTable of roofline estimates over the grid batches that fit the hardware's KV memory."""
    from capsim.profiles.grid import GRIDS
    from capsim.profiles.memory import kv_capacity
    from capsim.profiles.table import ProfileTable
    from capsim.profiles.versions import profile_metadata

    budget = kv_capacity(model, hardware, tp, pp).tokens
    shapes = GRIDS[grid].shapes(model.max_context, budget, max_batch_tokens=16384)
    latencies = [analytic_latency(s, model, hardware, tp, pp) for s in shapes]
    metadata = profile_metadata(model, hardware.name, tp, pp, engine="roofline", source="analytic")
    metadata["roofline_factors"] = factors_metadata()
    return ProfileTable.from_batches(shapes, latencies, metadata)
