"""SystemSpec: the deployment being simulated, and what it takes to build it.

Everything that decides a simulated trial's result besides the workload: model, hardware,
parallelism, replicas, scheduler policy and its limits, KV memory, routing, latency profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import get_hardware
from capsim.profiles.host_time import host_time as host_time_of
from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.memory import kv_capacity
from capsim.profiles.models import ModelSpec, get_model
from capsim.profiles.store import ENGINES, resolve_profile
from capsim.sim.errors import SimulationError
from capsim.sim.policies import POLICIES
from capsim.sim.scheduler import SchedulerConfig
from capsim.sim.spec_decode import SpecDecoding

QUANTS = ("auto", "bf16", "fp8", "nvfp4")
KV_QUANTS = ("auto", "bf16", "fp8")
ROUTERS = ("round_robin", "least_outstanding", "least_kv")
PIPELINE_SCHEDULING = ("one_scheduler", "virtual_engines")


@dataclass(frozen=True)
class SystemSpec:
    model: str = "Llama-3-8B"
    hardware: str = "H100-SXM"
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    ep: int = 1  # expert parallelism of a mixture of experts: GPUs the experts are split over, by expert
    dp_attention: int = 1  # attention data-parallel ranks of a replica (TP GPUs each; the MoE layer spans them all)
    scheduler: str = "sarathi"
    max_batch_size: int = 128
    token_budget: int | None = None  # chunk size (sarathi), max_num_batched_tokens (vllm); policy default if None
    block_size: int = 16
    watermark: float | None = None  # KV fraction kept free at admission; None: the policy's (orca 0, others 0.01)
    max_model_len: int | None = None  # default: the model's context, at most 16384
    rope_scaling: float = 1.0  # RoPE scaling factor (vLLM's --rope-scaling): the context it stretches the model to
    memory_utilization: float = 0.9
    num_kv_blocks: int | None = None  # fixes the KV blocks of a replica (vLLM's --num-gpu-blocks-override)
    prefix_caching: bool = False
    router: str = "round_robin"
    pipeline_scheduling: str = "one_scheduler"  # with PP > 1: Sarathi-Serve/Vidur's, or vLLM's "virtual_engines"
    engine: str = "vllm"  # whose latencies: vllm, sglang, trtllm (kernel database) or capsim's `reference` engine
    profile: str | None = None  # a profile file; default: see profiles/store.py
    host_time: bool = True  # add the engine's host time to kernel-only latencies (profiles/host_time.py)
    async_scheduling: bool = False  # vLLM's --async-scheduling: the next step is scheduled while this one runs,
    # so the host's per-step and per-sequence time hides behind the kernels (its per-request time stays)
    quant: str = "auto"  # weights: auto (the model's own), bf16 or fp8
    kv_cache_dtype: str = "auto"  # auto (16-bit, as vLLM's auto), bf16 or fp8
    spec_tokens: int = 0  # speculative decoding: draft tokens a step (0: none); sim/spec_decode.py
    spec_method: str = "mtp"  # mtp, draft (a draft model) or ngram
    acceptance: tuple[float, ...] = ()  # a draft token's acceptance rate, one, or one a draft position
    draft_cost: float | None = None  # a draft token's cost, a fraction of a decode step; None: the method's

    def __post_init__(self):
        if isinstance(self.hardware, str):  # one name a GPU, so labels and cache keys agree (H100 -> H100-SXM)
            try:
                object.__setattr__(self, "hardware", get_hardware(self.hardware).name)
            except ProfileError as error:
                raise SimulationError(str(error)) from None
        if isinstance(self.acceptance, list):  # from a config file or JSON: a tuple, so the spec hashes
            object.__setattr__(self, "acceptance", tuple(self.acceptance))
        self._check_choices()
        self._check_numbers()
        self._check_model()
        self._check_engine_options()
        self._check_speculation()

    def _check_choices(self) -> None:
        if self.scheduler not in POLICIES:
            raise SimulationError(f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(POLICIES)}")
        if self.engine not in ENGINES:
            raise SimulationError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.pipeline_scheduling not in PIPELINE_SCHEDULING:
            raise SimulationError(
                f"unknown pipeline scheduling {self.pipeline_scheduling!r}; choose one of "
                f"{', '.join(PIPELINE_SCHEDULING)}"
            )
        if self.router not in ROUTERS:
            raise SimulationError(f"unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        for name, value, choices in (("quant", self.quant, QUANTS), ("kv_cache_dtype", self.kv_cache_dtype, KV_QUANTS)):
            if value not in choices:
                raise SimulationError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of {', '.join(choices)}")

    def _check_numbers(self) -> None:
        if self.watermark is not None and not 0 <= self.watermark < 1:
            raise SimulationError(f"watermark must be a fraction in [0, 1), got {self.watermark}")
        for name in ("tp", "pp", "replicas", "ep", "dp_attention", "max_batch_size", "block_size", "num_kv_blocks"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SimulationError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.rope_scaling <= 64:
            raise SimulationError(f"RoPE scaling must be a factor in [1, 64], got {self.rope_scaling}")

    def _check_model(self) -> None:
        """The model fits the parallelism and the context asked of it."""
        try:
            model = self.model_spec
        except ProfileError as error:
            raise SimulationError(str(error)) from None
        if "fp8" in (self.quant, self.kv_cache_dtype) and not get_hardware(self.hardware).has_fp8:
            raise SimulationError(
                f"{self.hardware} has no FP8 tensor cores, so FP8 weights and KV cache are not served there; "
                "use --quant bf16 --kv-cache-dtype bf16, or a Hopper or Blackwell GPU (H100, H200, B200, ...)"
            )
        if self.quant == "nvfp4" and not get_hardware(self.hardware).has_fp4:
            raise SimulationError(
                f"{self.hardware} has no FP4 tensor cores, so NVFP4 weights are not served there: use a Blackwell GPU "
                "(B200, GB200, B300, GB300) or --quant fp8"
            )
        self._check_moe_layout(model)
        if model.is_mla:
            pass  # MLA's one latent KV head is replicated on every TP rank
        elif model.heads % self.tp or (model.kv_heads % self.tp and self.tp % model.kv_heads):
            raise SimulationError(
                f"TP={self.tp} does not divide {model.name}'s {model.heads} attention heads "
                f"({model.kv_heads} KV heads): choose a TP that does, as vLLM requires"
            )
        if model.layers < self.pp:
            raise SimulationError(f"PP={self.pp} is more stages than {model.name}'s {model.layers} layers")
        context = int(model.max_context * self.rope_scaling)
        if self.max_model_len is not None and not 2 <= self.max_model_len <= context:
            raise SimulationError(
                f"max model length {self.max_model_len} is outside what {model.name} holds (2 to {context} tokens"
                + (f", its context x RoPE scaling {self.rope_scaling:g}" if self.rope_scaling != 1 else "")
                + "), as vLLM refuses it too: lower it"
            )

    def _check_moe_layout(self, model: ModelSpec) -> None:
        """EP and attention DP as the engines combine them (vLLM: --enable-expert-parallel makes all
        TP x DP GPUs one expert-parallel group; SGLang and TensorRT-LLM let EP be any divisor)."""
        if self.ep == 1 and self.dp_attention == 1:
            return
        if not model.is_moe:
            raise SimulationError(
                f"expert parallelism and attention data parallelism are for mixtures of experts; {model.name} is "
                "dense: drop --ep and --dp-attention (use --replicas for more copies)"
            )
        width = self.tp * self.dp_attention
        if width % self.ep:
            raise SimulationError(
                f"EP={self.ep} must divide the GPUs the MoE layer spans, TP x DP = {self.tp} x {self.dp_attention} = "
                f"{width}"
            )
        if model.experts % self.ep:
            raise SimulationError(f"EP={self.ep} does not divide {model.name}'s {model.experts} experts")
        if self.engine == "vllm" and self.ep not in (1, width):
            raise SimulationError(
                f"vLLM's --enable-expert-parallel puts all TP x DP = {width} GPUs in one expert-parallel group: "
                f"use --ep 1 or --ep {width}"
            )
        if self.dp_attention > 1 and self.engine == "reference":
            raise SimulationError("capsim's reference engine has no attention data parallelism: drop --dp-attention")
        if self.dp_attention > 1 and self.pp > 1:
            raise SimulationError("attention data parallelism with pipeline stages is not modelled: use --pp 1")

    def _check_engine_options(self) -> None:
        if self.engine == "reference" and (self.quant, self.kv_cache_dtype) != ("auto", "auto"):
            raise SimulationError(
                "capsim's reference engine runs the model's own precision: drop --quant and --kv-cache-dtype, "
                "or simulate --engine vllm, sglang or trtllm"
            )
        if self.async_scheduling and self.engine != "vllm":
            raise SimulationError("async scheduling is vLLM's (--async-scheduling): use it with --engine vllm")
        if self.prefix_caching and not POLICIES[self.scheduler].supports_prefix_caching:
            caching = ", ".join(name for name, policy in POLICIES.items() if policy.supports_prefix_caching)
            raise SimulationError(f"prefix caching is modelled for the {caching} schedulers only")

    def _check_speculation(self) -> None:
        if not self.spec_tokens:
            if self.acceptance or self.draft_cost is not None:
                raise SimulationError(
                    "an acceptance rate or draft cost needs speculative decoding: add --spec-tokens K, or drop them"
                )
            return
        if not self.acceptance:
            raise SimulationError(
                "speculative decoding needs the drafts' acceptance rate: add --acceptance-rate (e.g. 0.7), or a list "
                "with one a draft position"
            )
        if self.engine == "reference":
            raise SimulationError("capsim's reference engine does not speculate: drop --spec-tokens")
        if self.spec_method == "draft" and self.draft_cost is None:
            raise SimulationError(
                "a draft model's cost is yours to give: add --draft-cost (a draft token's time as a fraction of a "
                "decode step, e.g. 0.1 for a model a tenth the size)"
            )
        self.spec_decoding  # noqa: B018  (checks the numbers)

    @property
    def spec_decoding(self) -> SpecDecoding | None:
        """The speculative decoding this system runs, or None. MTP's draft token costs one decoder
        layer (its MTP module) of a step; n-grams cost no GPU time."""
        if not self.spec_tokens:
            return None
        cost = _draft_cost(self.spec_method, self.model, self.draft_cost)
        return _spec_decoding(self.spec_method, self.spec_tokens, tuple(self.acceptance), cost)

    @property
    def model_spec(self) -> ModelSpec:
        """The catalog model with this system's weight and KV-cache precision."""
        return get_model(self.model).quantized(self.quant, self.kv_cache_dtype)

    @property
    def model_len(self) -> int:
        return self.max_model_len or min(get_model(self.model).max_context, 16384)

    @property
    def parallel_label(self) -> str:
        moe = (f"_dp_{self.dp_attention}" if self.dp_attention > 1 else "") + (f"_ep_{self.ep}" if self.ep > 1 else "")
        return f"tp_{self.tp}_pp_{self.pp}{moe}"

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp * self.dp_attention

    def scheduler_config(self) -> SchedulerConfig:
        """The policy's limits, with the KV blocks of the replica (of one virtual engine in
        vLLM's pipeline mode)."""
        budget = self.token_budget or POLICIES[self.scheduler].default_budget or self.model_len
        blocks = (
            self.num_kv_blocks
            or kv_capacity(
                self.model_spec,
                get_hardware(self.hardware),
                self.tp,
                self.pp,
                self.block_size,
                self.memory_utilization,
                max_batch_tokens=max(budget, 2048),
                dp=self.dp_attention,
            ).num_blocks
        )
        engines = self.pp if self.pipeline_scheduling == "virtual_engines" else 1
        watermark = self.watermark if self.watermark is not None else POLICIES[self.scheduler].default_watermark
        return SchedulerConfig(
            max_batch_size=self.max_batch_size,
            token_budget=self.token_budget,
            block_size=self.block_size,
            num_blocks=max(1, blocks // engines),
            watermark=watermark,
            max_model_len=self.model_len,
            prefix_caching=self.prefix_caching,
        )

    def unschedulable(self, prompt_tokens) -> str | None:
        """Why some of these prompts could never start on this system's policy, or None."""
        limit = POLICIES[self.scheduler].largest_prompt(self.scheduler_config())
        over = int((np.asarray(prompt_tokens) > limit).sum()) if limit is not None else 0
        if not over:
            return None
        return (
            f"{over} of {len(prompt_tokens)} prompts are longer than {limit} tokens, the longest {self.scheduler} can "
            f"start "
            f"(it prefills a prompt whole within its token budget): they would wait forever; raise --chunk-size to at "
            f"least "
            f"{int(np.max(prompt_tokens))}, cap the prompts (--max-total-tokens), or use a chunked-prefill scheduler "
            f"(sarathi, vllm_v1)"
        )

    def latency_model(self) -> LatencyModel:
        return _latency_model(
            self.model_spec,
            self.hardware,
            self.tp,
            self.pp,
            self.profile,
            self.engine,
            self.host_time,
            self.async_scheduling,
            self.ep,
            self.dp_attention,
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["acceptance"] = list(self.acceptance)  # as JSON gives it back
        if self.profile:
            data["profile"] = str(Path(self.profile).resolve())
        return data


def precision_words(system: dict) -> str:
    """The precision a system (as to_dict gives it) runs in, where it is not the model's own: "FP8
    weights, FP8 KV cache"; "" for the model's own. A disaggregated system's pools share it."""
    system = system.get("prefill", system)
    words = [
        f"{system[key].upper()} {what}"
        for key, what in (("quant", "weights"), ("kv_cache_dtype", "KV cache"))
        if system.get(key, "auto") != "auto"
    ]
    return ", ".join(words)


def _draft_cost(method: str, model: str, given: float | None) -> float:
    """A draft token's cost: the one given, else the method's (MTP: one decoder layer; others: 0)."""
    if given is not None:
        return float(given)
    return 1 / get_model(model).layers if method == "mtp" else 0.0


@lru_cache(maxsize=64)
def _spec_decoding(method: str, tokens: int, acceptance: tuple, cost: float) -> SpecDecoding:
    try:
        return SpecDecoding(method, tokens, acceptance, cost)
    except SimulationError:
        raise
    except (TypeError, ValueError) as error:
        raise SimulationError(f"speculative decoding: {error}") from None


def speculation_words(system: dict) -> str:
    """ ", MTP 2 drafts at acceptance 0.7 (1.91 tokens a step)"; "" without speculative decoding."""
    if not system.get("spec_tokens"):
        return ""
    method = system.get("spec_method", "mtp")
    cost = _draft_cost(method, system["model"], system.get("draft_cost"))
    spec = _spec_decoding(method, system["spec_tokens"], tuple(system["acceptance"]), cost)
    rates = "/".join(f"{a:g}" for a in spec.acceptance)
    return (
        f", {spec.method.upper() if spec.method != 'draft' else 'draft model'} {spec.tokens} drafts at acceptance "
        f"{rates} ({spec.tokens_per_step:.2f} tokens a step, draft {spec.draft_cost:.3g} of a step each)"
    )


def moe_layout_words(system: dict) -> str:
    """A mixture of experts' layout beyond TP/PP, as a system's to_dict gives it: " x DP8 attention, EP8";
    "" where there is none."""
    dp, ep = system.get("dp_attention", 1), system.get("ep", 1)
    return (f" x DP{dp} attention" if dp > 1 else "") + (f", EP{ep}" if ep > 1 else "")


@lru_cache(maxsize=32)
def _latency_model(
    model: ModelSpec,
    hardware: str,
    tp: int,
    pp: int,
    profile: str | None,
    engine: str,
    host_time: bool,
    async_scheduling: bool,
    ep: int = 1,
    dp: int = 1,
) -> LatencyModel:
    table = resolve_profile(model, hardware, tp, pp, path=profile, engine=engine, ep=ep, dp=dp)
    if table.metadata["tp"] != tp:
        raise ProfileError(f"the profile {profile} is for TP={table.metadata['tp']}, the system has TP={tp}")
    fitted = LatencyModel.for_profile(table)
    if not host_time:
        return fitted
    host = host_time_of(engine)  # the system's engine: a roofline profile calls itself "roofline", calibrated to it
    return fitted.with_host_time(host.overlapped() if host and async_scheduling else host)
