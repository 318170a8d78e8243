"""A decoder-only transformer in torch, built from a ModelSpec with random weights.

Latency depends on the shapes of the computation, not on the values of the weights, so random
weights (seeded, nothing downloaded) time the same as the released model. The network does the
per-token math only: attention over the KV cache is a callable the caller passes in, so the
ModelRunner that owns the paged cache decides how sequences attend.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from capsim.profiles.errors import ProfileError
from capsim.profiles.models import ModelSpec

ROPE_THETA = 10000.0  # Llama-2's base; the base changes the rotation angles, never the cost
INIT_STD = 0.02  # small enough that activations stay well inside bfloat16's range

# attention(layer, q [T, heads, head_dim], k and v [T, kv_heads, head_dim]) -> [T, heads * head_dim]
Attention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def torch_dtype(spec: ModelSpec) -> torch.dtype:
    """The torch dtype a model computes in by default."""
    if spec.dtype == "fp8":
        # FP8 weights need scaled-matmul kernels this reference model does not emulate.
        raise ValueError(
            f"model {spec.name!r} has dtype fp8, which torch cannot compute in; pass a dtype such as torch.bfloat16"
        )
    return getattr(torch, spec.dtype)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mean of squares is taken in float32: in bfloat16 it loses too many digits.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        q_size, kv_size = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
        self.attention_norm = RMSNorm(spec.hidden)
        # Q, K and V (and below, gate and up) are fused into one matmul each, as serving engines do:
        # one large GEMM is faster than several small ones, and the parameters are the same.
        self.qkv_proj = nn.Linear(spec.hidden, q_size + 2 * kv_size, bias=False)
        self.o_proj = nn.Linear(q_size, spec.hidden, bias=False)
        self.mlp_norm = RMSNorm(spec.hidden)
        self.swiglu = spec.ffn_kind == "swiglu"
        self.up_proj = nn.Linear(spec.hidden, (2 if self.swiglu else 1) * spec.ffn, bias=False)
        self.down_proj = nn.Linear(spec.ffn, spec.hidden, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int, attention: Attention
    ) -> torch.Tensor:
        tokens = x.shape[0]
        q, k, v = self.qkv_proj(self.attention_norm(x)).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1
        )
        q = _rotate(q.view(tokens, self.heads, self.head_dim), cos, sin)
        k = _rotate(k.view(tokens, self.kv_heads, self.head_dim), cos, sin)
        x = x + self.o_proj(attention(layer, q, k, v.view(tokens, self.kv_heads, self.head_dim)))
        h = self.up_proj(self.mlp_norm(x))
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return x + self.down_proj(h)


class DecoderModel(nn.Module):
    """Token embedding, decoder layers, final RMSNorm and an untied LM head."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.is_moe:
            raise ProfileError(f"the reference engine runs dense models; {spec.name} is a mixture of experts")
        self.embed = nn.Embedding(spec.vocab, spec.hidden)
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.layers))
        self.norm = RMSNorm(spec.hidden)
        self.lm_head = nn.Linear(spec.hidden, spec.vocab, bias=False)
        self.head_dim = spec.head_dim

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor, attention: Attention) -> torch.Tensor:
        """Hidden states [T, hidden] of a flat batch of T tokens from any number of sequences."""
        x = self.embed(token_ids)
        # The rotary angles depend only on the positions: computed once, shared by every layer.
        # They are computed in float32: bfloat16 cannot tell position 1000 from 1001.
        inv_freq = ROPE_THETA ** -(
            torch.arange(0, self.head_dim, 2, device=x.device, dtype=torch.float32) / self.head_dim
        )
        angles = (positions.float()[:, None] * inv_freq)[:, None, :]  # [T, 1, head_dim / 2]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, index, attention)
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits of the given hidden states (callers pass only the positions they sample)."""
        return self.lm_head(self.norm(hidden))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, rotate-half layout (as in Llama)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def build_model(
    spec: ModelSpec, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> DecoderModel:
    """The network of `spec` with random weights, in eval mode without gradients.

    On the "meta" device nothing is allocated (any size can be built, e.g. to count parameters).
    """
    dtype = dtype or torch_dtype(spec)
    # Built on meta first, then given storage once: no time is spent on nn.Linear's default
    # initialization, which would be overwritten anyway.
    with torch.device("meta"):
        model = DecoderModel(spec).to(dtype)
    model.requires_grad_(False).eval()
    if torch.device(device).type == "meta":
        return model
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, INIT_STD, generator=generator)
    return model
