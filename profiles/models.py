"""The model catalog: decoder architectures by the names users know.

A user adds a model with a YAML file (the fields of ModelSpec) or a Hugging Face config.json path;
nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from capsim.profiles.errors import ProfileError

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int  # intermediate size of the MLP
    ffn_kind: str  # "swiglu" (gate, up, down) or "gelu" (up, down)
    vocab: int
    max_context: int
    dtype: str = "bfloat16"
    head_dim: int = 0  # 0: hidden // heads
    experts: int = 1  # mixture of experts: MLPs a layer (each of size ffn) ...
    active_experts: int = 1  # ... and how many of them each token runs through
    kv_dtype: str = ""  # the KV cache's; "" = the weights' when 16-bit, else bfloat16 (vLLM's kv_cache_dtype auto)

    def __post_init__(self):
        for f in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "max_context"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) <= 0:
                raise ProfileError(f"model {self.name!r}: {f} must be a positive integer, got {getattr(self, f)!r}")
        if self.ffn_kind not in ("swiglu", "gelu"):
            raise ProfileError(f"model {self.name!r}: ffn_kind must be swiglu or gelu, got {self.ffn_kind!r}")
        if self.dtype not in DTYPE_BYTES:
            raise ProfileError(
                f"model {self.name!r}: dtype must be one of {', '.join(DTYPE_BYTES)}, got {self.dtype!r}"
            )
        if self.heads % self.kv_heads:
            raise ProfileError(
                f"model {self.name!r}: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        if self.kv_dtype and self.kv_dtype not in DTYPE_BYTES:
            raise ProfileError(
                f"model {self.name!r}: kv_dtype must be one of {', '.join(DTYPE_BYTES)}, got {self.kv_dtype!r}"
            )
        if not 1 <= self.active_experts <= self.experts:
            raise ProfileError(
                f"model {self.name!r}: active_experts must be in 1..experts ({self.experts}), got {self.active_experts}"
            )

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def activation_dtype_bytes(self) -> int:
        """Bytes of an activation: an FP8 model computes in bfloat16 between its FP8 GEMMs."""
        return 2 if self.dtype == "fp8" else self.dtype_bytes

    @property
    def kv_dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.kv_dtype] if self.kv_dtype else self.activation_dtype_bytes

    def quantized(self, weights: str, kv_cache: str) -> ModelSpec:
        """This model with FP8 (or 16-bit) weights and KV cache: "auto" keeps what it has. The name
        says so (Llama-3.1-70B-FP8, ...-KV-FP8), so profiles of the 16-bit model are never taken for it."""
        dtype = self.dtype if weights == "auto" else ("bfloat16" if weights == "bf16" else weights)
        kv = self.kv_dtype if kv_cache == "auto" else ("bfloat16" if kv_cache == "bf16" else kv_cache)
        if (dtype, kv) == (self.dtype, self.kv_dtype):
            return self
        name = (
            self.name + ("-FP8" if dtype == "fp8" and self.dtype != "fp8" else "") + ("-KV-FP8" if kv == "fp8" else "")
        )
        from dataclasses import replace

        return replace(self, name=name, dtype=dtype, kv_dtype=kv)

    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden * self.heads * self.head_dim
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def mlp_params_per_layer(self) -> int:
        """MLP weights of a layer: every expert's."""
        return (3 if self.ffn_kind == "swiglu" else 2) * self.hidden * self.ffn * self.experts

    @property
    def params(self) -> int:
        """Parameters: layers' linear weights, embedding and (untied) LM head; norms are negligible."""
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        return self.layers * per_layer + 2 * self.vocab * self.hidden

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_dtype_bytes

    def to_dict(self) -> dict:
        return asdict(self)


