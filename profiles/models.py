"""The model catalog: decoder architectures by the names users know.

A user adds a model with a YAML file (the fields of ModelSpec) or a Hugging Face config.json path;
nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from capsim.profiles.errors import ProfileError

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1, "nvfp4": 0.5625, "mxfp4": 0.53125}
# 4-bit formats carry a scale per block: NVFP4 one FP8 scale a 16 values, MXFP4 one 8-bit scale a 32.
KV_DTYPES = ("bfloat16", "float16", "float32", "fp8")
# The MoE, MLA and sliding-window counts (0: the model has none), left out of to_dict at 0.
ARCHITECTURE_COUNTS = (
    "moe_ffn",
    "shared_experts",
    "dense_layers",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "q_lora_rank",
    "v_head_dim",
    "sliding_window",
    "sliding_layers",
    "mtp_layers",
)
WEIGHT_DTYPES = ("bfloat16", "float16", "float32", "fp8", "nvfp4")  # a whole model's GEMMs


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
    experts: int = 1  # mixture of experts: routed MLPs a MoE layer (each of size moe_ffn) ...
    active_experts: int = 1  # ... and how many of them each token runs through
    kv_dtype: str = ""  # the KV cache's; "" = the weights' when 16-bit, else bfloat16 (vLLM's kv_cache_dtype auto)
    moe_ffn: int = 0  # an expert's intermediate size; 0: ffn
    shared_experts: int = 0  # experts every token runs through besides the routed ones (DeepSeek, Kimi, ...)
    dense_layers: int = 0  # leading layers with a dense MLP of size ffn (DeepSeek's first_k_dense_replace)
    moe_dtype: str = ""  # the routed experts' weights where they differ from dtype (gpt-oss: mxfp4)
    kv_lora_rank: int = 0  # multi-head latent attention (MLA): the latent cached a token and layer ...
    qk_rope_head_dim: int = 0  # ... plus its RoPE part; head_dim is then the query/key head (nope + rope)
    q_lora_rank: int = 0  # MLA's query compression (0: none)
    v_head_dim: int = 0  # MLA's value head; 0: head_dim
    sliding_window: int = 0  # tokens a sliding-window layer attends to (and keeps in its KV cache) ...
    sliding_layers: int = 0  # ... and how many layers use it (gpt-oss: half)
    mtp_layers: int = 0  # multi-token-prediction layers the checkpoint ships (DeepSeek-V3/R1: 1): what MTP drafts with
    hf_id: str = ""  # the Hugging Face config the kernel database compiles (an id it ships, or a config folder)

    def __post_init__(self):
        for f in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "max_context"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) <= 0:
                raise ProfileError(f"model {self.name!r}: {f} must be a positive integer, got {getattr(self, f)!r}")
        if self.ffn_kind not in ("swiglu", "gelu"):
            raise ProfileError(f"model {self.name!r}: ffn_kind must be swiglu or gelu, got {self.ffn_kind!r}")
        if self.dtype not in WEIGHT_DTYPES:
            raise ProfileError(
                f"model {self.name!r}: dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.dtype!r}"
            )
        if self.moe_dtype and self.moe_dtype not in DTYPE_BYTES:
            raise ProfileError(
                f"model {self.name!r}: moe_dtype must be one of {', '.join(DTYPE_BYTES)}, got {self.moe_dtype!r}"
            )
        for f in ARCHITECTURE_COUNTS:
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                raise ProfileError(f"model {self.name!r}: {f} must be a whole number >= 0, got {getattr(self, f)!r}")
        if self.dense_layers > self.layers or self.sliding_layers > self.layers:
            raise ProfileError(f"model {self.name!r}: dense_layers and sliding_layers cannot exceed layers")
        if self.heads % self.kv_heads:
            raise ProfileError(
                f"model {self.name!r}: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        if self.kv_dtype and self.kv_dtype not in KV_DTYPES:
            raise ProfileError(
                f"model {self.name!r}: kv_dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}"
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
        """Bytes of an activation: an FP8 or FP4 model computes in bfloat16 between its quantized GEMMs."""
        return 2 if self.dtype in ("fp8", "nvfp4") else self.dtype_bytes

    @property
    def kv_dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.kv_dtype] if self.kv_dtype else self.activation_dtype_bytes

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def expert_ffn(self) -> int:
        return self.moe_ffn or self.ffn

    def quantized(self, weights: str, kv_cache: str) -> ModelSpec:
        """This model with FP8/NVFP4 (or 16-bit) weights and KV cache: "auto" keeps what it has. The name
        says so (Llama-3.1-70B-FP8, ...-KV-FP8), so profiles of the 16-bit model are never taken for it."""
        dtype = self.dtype if weights == "auto" else ("bfloat16" if weights == "bf16" else weights)
        kv = self.kv_dtype if kv_cache == "auto" else ("bfloat16" if kv_cache == "bf16" else kv_cache)
        if (dtype, kv) == (self.dtype, self.kv_dtype):
            return self
        suffix = {"fp8": "-FP8", "nvfp4": "-NVFP4"}.get(dtype, "") if dtype != self.dtype else ""
        name = self.name + suffix + ("-KV-FP8" if kv == "fp8" else "")
        from dataclasses import replace

        # Quantizing the whole model quantizes its experts too.
        moe_dtype = self.moe_dtype if weights == "auto" else ""
        return replace(self, name=name, dtype=dtype, kv_dtype=kv, moe_dtype=moe_dtype)

    @property
    def attention_params_per_layer(self) -> int:
        if self.is_mla:  # DeepSeek's latent attention: compressed K/V (and Q), expanded per head
            rope, nope, v = (
                self.qk_rope_head_dim,
                self.head_dim - self.qk_rope_head_dim,
                self.v_head_dim or self.head_dim,
            )
            q = (
                self.hidden * self.q_lora_rank + self.q_lora_rank * self.heads * self.head_dim
                if self.q_lora_rank
                else self.hidden * self.heads * self.head_dim
            )
            kv = self.hidden * (self.kv_lora_rank + rope) + self.kv_lora_rank * self.heads * (nope + v)
            return q + kv + self.heads * v * self.hidden
        q_and_o = 2 * self.hidden * self.heads * self.head_dim
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def _mlp_matrices(self) -> int:
        return 3 if self.ffn_kind == "swiglu" else 2

    @property
    def expert_params(self) -> int:
        """The routed experts' weights, all layers (0 for a dense model): what expert parallelism splits."""
        if not self.is_moe:
            return 0
        return (self.layers - self.dense_layers) * self._mlp_matrices * self.hidden * self.expert_ffn * self.experts

    @property
    def mlp_params_per_layer(self) -> int:
        """MLP weights of a MoE layer (every expert's, shared ones included), or of a dense layer."""
        experts = self.experts + self.shared_experts if self.is_moe else 1
        return self._mlp_matrices * self.hidden * self.expert_ffn * experts

    @property
    def params(self) -> int:
        """Parameters: layers' linear weights, embedding and (untied) LM head; norms and routers are negligible."""
        dense_mlp = self._mlp_matrices * self.hidden * self.ffn
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer
        return (
            self.layers * per_layer
            + self.dense_layers * (dense_mlp - self.mlp_params_per_layer)
            + 2 * self.vocab * self.hidden
        )

    @property
    def active_params(self) -> int:
        """Parameters a token runs through (a MoE model's routed experts: active_experts of them)."""
        if not self.is_moe:
            return self.params
        per_expert = self.expert_params // self.experts
        return self.params - self.expert_params + per_expert * self.active_experts

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights, each part in its own precision."""
        if not self.moe_dtype:
            return self.params * self.dtype_bytes
        return (self.params - self.expert_params) * self.dtype_bytes + self.expert_params * DTYPE_BYTES[self.moe_dtype]

    @property
    def expert_weight_bytes(self) -> float:
        return self.expert_params * DTYPE_BYTES[self.moe_dtype or self.dtype]

    @property
    def kv_layers(self) -> int:
        """Layers whose KV cache grows with the sequence: a sliding-window layer keeps at most its window
        (vLLM's hybrid KV cache frees the rest), a bounded cost a sequence, left out of the per-token size."""
        return self.layers - (self.sliding_layers if self.sliding_window else 0)

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """What one layer caches for a token: K and V of each KV head, or MLA's one latent (+ RoPE key)."""
        if self.is_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.kv_dtype_bytes
        return 2 * self.kv_heads * self.head_dim * self.kv_dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token across all layers."""
        return self.kv_layers * self.kv_bytes_per_token_per_layer

    def to_dict(self) -> dict:
        """The fields, leaving out MoE/MLA/window fields at their defaults (a dense model's keys stay as they were)."""
        data = asdict(self)
        return {k: v for k, v in data.items() if k in _CORE_FIELDS or v != _DEFAULTS[k]}


_DEFAULTS = {f.name: f.default for f in fields(ModelSpec)}
_CORE_FIELDS = {f.name for f in fields(ModelSpec)} - {*ARCHITECTURE_COUNTS, "moe_dtype", "hf_id"}


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
        _m(
            "Mixtral-8x7B",
            32,
            4096,
            32,
            8,
            14336,
            32000,
            32768,
            experts=8,
            active_experts=2,
            hf_id="mistralai/Mixtral-8x7B-v0.1",
        ),
        # A few layers and a small hidden size: real forward passes on a CPU in milliseconds.
        _m("tiny", 4, 256, 8, 4, 768, 1024, 4096),
        _m("tiny-moe", 4, 256, 8, 4, 768, 1024, 4096, experts=8, active_experts=2, moe_ffn=256),  # Mixtral-shaped
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
    import yaml  # here: only a model file needs it

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
    quant_file = path.parent / "hf_quant_config.json"
    quant = None
    if quant_file.is_file():
        try:
            quant = json.loads(quant_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ProfileError(f"{quant_file}: cannot read it: {error}") from None
    name = str(config.get("_name_or_path") or path.parent.name or path.stem)
    return spec_from_hf_config(config, name, hf_quant_config=quant, hf_id=str(path.resolve()))


def spec_from_hf_config(config: dict, name: str, hf_quant_config: dict | None = None, hf_id: str = "") -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json: Llama-, Mistral-, Qwen- and Falcon-style dense
    decoders, and mixtures of experts (Mixtral, Qwen3-MoE, DeepSeek with MLA, gpt-oss, ...). A
    multimodal config gives its text model. Precision from its quantization_config or the
    ModelOpt hf_quant_config.json beside it (FP8, NVFP4, gpt-oss's MXFP4 experts)."""
    text = config.get("text_config") or config.get("llm_config")
    if isinstance(text, dict) and "hidden_size" in text:
        config = {**text, "quantization_config": config.get("quantization_config", text.get("quantization_config"))}

    def field(*names, default=None):
        for n in names:
            if config.get(n) is not None:
                return config[n]
        if default is not None:
            return default
        raise ProfileError(f"{name}: config.json lacks {' / '.join(names)}")

    hidden = field("hidden_size", "n_embd", "d_model")
    heads = field("num_attention_heads", "n_head", "num_heads")
    falcon = config.get("model_type") == "falcon"
    kv_heads = field("num_key_value_heads", "num_kv_heads", default=heads)
    if falcon and config.get("new_decoder_architecture") is False and config.get("multi_query", True):
        kv_heads = 1
    layers = field("num_hidden_layers", "n_layer", "num_layers")
    kv_lora = int(config.get("kv_lora_rank") or 0)
    rope = int(config.get("qk_rope_head_dim") or 0) if kv_lora else 0
    head_dim = int(config.get("head_dim") or 0)
    if kv_lora:
        head_dim = int(config.get("qk_nope_head_dim") or 0) + rope or head_dim
    experts = int(field("num_local_experts", "num_experts", "n_routed_experts", default=1) or 1)
    layer_types = config.get("layer_types") or []
    sliding = sum(1 for t in layer_types if t == "sliding_attention") if isinstance(layer_types, list) else 0
    window = int(config.get("sliding_window") or 0) if 0 < sliding < layers else 0
    dtype, moe_dtype, kv_dtype = _precision(config, hf_quant_config)
    return ModelSpec(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        ffn=field("intermediate_size", "ffn_hidden_size", default=4 * hidden),
        ffn_kind="gelu" if falcon or config.get("hidden_act", "silu") in ("gelu", "gelu_new") else "swiglu",
        vocab=field("vocab_size"),
        max_context=field("max_position_embeddings", "max_seq_len", default=2048),
        dtype=dtype,
        head_dim=head_dim,
        experts=experts,
        active_experts=int(
            field(
                "num_experts_per_tok",
                "num_experts_per_token",
                "experts_per_token",
                "moe_topk",
                "top_k_experts",
                default=1,
            )
        )
        if experts > 1
        else 1,
        kv_dtype=kv_dtype,
        moe_ffn=int(config.get("moe_intermediate_size") or 0) if experts > 1 else 0,
        shared_experts=int(config.get("n_shared_experts") or config.get("num_shared_experts") or 0)
        if experts > 1
        else 0,
        dense_layers=min(int(config.get("first_k_dense_replace") or 0), layers) if experts > 1 else 0,
        moe_dtype=moe_dtype if experts > 1 else "",
        kv_lora_rank=kv_lora,
        qk_rope_head_dim=rope,
        q_lora_rank=int(config.get("q_lora_rank") or 0) if kv_lora else 0,
        v_head_dim=int(config.get("v_head_dim") or 0) if kv_lora else 0,
        sliding_window=window,
        sliding_layers=sliding if window else 0,
        mtp_layers=int(config.get("num_nextn_predict_layers") or config.get("mtp_num_hidden_layers") or 0),
        hf_id=hf_id,
    )


def _precision(config: dict, hf_quant_config: dict | None) -> tuple[str, str, str]:
    """(weights, routed experts where they differ, KV cache) of a checkpoint."""
    dtype = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}.get(
        str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"), "bfloat16"
    )
    moe_dtype, kv_dtype = "", ""
    method = str((config.get("quantization_config") or {}).get("quant_method", "")).lower()
    if method == "fp8":
        dtype = "fp8"
    elif method == "mxfp4":  # gpt-oss: MXFP4 experts, 16-bit attention
        moe_dtype = "mxfp4"
    elif method == "modelopt" or hf_quant_config:
        algo = config.get("quantization_config") or {}
        algo = (hf_quant_config or {}).get("quantization", algo)
        weights = str(algo.get("quant_algo", "")).upper()
        dtype = {"FP8": "fp8", "NVFP4": "nvfp4", "FP8_BLOCK": "fp8"}.get(weights, dtype)
        kv_dtype = "fp8" if str(algo.get("kv_cache_quant_algo", "")).upper() == "FP8" else ""
    return dtype, moe_dtype, kv_dtype


CATALOG_FILE = "model_catalog.json"  # made by scripts/make_model_catalog.py


def _shipped_catalog() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The models of NVIDIA's aiconfigurator-core configs, as capsim ModelSpecs (profiles/data)."""
    from importlib import resources

    path = resources.files("capsim.profiles").joinpath("data", CATALOG_FILE)
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    models = {m["name"]: ModelSpec(**m) for m in data["models"]}
    return models, dict(data["aliases"])


OWN_MODELS, OWN_ALIASES = dict(MODELS), dict(ALIASES)  # capsim's catalog before the package's joins it
_PACKAGE_MODELS, _PACKAGE_ALIASES = _shipped_catalog()
for _name, _spec in _PACKAGE_MODELS.items():
    MODELS.setdefault(_name, _spec)
for _alias, _name in _PACKAGE_ALIASES.items():
    ALIASES.setdefault(_alias, _name)
