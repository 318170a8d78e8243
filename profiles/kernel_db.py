"""The kernel-database producer: batch latencies composed from NVIDIA's measured kernel timings.

NVIDIA's `aiconfigurator-core` package holds per-kernel timings (GEMMs, context and generation
attention, NCCL and custom all-reduce, elementwise ops) measured with vLLM, SGLang and TRT-LLM on
A100 ... GB300, and compiles a model into an engine that prices its ops. capsim asks that engine
for each op of one batch at the shape the batch really has:
- the linear layers, norms, activations and TP all-reduces over all new tokens of the batch
  (prefill chunk tokens plus one a decode);
- the LM head over one row a sequence;
- context attention for each prefill chunk after its own cached context, priced as its share of
  one launch that holds every chunk of the batch (flash attention runs them as one varlen launch);
- generation attention for each decode at its own KV length, likewise its share of one launch
  of all the batch's decodes (so a long and a short sequence cost what they cost, not a mean);
  where the database measures fewer KV heads a GPU than the model has (vLLM's decode attention
  stops at 8 on most GPUs, so multi-head attention is beyond it), a decode of n sequences is
  priced as the most KV heads it measures at n x (the model's / those) sequences: the same
  (sequence, KV head) pairs and KV bytes (MHAProxy);
- with PP > 1, one stage: the ops over PP plus the activation send to the next stage.
The database models no per-step CPU time for these engines (scheduling, sampling, input
preparation); the vLLM backend's per-request dispatch correction of its static estimator is a
TTFT term, not a step cost, and is not applied. The metadata says so.

The package is an optional extra (`pip install 'capsim[kernel-db]'`); the shipped tables need it
only to be made again (scripts/make_kernel_db_profiles.py).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import Counter
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.models import ModelSpec

INSTALL = "pip install 'capsim[kernel-db]'"
ENGINES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM"}
# capsim hardware name -> the package's system name
SYSTEMS = {
    "A100-80GB-SXM": "a100_sxm",
    "H100-SXM": "h100_sxm",
    "H200": "h200_sxm",
    "B200": "b200_sxm",
    "GB200": "gb200",
    "B300": "b300_sxm",
    "GB300": "gb300",
    "L40S": "l40s",
    "RTX-PRO-6000": "rtx_pro_6000_server",
}
SYSTEM_WORDS = {
    "a100_sxm": "A100 SXM",
    "h100_sxm": "H100 SXM",
    "h200_sxm": "H200 SXM",
    "b200_sxm": "B200 SXM",
    "gb200": "GB200",
    "b300_sxm": "B300 SXM",
    "gb300": "GB300",
    "l40s": "L40S",
    "rtx_pro_6000_server": "RTX PRO 6000 Server",
}


def _require_package():
    try:
        import aiconfigurator_core  # noqa: F401
    except ImportError:
        raise ProfileError(f"the kernel database needs NVIDIA's aiconfigurator-core package: {INSTALL}") from None
    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)  # it logs every fallback table it loads


def package_version() -> str:
    return importlib_metadata.version("aiconfigurator-core")


@lru_cache(maxsize=1)
def coverage() -> dict[str, dict[str, list[str]]]:
    """{capsim hardware: {engine: [versions]}} that the installed database holds."""
    _require_package()
    from aiconfigurator_core.sdk.perf_database import get_supported_databases

    supported = get_supported_databases()
    return {
        hw: {engine: list(supported[system][engine]) for engine in ENGINES if supported.get(system, {}).get(engine)}
        for hw, system in SYSTEMS.items()
        if system in supported
    }


def default_version(hardware: str, engine: str) -> str:
    """The engine version the database calls current for that GPU."""
    from aiconfigurator_core.sdk.perf_database import resolve_query_version

    return resolve_query_version(SYSTEMS[hardware], engine, "current")


def check_coverage(hardware: str, engine: str, version: str | None) -> str:
    """The version to use; a ProfileError listing what the database has when it lacks this (or
    naming the install when the package is absent)."""
    have = coverage()
    if engine not in ENGINES:
        raise ProfileError(f"the kernel database has no engine {engine!r}; it has {', '.join(ENGINES)}")
    if hardware not in have or engine not in have[hardware]:
        gpus = [hw for hw, engines in have.items() if engine in engines]
        raise ProfileError(
            f"the kernel database has no {ENGINES[engine]} data for {hardware}; it has {', '.join(gpus)}"
        )
    version = version or default_version(hardware, engine)
    if version not in have[hardware][engine]:
        raise ProfileError(
            f"the kernel database has no {ENGINES[engine]} {version} on {hardware}; "
            f"it has {', '.join(have[hardware][engine])}"
        )
    return version


def source_words(engine: str, version: str, hardware: str) -> str:
    return f"{ENGINES[engine]} {version} kernels measured on {SYSTEM_WORDS[SYSTEMS[hardware]]} (NVIDIA kernel database)"


def hf_config(model: ModelSpec) -> dict:
    """A Hugging Face-style config.json of a catalog model, as the package reads one."""
    return {
        # Gated-MLP decoders are the package's LLAMA family; Falcon's plain GELU MLP is its GPT family.
        "architectures": ["LlamaForCausalLM" if model.ffn_kind == "swiglu" else "FalconForCausalLM"],
        "model_type": "llama" if model.ffn_kind == "swiglu" else "falcon",
        "num_hidden_layers": model.layers,
        "hidden_size": model.hidden,
        "num_attention_heads": model.heads,
        "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_dim,
        "intermediate_size": model.ffn,
        "vocab_size": model.vocab,
        "max_position_embeddings": model.max_context,
        "hidden_act": "silu" if model.ffn_kind == "swiglu" else "gelu",
        "torch_dtype": "bfloat16" if model.dtype == "fp8" else model.dtype,  # FP8 weights: quant modes say so
        "tie_word_embeddings": False,
    }


class KernelDatabase:
    """One model x GPU x engine x version x TP x PP (x EP x attention DP for a mixture of experts),
    compiled by the package: latency(shape) -> seconds."""

    def __init__(
        self,
        model: ModelSpec,
        hardware: str,
        engine: str = "vllm",
        version: str | None = None,
        tp: int = 1,
        pp: int = 1,
        ep: int = 1,
        dp: int = 1,
    ):
        _require_package()
        gpu = get_hardware(hardware)
        if model.dtype not in ("bfloat16", "float16", "fp8", "nvfp4") or model.kv_dtype_bytes not in (1, 2):
            raise ProfileError(
                f"the kernel database prices 16-bit, FP8 and NVFP4 models; {model.name} is {model.dtype}"
            )
        if (model.dtype == "fp8" or model.kv_dtype_bytes == 1) and not gpu.has_fp8:
            raise ProfileError(f"{hardware} has no FP8 tensor cores: the kernel database has no FP8 kernels for it")
        if model.dtype == "nvfp4" and not gpu.has_fp4:
            raise ProfileError(
                f"{hardware} has no FP4 tensor cores: NVFP4 weights need a Blackwell GPU (B200, GB200, ...)"
            )
        if model.is_moe and not model.hf_id:
            raise ProfileError(
                f"the kernel database prices a mixture of experts from its Hugging Face config; {model.name} has none: "
                "give its config.json as the model"
            )
        if (ep > 1 or dp > 1) and not model.is_moe:
            raise ProfileError(
                f"expert and attention-data parallelism are for mixtures of experts; {model.name} is dense"
            )
        if model.is_mla:
            pass  # MLA keeps one latent head: any TP splits its query heads
        elif model.heads % tp or (model.kv_heads % tp and tp % model.kv_heads):
            raise ProfileError(
                f"{model.name} has {model.heads} heads and {model.kv_heads} KV heads: TP {tp} does not divide them"
            )
        self.model, self.hardware, self.engine, self.tp, self.pp, self.ep, self.dp = (
            model,
            hardware,
            engine,
            tp,
            pp,
            ep,
            dp,
        )
        self.version = check_coverage(hardware, engine, version)
        self._handle = self._compile()
        self._mha = MHAProxy.needed(self)
        # Ops by their place in each phase's list (the two lists need not line up, e.g. Falcon's or DeepSeek's).
        names = [op._name for op in self._model.context_ops]
        generation = [op._name for op in self._model.generation_ops]
        self._attention = [i for i, name in enumerate(names) if _is_attention(name)]
        self._p2p = names.index("context_p2p") if "context_p2p" in names else None
        self._linear = [
            i
            for i, name in enumerate(names)
            if not _is_attention(name) and name not in ("context_logits_gemm", "context_p2p")
        ]
        self._logits = generation.index("generation_logits_gemm")  # m = one row a sequence
        self._generation_attention = [i for i, name in enumerate(generation) if _is_attention(name)]
        # A MoE decode-only step runs the package's generation ops (its decode MoE kernels and dispatch).
        self._generation_linear = [
            i
            for i, name in enumerate(generation)
            if not _is_attention(name) and name not in ("generation_logits_gemm", "generation_p2p")
        ]

    @property
    def moe_layout(self) -> dict:
        """The package's MoE parallelism: the MoE layer spans TP x DP GPUs, EP of them by expert."""
        if not self.model.is_moe:
            return {"attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": 1}
        return {"attention_dp_size": self.dp, "moe_tp_size": self.tp * self.dp // self.ep, "moe_ep_size": self.ep}

    def _compile(self):
        from aiconfigurator_core.sdk import common
        from aiconfigurator_core.sdk.config_builders import build_model_config
        from aiconfigurator_core.sdk.engine import EngineHandle
        from aiconfigurator_core.sdk.models import get_model

        # The package has no Falcon architecture; its GPT family is the same plain-MLP decoder.
        common.ARCHITECTURE_TO_MODEL_FAMILY.setdefault("FalconForCausalLM", "GPT")
        with tempfile.TemporaryDirectory(prefix="capsim-hf-") as folder:
            model_path = self._model_path(folder)
            try:
                quant = self.quant_modes()
                layout = self.moe_layout
                handle = EngineHandle.compile(
                    model_path,
                    SYSTEMS[self.hardware],
                    self.engine,
                    backend_version=self.version,
                    tp_size=self.tp,
                    pp_size=self.pp,
                    **layout,
                    **quant,
                )
                # The same model again, for its op names and quant modes (the handle keeps only bytes); < 1 ms.
                config = build_model_config(tp_size=self.tp, pp_size=self.pp, **layout, **quant)
                self._model = get_model(model_path, config, self.engine)
            except (ValueError, NotImplementedError, RuntimeError, AssertionError, KeyError) as error:
                raise ProfileError(
                    f"the kernel database cannot price {self.model.name} on {self.hardware} "
                    f"with {ENGINES[self.engine]} {self.version} {self.layout_words}: {error}"
                ) from None
        self.quant = {
            k: str(getattr(self._model.config, k, None))
            for k in ("gemm_quant_mode", "moe_quant_mode", "kvcache_quant_mode", "fmha_quant_mode")
            if self.model.is_moe or k != "moe_quant_mode"
        }
        return handle

    @property
    def layout_words(self) -> str:
        words = f"TP{self.tp}" + (f" PP{self.pp}" if self.pp > 1 else "")
        if self.dp > 1:
            words += f" x DP{self.dp} attention"
        if self.model.is_moe:
            words += f", EP{self.ep}" if self.ep > 1 else ", MoE TP"
        return words

    def _model_path(self, folder: str) -> str:
        """What the package compiles: a config it ships (by id), a user's config.json copied into
        `folder` (its hf_quant_config.json too), or the catalog model written out as one."""
        from aiconfigurator_core.sdk.common import DefaultHFModels

        hf_id = self.model.hf_id
        if hf_id in DefaultHFModels:
            return hf_id
        shipped = package_model_files().get(hf_id)
        config = shipped or (Path(hf_id) if hf_id and Path(hf_id).is_file() else None)
        if config is not None:  # a config the package holds but does not list, or a user's: never downloaded
            Path(folder, "config.json").write_text(config.read_text())
            quant = (
                config.with_name(config.name.replace("_config.json", "_hf_quant_config.json"))
                if shipped
                else config.with_name("hf_quant_config.json")
            )
            if quant.is_file():
                Path(folder, "hf_quant_config.json").write_text(quant.read_text())
            return folder
        Path(folder, "config.json").write_text(json.dumps(hf_config(self.model)))
        return folder

    def quant_modes(self) -> dict:
        """The package's quant modes for this model's weights and KV cache (None: the package's default,
        16-bit, or for a Hugging Face config the checkpoint's own, e.g. DeepSeek's block-scaled FP8)."""
        fp8_kv = self.model.kv_dtype_bytes == 1
        if not self.model.hf_id:
            weights = {"fp8": "fp8", "nvfp4": "nvfp4"}.get(self.model.dtype)
            return {"gemm_quant_mode": weights, "kvcache_quant_mode": "fp8" if fp8_kv else None}
        native = _native(self.model)
        modes = {"kvcache_quant_mode": "fp8" if fp8_kv else "bfloat16"}
        if not fp8_kv:
            modes["fmha_quant_mode"] = "bfloat16"
        if (self.model.dtype, self.model.moe_dtype) != (native.dtype, native.moe_dtype):
            weights = {"fp8": "fp8", "nvfp4": "nvfp4"}.get(self.model.dtype, "bfloat16")
            modes["gemm_quant_mode"] = weights
            if self.model.is_moe:
                modes["moe_quant_mode"] = weights
        return modes

    @property
    def source(self) -> str:
        if self.model.hf_id:  # the package's own precision names: fp8_block, w4a16_mxfp4, ...
            modes = ", ".join(
                f"{k.removesuffix('_quant_mode')} {v.split('.')[-1]}" for k, v in self.quant.items() if v != "None"
            )
            layout = f", {self.layout_words}" if self.model.is_moe else ""
            return source_words(self.engine, self.version, self.hardware) + f"{layout} ({modes})"
        weights = {"fp8": "FP8 weights", "nvfp4": "NVFP4 weights"}.get(self.model.dtype)
        quant = [w for w, on in ((weights, weights), ("FP8 KV cache", self.model.kv_dtype_bytes == 1)) if on]
        mha = f", {self._mha.words}" if self._mha is not None else ""
        return (
            source_words(self.engine, self.version, self.hardware) + (f", {' and '.join(quant)}" if quant else "") + mha
        )

    def parts_ms(self, shape: BatchShape) -> dict[str, float]:
        """Milliseconds of one batch on the whole model, by part (p2p: one stage-to-stage send)."""
        e = self._handle._engine
        chunks, contexts, decodes = shape.prefill_chunks, shape.prefill_contexts, shape.decode_contexts
        tokens = sum(chunks) + len(decodes)
        sequences = len(chunks) + len(decodes)
        if self.model.is_moe and not chunks:
            linear = sum(r[1] for r in e.evaluate_generation_ops(self._generation_linear, len(decodes), 2))
        else:
            linear = sum(r[1] for r in e.evaluate_context_ops(self._linear, 1, tokens))
        parts = {
            "linear": linear,
            "logits": e.evaluate_generation_ops([self._logits], sequences, 2)[0][1],
            "context_attention": 0.0,
            "generation_attention": 0.0,
            "p2p": 0.0,
        }
        if chunks:
            launch = len(chunks)
            for (chunk, context), count in Counter(zip(chunks, contexts)).items():
                one = sum(r[1] for r in e.evaluate_context_ops(self._attention, launch, chunk, prefix=context))
                parts["context_attention"] += one * count / launch
        if decodes and self._mha is not None:
            parts["generation_attention"] = self._mha.attention_ms(decodes)
        elif decodes:
            parts["generation_attention"] = self.generation_attention_ms(decodes)
        if self.pp > 1 and self._p2p is not None:
            parts["p2p"] = e.evaluate_context_ops([self._p2p], 1, tokens)[0][1]
        return parts

    def generation_attention_ms(self, decodes, sequences: float | None = None) -> float:
        """Each decode's share of one launch of all of them (of `sequences` of them, where given: a
        fraction lies between the launches of its floor and its ceiling)."""
        launch = sequences if sequences is not None else len(decodes)
        low, high = int(launch), -int(-launch // 1)
        total = 0.0
        for length, count in Counter(decodes).items():
            at = {
                n: sum(
                    r[1]
                    for r in self._handle._engine.evaluate_generation_ops(self._generation_attention, n, length + 1)
                )
                for n in {low, high}
            }
            one = at[low] + (at[high] - at[low]) * (launch - low)
            total += one * count / len(decodes)
        return total

    def latency(self, shape: BatchShape) -> float:
        """Seconds for one pipeline stage (the whole model at PP 1) to run the batch."""
        parts = self.parts_ms(shape)
        p2p = parts.pop("p2p")
        return (sum(parts.values()) / self.pp + p2p) / 1e3

    # The package's own step estimates, for shapes it prices directly (tests compare the composition).
    def package_prefill_s(self, batch: int, prompt: int, cached: int = 0) -> float:
        return self._handle._engine.predict_prefill_latency(batch, prompt, cached) / 1e3

    def package_decode_s(self, batch: int, kv_length: int) -> float:
        # one step at s = isl + osl // 2 + 1 tokens attended: KV length isl + 1 with osl = 2
        return self._handle._engine.decode_step_latency(batch, kv_length - 1, 2) / 1e3

    def package_mixed_s(self, prompt: int, decodes: int, kv_length: int) -> float:
        # a whole prompt (ctx = isl) with `decodes` decodes at KV length isl + osl // 2
        return self._handle._engine.mixed_step_latency(prompt, decodes, prompt, 2 * (kv_length - prompt)) / 1e3

    def metadata(self) -> dict:
        return {
            "kernel_db": {
                "package": "aiconfigurator-core",
                "package_version": package_version(),
                "engine": self.engine,
                "engine_version": self.version,
                "system": SYSTEMS[self.hardware],
                "database_mode": "SILICON",
                **self.quant,
                **({"tp": self.tp, **self.moe_layout} if self.model.is_moe else {}),
                "step_overhead": "none modelled (kernel time only)",
            },
            "source_words": self.source,
        }


def _is_attention(op_name: str) -> bool:
    """Ops priced per sequence at its own context: attention, and MLA's block (its attention and projections)."""
    return op_name.endswith("_attention") or op_name.endswith("_mla_block")


def _native(model: ModelSpec) -> ModelSpec:
    """The model as its checkpoint is (precision included), before any --quant."""
    from capsim.profiles.models import get_model

    return get_model(model.hf_id)


class MHAProxy:
    """Decode attention for more KV heads a GPU than the database measures (multi-head attention
    under vLLM on most GPUs). The package scales its largest measured count K up by k / K, which
    counts a launch's fixed cost k / K times: 3-4x too slow for a few sequences. A decode launch
    runs one block of work a (sequence, KV head) pair and reads its KV, so n sequences of k heads
    cost what n k / K sequences of K heads cost; where an engine measures both (SGLang and TRT-LLM
    on H100, vLLM on B200, Llama-2-7B's shape), that lands within 3-12% median of the
    measured multi-head kernels, against 25-75% for the scaling (tests/test_kernel_db.py)."""

    def __init__(self, proxy: KernelDatabase, factor: float, measured: int, heads: int):
        self.proxy, self.factor = proxy, factor
        self.words = (
            f"decode attention of {heads} KV heads a GPU priced as {measured} at {factor:g}x the sequences "
            f"(the database measures no more)"
        )

    @classmethod
    def needed(cls, database: KernelDatabase):
        beyond = beyond_database(database.model, database.tp, database.hardware, database.engine, database.version)
        if beyond is None:
            return None
        heads, top = beyond
        try:
            proxy = KernelDatabase(
                _with_kv_heads(database.model, top * database.tp),
                database.hardware,
                database.engine,
                database.version,
                database.tp,
                database.pp,
            )
        except ProfileError:  # an architecture the package compiles only from its own config: its scaling stays
            return None
        return cls(proxy, heads / top, top, heads)

    def attention_ms(self, decodes) -> float:
        return self.proxy.generation_attention_ms(decodes, len(decodes) * self.factor)


def beyond_database(model: ModelSpec, tp: int, hardware: str, engine: str, version: str) -> tuple[int, int] | None:
    """(the model's KV heads a GPU, the most the database's decode attention measures) where the
    first is more, so MHAProxy prices it; None where the database measures it (or is silent)."""
    if model.is_moe or model.is_mla:
        return None
    heads = max(1, model.kv_heads // tp)
    measured = _measured_kv_heads(SYSTEMS.get(hardware), engine, version, model.head_dim)
    return (heads, max(measured)) if measured and heads > max(measured) else None


def rules_key(model: ModelSpec, tp: int, hardware: str, engine: str, version: str) -> list[str]:
    """What a cached profile's key adds for the composition rules that change it, so entries made
    before a rule came are made again."""
    return ["mha-proxy"] if beyond_database(model, tp, hardware, engine, version) else []


def _with_kv_heads(model: ModelSpec, kv_heads: int) -> ModelSpec:
    import dataclasses

    return dataclasses.replace(model, name=f"{model.name} ({kv_heads} KV heads)", kv_heads=kv_heads, hf_id=None)


@lru_cache(maxsize=64)
def _measured_kv_heads(system: str | None, engine: str, version: str, head_dim: int) -> frozenset[int]:
    """The KV-head counts a GPU the package's decode-attention table holds for this head size."""
    import aiconfigurator_core
    import pyarrow.parquet as pq

    path = (
        Path(aiconfigurator_core.__file__).parent
        / "systems"
        / "data"
        / str(system)
        / "attention"
        / engine
        / version
        / "generation_attention_perf.parquet"
    )
    if system is None or not path.is_file():
        return frozenset()
    table = pq.read_table(path, columns=["num_key_value_heads", "head_dim"]).to_pydict()
    return frozenset(k for k, d in zip(table["num_key_value_heads"], table["head_dim"]) if d == head_dim)


def kernel_db_profile(database: KernelDatabase, grid: str = "kernel-db", seed: int = 0, progress=None):
    """A ProfileTable of kernel-database latencies over the grid batches that fit the GPU's KV memory:
    the designed grid plus (grid "kernel-db") batches sampled as schedulers form them."""
    from capsim.profiles.grid import GRIDS, sampled_shapes
    from capsim.profiles.hardware import get_hardware
    from capsim.profiles.memory import kv_capacity
    from capsim.profiles.table import ProfileTable
    from capsim.profiles.versions import profile_metadata

    model, hardware, tp, pp = database.model, database.hardware, database.tp, database.pp
    budget = kv_capacity(model, get_hardware(hardware), tp, pp, dp=database.dp).tokens
    max_context = min(model.max_context, 16384)
    base = "default" if grid == "kernel-db" else grid
    shapes = GRIDS[base].shapes(max_context, budget, max_batch_tokens=16384)
    if grid == "kernel-db":
        shapes += sampled_shapes(np.random.default_rng(seed), max_context, budget, count=1200)
    latencies = []
    for i, shape in enumerate(shapes, 1):
        try:
            latencies.append(database.latency(shape))
        except (RuntimeError, ValueError) as error:  # the package's PerfDataNotAvailableError, ...
            raise ProfileError(
                f"the kernel database cannot price {model.name} on {hardware} with "
                f"{ENGINES[database.engine]} {database.version} {database.layout_words}: {error}"
            ) from None
        if progress and (i % 50 == 0 or i == len(shapes)):
            progress(i, len(shapes))
    metadata = profile_metadata(
        model,
        hardware,
        tp,
        pp,
        engine=database.engine,
        source="kernel-db",
        engine_version=database.version,
        **database.metadata(),
    )
    return ProfileTable.from_batches(shapes, latencies, metadata)


@lru_cache(maxsize=1)
def package_model_files() -> dict[str, Path]:
    """{Hugging Face id: config.json} of every model config the package ships."""
    _require_package()
    import aiconfigurator_core

    folder = Path(aiconfigurator_core.__file__).parent / "model_configs"
    files = {}
    for path in sorted(folder.glob("*_config.json")):
        if path.name.endswith("_hf_quant_config.json"):
            continue
        org, _, repo = path.name.removesuffix("_config.json").partition("--")
        files[f"{org}/{repo}"] = path
    return files


def package_catalog() -> tuple[list[ModelSpec], dict[str, str], dict[str, str]]:
    """The package's model configs as capsim models, named by their repository name
    (gpt-oss-120b, DeepSeek-R1, ...), with their ids as aliases. A config whose id capsim's catalog
    already has stays an alias of it; one capsim cannot read is listed with the reason."""
    from capsim.profiles.models import OWN_ALIASES, OWN_MODELS, spec_from_hf_config

    models, aliases, unread = [], {}, {}
    known = {name.lower(): name for name in OWN_MODELS} | {a.lower(): n for a, n in OWN_ALIASES.items()}
    for hf_id, path in package_model_files().items():
        name = hf_id.split("/")[-1]
        if hf_id.lower() in known or name.lower() in known:
            aliases[hf_id] = known.get(hf_id.lower()) or known[name.lower()]
            continue
        quant_path = path.with_name(path.name.replace("_config.json", "_hf_quant_config.json"))
        quant = json.loads(quant_path.read_text()) if quant_path.is_file() else None
        try:
            spec = spec_from_hf_config(json.loads(path.read_text()), name, hf_quant_config=quant, hf_id=hf_id)
        except (ProfileError, TypeError, ValueError, KeyError) as error:
            unread[hf_id] = str(error)
            continue
        models.append(spec)
        aliases[hf_id] = name
    return models, aliases, unread