def _m(name, layers, hidden, heads, kv_heads, ffn, vocab, max_context, ffn_kind="swiglu", **kw) -> ModelSpec:
    return ModelSpec(name, layers, hidden, heads, kv_heads, ffn, ffn_kind, vocab, max_context, **kw)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _m("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, 4096),
        _m("Llama-2-13B", 40, 5120, 40, 40, 13824, 32000, 4096),
        _m("Llama-2-70B", 80, 8192, 64, 8, 28672, 32000, 4096),
        _m("Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8192),
        _m("Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, 8192),
        _m("Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128256, 131072),
        _m("Llama-3.1-70B", 80, 8192, 64, 8, 28672, 128256, 131072),
        _m("Mistral-7B", 32, 4096, 32, 8, 14336, 32000, 32768),
        _m("Yi-34B", 60, 7168, 56, 8, 20480, 64000, 200000),  # the 200K-context release; 4K base is the same network
        _m("CodeLlama-34B", 48, 8192, 64, 8, 22016, 32000, 16384),
        _m("Qwen2.5-7B", 28, 3584, 28, 4, 18944, 152064, 32768),
        _m("Qwen2.5-72B", 80, 8192, 64, 8, 29568, 152064, 32768),
        _m("Qwen3-0.6B", 28, 1024, 16, 8, 3072, 151936, 40960, head_dim=128),
        _m("Qwen3-1.7B", 28, 2048, 16, 8, 6144, 151936, 40960, head_dim=128),
        _m("Qwen3-8B", 36, 4096, 32, 8, 12288, 151936, 40960, head_dim=128),
        _m("Qwen3-32B", 64, 5120, 64, 8, 25600, 151936, 40960, head_dim=128),
        _m("Llama-3.1-405B", 126, 16384, 128, 8, 53248, 128256, 131072),
        _m("Falcon-180B", 80, 14848, 232, 8, 59392, 65024, 2048, ffn_kind="gelu"),
        _m("Mixtral-8x7B", 32, 4096, 32, 8, 14336, 32000, 32768, experts=8, active_experts=2),
        # A few layers and a small hidden size: real forward passes on a CPU in milliseconds.
        _m("tiny", 4, 256, 8, 4, 768, 1024, 4096),
    )
}

# Hugging Face identifiers (as in the Sarathi-Serve configs) and other spellings users type.
ALIASES = {
    "meta-llama/Llama-2-7b-hf": "Llama-2-7B",
    "meta-llama/Llama-2-13b-hf": "Llama-2-13B",
    "meta-llama/Llama-2-70b-hf": "Llama-2-70B",
    "meta-llama/Meta-Llama-3-8B": "Llama-3-8B",
    "meta-llama/Meta-Llama-3-8B-Instruct": "Llama-3-8B",
    "meta-llama/Meta-Llama-3-70B": "Llama-3-70B",
    "meta-llama/Meta-Llama-3-70B-Instruct": "Llama-3-70B",
    "NousResearch/Meta-Llama-3-8B": "Llama-3-8B",  # ungated copies, as in Etalon's configs
    "NousResearch/Meta-Llama-3-8B-Instruct": "Llama-3-8B",
    "NousResearch/Meta-Llama-3-70B": "Llama-3-70B",
    "NousResearch/Meta-Llama-3-70B-Instruct": "Llama-3-70B",
    "meta-llama/Llama-3.1-8B": "Llama-3.1-8B",
    "meta-llama/Llama-3.1-8B-Instruct": "Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B": "Llama-3.1-70B",
    "meta-llama/Llama-3.1-70B-Instruct": "Llama-3.1-70B",
    "mistralai/Mistral-7B-v0.1": "Mistral-7B",
    "mistralai/Mistral-7B-Instruct-v0.2": "Mistral-7B",
    "mistralai/Mixtral-8x7B-v0.1": "Mixtral-8x7B",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "Mixtral-8x7B",
    "01-ai/Yi-34B": "Yi-34B",
    "01-ai/Yi-34B-200K": "Yi-34B",
    "codellama/CodeLlama-34b-hf": "CodeLlama-34B",
    "Qwen/Qwen2.5-7B": "Qwen2.5-7B",
    "Qwen/Qwen2.5-7B-Instruct": "Qwen2.5-7B",
    "Qwen/Qwen2.5-72B": "Qwen2.5-72B",
    "Qwen/Qwen2.5-72B-Instruct": "Qwen2.5-72B",
    "tiiuae/falcon-180B": "Falcon-180B",
    "Qwen/Qwen3-0.6B": "Qwen3-0.6B",
    "Qwen/Qwen3-1.7B": "Qwen3-1.7B",
    "Qwen/Qwen3-8B": "Qwen3-8B",
    "Qwen/Qwen3-32B": "Qwen3-32B",
    "meta-llama/Llama-3.1-405B": "Llama-3.1-405B",
    "meta-llama/Llama-3.1-405B-Instruct": "Llama-3.1-405B",
    "meta-llama/Meta-Llama-3.1-8B": "Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-70B": "Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-405B": "Llama-3.1-405B",
    "meta-llama/Llama-3.3-70B-Instruct": "Llama-3.1-70B",  # the same network as 3.1-70B
}


def get_model(name: str) -> ModelSpec:
    """A catalog model by name or Hugging Face id (any case), or a YAML / config.json path."""
    if name in MODELS:
        return MODELS[name]
    by_lower = {k.lower(): v for k, v in {**{m: m for m in MODELS}, **ALIASES}.items()}
    if name.lower() in by_lower:
        return MODELS[by_lower[name.lower()]]
    path = Path(name)
    try:
        is_file = "\0" not in name and path.is_file()
    except OSError:  # a name no file system takes (too long, say): not a path, so an unknown model
        is_file = False
    if is_file:
        return load_model_file(path)
    raise ProfileError(
        f"unknown model {name!r}; known models: {', '.join(MODELS)} "
        "(or give the path of a YAML file with the ModelSpec fields, or of a Hugging Face config.json)"
    )


def load_model_file(path: Path) -> ModelSpec:
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ProfileError(f"{path}: cannot read the model file: {error}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a model file must hold a mapping of fields")
    if "hidden_size" in data or "model_type" in data:
        return _from_hf_config(data, path)
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{path}: unknown field(s) {', '.join(unknown)}; a model has {', '.join(sorted(known))}")
    data.setdefault("name", path.stem)
    try:
        return ModelSpec(**data)
    except TypeError as error:
        raise ProfileError(f"{path}: {error}") from None


def _from_hf_config(config: dict, path: Path) -> ModelSpec:
    """The fields of a Hugging Face config.json for Llama-, Mistral-, Qwen- and Falcon-style models."""

    def field(*names, default=None):
        for n in names:
            if n in config:
                return config[n]
        if default is not None:
            return default
        raise ProfileError(f"{path}: config.json lacks {' / '.join(names)}")

    hidden = field("hidden_size", "n_embd", "d_model")
    heads = field("num_attention_heads", "n_head", "num_heads")
    falcon = config.get("model_type") == "falcon"
    kv_heads = field("num_key_value_heads", "num_kv_heads", default=heads)
    if falcon and config.get("new_decoder_architecture") is False and config.get("multi_query", True):
        kv_heads = 1
    dtype = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}.get(
        str(config.get("torch_dtype", "bfloat16")), "bfloat16"
    )
    return ModelSpec(
        name=str(config.get("_name_or_path") or path.parent.name or path.stem),
        layers=field("num_hidden_layers", "n_layer", "num_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        ffn=field("intermediate_size", "ffn_hidden_size", default=4 * hidden),
        ffn_kind="gelu" if falcon or config.get("hidden_act", "silu") in ("gelu", "gelu_new") else "swiglu",
        vocab=field("vocab_size"),
        max_context=field("max_position_embeddings", "max_seq_len", default=2048),
        dtype=dtype,
        head_dim=int(config.get("head_dim") or 0),
    )
