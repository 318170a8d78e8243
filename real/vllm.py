"""vLLM: the `vllm serve` command line of a capsim deployment, and a launcher for it.

Written for vLLM 0.8 to 0.10 (the flags of `vllm serve --help` there). The scheduler policies map
onto vLLM's own:
- vllm_v0: the V0 engine (VLLM_USE_V1=0; V0 is gone from vLLM 0.11) without chunked prefill,
  whole prompts up to the token budget (default: the max model length).
- sarathi: chunked prefill with the chunk size as --max-num-batched-tokens (default 512);
  decodes first, then prompt chunks, as vLLM's chunked-prefill scheduler batches them.
- vllm_v1: vLLM's default V1 engine: --max-num-batched-tokens (default 2048), prefix caching on
  or off as the system says.
orca and faster_transformer have no vLLM equivalent: run them on the reference engine.

`--load-format dummy` (random weights) by default: latency does not depend on weight values, and
nothing needs downloading but the model's config and tokenizer.
"""

from __future__ import annotations

import os

from capsim.profiles.errors import ProfileError
from capsim.profiles.models import ALIASES, get_model
from capsim.real.process import ServerProcess
from capsim.sim import SystemSpec

VLLM_VERSIONS = "0.8-0.10"
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "fp8": "auto"}


def hf_model_id(model: str) -> str:
    """The Hugging Face id vLLM loads for a catalog model (a path or id is passed through)."""
    name = get_model(model).name
    for hf_id, catalog in ALIASES.items():
        if catalog == name:
            return hf_id
    return model  # a YAML or config.json path: vLLM needs a model folder or id, which the user gave


def vllm_command(system: SystemSpec, port: int = 8000, host: str = "127.0.0.1", dummy_weights: bool = True,
                 extra: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """(argv, environment variables to set) that serve the system with vLLM."""
    if system.scheduler not in ("vllm_v0", "sarathi", "vllm_v1"):
        raise ProfileError(f"vLLM has no {system.scheduler} scheduler; confirm it on the reference engine (capsim serve)")
    if system.replicas != 1:
        raise ProfileError("one vllm serve is one replica: start one per replica behind a router, or use --replicas 1")
    model = get_model(system.model)
    argv = ["vllm", "serve", hf_model_id(system.model), "--host", host, "--port", str(port),
            "--tensor-parallel-size", str(system.tp), "--pipeline-parallel-size", str(system.pp),
            "--max-num-seqs", str(system.max_batch_size), "--max-model-len", str(system.model_len),
            "--block-size", str(system.block_size), "--gpu-memory-utilization", str(system.memory_utilization),
            "--dtype", DTYPES.get(model.dtype, "auto")]
    environment = {}
    if system.scheduler == "vllm_v0":
        environment["VLLM_USE_V1"] = "0"
        argv += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(system.token_budget or system.model_len)]
    else:
        budget = system.token_budget or (512 if system.scheduler == "sarathi" else 2048)
        argv += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(budget)]
    argv.append("--enable-prefix-caching" if system.prefix_caching else "--no-enable-prefix-caching")
    if system.num_kv_blocks:
        argv += ["--num-gpu-blocks-override", str(system.num_kv_blocks)]
    if system.quant == "fp8":
        argv += ["--quantization", "fp8"]  # FP8 weights quantized at load time (an FP8 checkpoint needs none)
    if system.kv_cache_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8"]
    if system.async_scheduling:
        argv.append("--async-scheduling")
    if dummy_weights:
        argv += ["--load-format", "dummy"]
    argv += ["--disable-log-requests", *extra]
    return argv, environment


def vllm_server(system: SystemSpec, port: int, log_path: str, host: str = "127.0.0.1", dummy_weights: bool = True,
                extra: tuple[str, ...] = ()) -> ServerProcess:
    """A launcher for vLLM serving the system: start() waits for /health, stop() shuts it down."""
    argv, environment = vllm_command(system, port, host, dummy_weights, extra)
    return ServerProcess(argv, f"http://{host}:{port}", log_path, env={**os.environ, **environment})
