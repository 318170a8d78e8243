"""KV-cache memory: how many KV blocks fit on each GPU after the weights and an activation reserve.

Per GPU of a replica with TP x PP GPUs: the weights are split over all TP * PP GPUs; each GPU
holds the K/V of its own layers (layers / PP) for its own KV heads (kv_heads / TP, at least one
head when kv_heads < TP, which then replicate; MLA's one latent replicates on every TP rank).
With attention data parallelism (DP ranks of TP GPUs each), every rank holds the attention,
dense and embedding weights of its TP group, while the routed experts spread over all
TP x DP GPUs (split by expert under EP, by matrix under MoE TP: the same bytes a GPU); each
rank keeps the KV cache of its own requests, so the blocks here are one rank's.
The usable memory is memory_utilization of the device (vLLM's gpu_memory_utilization), minus the
weights, minus a reserve for activations of one batch of max_batch_tokens tokens and the CUDA context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import GIB, HardwareSpec
from capsim.profiles.models import ModelSpec

CUDA_CONTEXT_BYTES = 1 * GIB  # runtime, cuBLAS workspaces, NCCL buffers, allocator slack


@dataclass(frozen=True)
class KVCapacity:
    num_blocks: int
    block_size: int
    weight_bytes_per_gpu: float
    activation_bytes_per_gpu: float
    kv_bytes_per_block_per_gpu: float

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int, pp: int) -> float:
    layers = math.ceil(model.kv_layers / pp)
    if model.is_mla:
        return layers * model.kv_bytes_per_token_per_layer
    heads = math.ceil(model.kv_heads / tp)
    return 2 * layers * heads * model.head_dim * model.kv_dtype_bytes


def weight_bytes_per_gpu(model: ModelSpec, tp: int, pp: int, dp: int = 1) -> float:
    if dp == 1:
        return model.weight_bytes / (tp * pp)
    experts = model.expert_weight_bytes
    return (model.weight_bytes - experts) / (tp * pp) + experts / (tp * dp * pp)


def activation_bytes(model: ModelSpec, tp: int, max_batch_tokens: int) -> float:
    """Peak activations of one forward pass: the widest intermediate (MLP, or logits of the
    sampled rows) a few times over, per GPU."""
    mlp = max_batch_tokens * (2 * model.ffn // tp + 4 * model.hidden) * model.activation_dtype_bytes
    logits = min(max_batch_tokens, 1024) * model.vocab * 4
    return 2 * mlp + logits


def kv_capacity(
    model: ModelSpec,
    hardware: HardwareSpec,
    tp: int = 1,
    pp: int = 1,
    block_size: int = 16,
    memory_utilization: float = 0.9,
    max_batch_tokens: int = 8192,
    dp: int = 1,
) -> KVCapacity:
    """KV blocks per replica, or per attention-DP rank (every GPU of it holds the same number of blocks)."""
    if tp < 1 or pp < 1:
        raise ProfileError(f"TP and PP must be at least 1, got TP={tp} PP={pp}")
    if pp > model.layers:
        raise ProfileError(f"{model.name} has {model.layers} layers; PP={pp} stages is more than that")
    if not 0 < memory_utilization <= 1:
        raise ProfileError(f"memory utilization must be in (0, 1], got {memory_utilization}")
    layout = _layout(model, hardware, tp, pp, block_size, memory_utilization, max_batch_tokens, dp)
    if layout.num_blocks < _blocks_for_one_sequence(model, block_size):
        usable = hardware.memory_bytes * memory_utilization
        needed = _blocks_for_one_sequence(model, block_size) * layout.kv_bytes_per_block_per_gpu
        missing = layout.weight_bytes_per_gpu + layout.activation_bytes_per_gpu + needed - usable
        fits = [
            t
            for t in (1, 2, 4, 8, 16)
            if t > tp and _fits(model, hardware, t, pp, block_size, memory_utilization, max_batch_tokens, dp)
        ]
        layout_words = f"TP={tp} PP={pp}" + (f" DP={dp}" if dp > 1 else "")
        raise ProfileError(
            f"{model.name} does not fit on {hardware.name} with {layout_words}: "
            f"{layout.weight_bytes_per_gpu / GIB:.1f} GiB of weights and {layout.activation_bytes_per_gpu / GIB:.1f} "
            f"GiB "
            f"of activations per GPU leave room for {layout.num_blocks} KV blocks; about {missing / GIB:.1f} GiB more "
            "per GPU is needed for one full-length sequence. "
            + (f"Try TP={fits[0]}" if fits else "Try pipeline parallelism (PP) as well")
            + _wide_ep_hint(model, hardware, pp, block_size, memory_utilization, max_batch_tokens, dp)
            + "."
        )
    return layout


def _wide_ep_hint(model, hardware, pp, block_size, memory_utilization, max_batch_tokens, dp) -> str:
    """A mixture of experts also fits as attention-DP ranks of one GPU with the experts spread over them."""
    if not model.is_moe or dp > 1:
        return ""
    for ranks in (2, 4, 8, 16, 32, 64):
        if model.experts % ranks == 0 and _fits(
            model, hardware, 1, pp, block_size, memory_utilization, max_batch_tokens, ranks
        ):
            return f", or TP=1 x DP={ranks} with the experts spread (--dp-attention {ranks} --ep {ranks})"
    return ""


def _blocks_for_one_sequence(model: ModelSpec, block_size: int) -> int:
    """A replica must hold at least one long sequence to serve anything."""
    return math.ceil(min(model.max_context, 4096) / block_size)


def _layout(model, hardware, tp, pp, block_size, memory_utilization, max_batch_tokens, dp=1) -> KVCapacity:
    weights = weight_bytes_per_gpu(model, tp, pp, dp)
    activations = activation_bytes(model, tp, max_batch_tokens) + CUDA_CONTEXT_BYTES
    free = hardware.memory_bytes * memory_utilization - weights - activations
    per_block = kv_bytes_per_token_per_gpu(model, tp, pp) * block_size
    return KVCapacity(max(0, int(free // per_block)), block_size, weights, activations, per_block)


def _fits(model, hardware, tp, pp, block_size, memory_utilization, max_batch_tokens, dp=1) -> bool:
    layout = _layout(model, hardware, tp, pp, block_size, memory_utilization, max_batch_tokens, dp)
    return layout.num_blocks >= _blocks_for_one_sequence(model, block_size)
