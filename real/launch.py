"""How to run a capsim deployment on a real engine: the launch command for vLLM, SGLang or
TensorRT-LLM (`trtllm-serve`), from the same SystemSpec, and Kubernetes manifests for it.

Each engine gets what was simulated, in its own flags: the parallel layout (TP, PP, attention DP,
EP), the batch limit, the token budget, the max model length, the KV block size, memory, the
weight and KV-cache precision, prefix caching and speculative decoding. Where the simulation
sized the KV cache itself (SGLang, TRT-LLM), the engine is given the same number of KV tokens.
What an engine cannot run is refused with the reason, never dropped.

Flags as of vLLM 0.32 (checked by parsing the command with vLLM's own parser, tests/test_launch.py),
SGLang 0.5.23 (`--attn-dp-size` replaced `--dp-size --enable-dp-attention`; checked with
SGLang's ServerArgs parser, scripts/check_sglang_flags.py) and TensorRT-LLM 1.2's trtllm-serve
(PyTorch backend; the LLM-API options a flag does not cover go in a YAML given by --config).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import yaml

from capsim.profiles.errors import ProfileError
from capsim.profiles.models import get_model
from capsim.real.vllm import check_mtp_layers, hf_model_id, vllm_command
from capsim.sim import POLICIES, SystemSpec

ENGINE_VERSIONS = {"vllm": "vLLM 0.32", "sglang": "SGLang 0.5.23", "trtllm": "TensorRT-LLM 1.2"}
IMAGES = {  # the engines' published serving images, at the versions the flags are written for
    "vllm": "vllm/vllm-openai:v0.32.0",
    "sglang": "lmsysorg/sglang:v0.5.23",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:1.2.0",
}
TRTLLM_OPTIONS = "capsim-trtllm.yaml"  # the LLM-API options file trtllm-serve reads (--config)
SHM_BYTES = 16 << 30  # /dev/shm for NCCL between a pod's GPUs


@dataclass
class Launch:
    """One replica's launch: argv, environment, files it reads (name -> text), and notes."""

    engine: str
    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """A shell script that writes the files and runs the engine."""
        lines = [f"# {note}" for note in self.notes]
        for name, text in self.files.items():
            lines += [f"cat > {shlex.quote(name)} <<'CAPSIM_EOF'", text.rstrip("\n"), "CAPSIM_EOF"]
        lines.append(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.environment.items()), shlex.join(self.argv)]))
        return "\n".join(lines) + "\n"


def launch(system: SystemSpec, port: int = 8000, host: str = "0.0.0.0", dummy_weights: bool = False) -> Launch:
    """The launch of one replica of the system on its engine (system.engine)."""
    if system.replicas < 1:
        raise ProfileError("a deployment has at least one replica")
    one = SystemSpec(**{**system.to_dict(), "replicas": 1})
    if system.engine == "vllm":
        argv, environment = vllm_command(one, port, host, dummy_weights)
        notes = [f"written for vLLM {'0.8-0.10 (the V0 engine)' if one.scheduler == 'vllm_v0' else '0.11-0.32'}"]
        return Launch("vllm", argv, environment, notes=notes)
    if system.engine == "sglang":
        return sglang_launch(one, port, host, dummy_weights)
    if system.engine == "trtllm":
        return trtllm_launch(one, port, host, dummy_weights)
    raise ProfileError(
        f"--engine {system.engine}: capsim's own engine serves with `capsim serve`; launch commands are for vllm, "
        "sglang and trtllm"
    )


def _own_scheduler(system: SystemSpec, engine: str) -> None:
    if system.scheduler != engine:
        raise ProfileError(
            f"{ENGINE_VERSIONS[engine]} runs its own batching, which capsim simulates as --scheduler {engine}; "
            f"{system.scheduler} is not among its options: simulate --scheduler {engine}, or launch on vLLM"
        )


def _budget(system: SystemSpec) -> int:
    """The token budget simulated: the system's, else its policy's default."""
    return system.token_budget or POLICIES[system.scheduler].default_budget or system.model_len


def _kv_tokens(system: SystemSpec) -> int:
    """The KV tokens the simulation gave one engine (the attention-DP ranks hold a share each)."""
    return system.scheduler_config().num_blocks * system.block_size


def _load_time_quant(system: SystemSpec, engine: str) -> str | None:
    """'fp8' when the weights are quantized at load time; an NVFP4 that is not the checkpoint's is refused."""
    model = get_model(system.model)
    if system.quant in ("auto", model.dtype) or (system.quant == "bf16" and model.dtype == "bfloat16"):
        return None
    if system.quant == "fp8" and engine != "trtllm":
        return "fp8"
    raise ProfileError(
        f"{ENGINE_VERSIONS[engine]} does not quantize {model.name} to {system.quant} at load time: serve a "
        f"{system.quant} checkpoint (e.g. nvidia/...-{system.quant.upper()}) as the model, with --quant auto"
    )


def _draft_refused(system: SystemSpec, engine: str) -> None:
    check_mtp_layers(system)
    if system.spec_tokens and system.spec_method == "draft":
        raise ProfileError(
            f"a draft model's launch needs its name: add it to {ENGINE_VERSIONS[engine]}'s speculative options "
            "yourself, or simulate --spec-method mtp or ngram"
        )


def sglang_launch(system: SystemSpec, port: int, host: str, dummy_weights: bool) -> Launch:
    """`python -m sglang.launch_server`: TP counts every GPU of the replica, attention DP splits
    it (--attn-dp-size), EP spreads the experts; prefill first with chunked prefill, as simulated."""
    _own_scheduler(system, "sglang")
    _draft_refused(system, "sglang")
    argv = ["python3", "-m", "sglang.launch_server", "--model-path", hf_model_id(system.model)]
    argv += ["--host", host, "--port", str(port), "--tp-size", str(system.tp * system.dp_attention)]
    if system.dp_attention > 1:
        argv += ["--attn-dp-size", str(system.dp_attention)]
    if system.ep > 1:
        argv += ["--ep-size", str(system.ep)]
    if system.pp > 1:
        argv += ["--pp-size", str(system.pp)]
    argv += [
        "--max-running-requests",
        str(system.max_batch_size),
        "--chunked-prefill-size",
        str(_budget(system)),
        "--context-length",
        str(system.model_len),
        "--page-size",
        str(system.block_size),
        "--max-total-tokens",
        str(_kv_tokens(system)),  # a bound on each rank's pool, as simulated (an attention-DP rank has its own)
        "--mem-fraction-static",
        f"{system.memory_utilization:.3g}",
    ]
    if get_model(system.model).dtype == "bfloat16":
        argv += ["--dtype", "bfloat16"]
    if _load_time_quant(system, "sglang"):
        argv += ["--quantization", "fp8"]
    if system.kv_cache_dtype == "fp8":
        argv += ["--kv-cache-dtype", "fp8_e4m3"]
    if not system.prefix_caching:
        argv.append("--disable-radix-cache")
    if system.spec_tokens:
        k = system.spec_tokens
        algorithm = {"mtp": "NEXTN", "ngram": "NGRAM"}[system.spec_method]
        steps = ["--speculative-num-steps", str(k), "--speculative-eagle-topk", "1"] if algorithm == "NEXTN" else []
        argv += ["--speculative-algorithm", algorithm, *steps, "--speculative-num-draft-tokens", str(k + 1)]
    if dummy_weights:
        argv += ["--load-format", "dummy"]
    return Launch("sglang", argv, notes=[f"written for {ENGINE_VERSIONS['sglang']}"])


def trtllm_launch(system: SystemSpec, port: int, host: str, dummy_weights: bool) -> Launch:
    """`trtllm-serve` (PyTorch backend): in-flight batching with chunked context off and the
    GUARANTEED_NO_EVICT capacity scheduler (its defaults, as simulated); attention DP runs every
    rank's attention at TP 1 (enable_attention_dp), so TP x DP GPUs with --tp_size of all."""
    _own_scheduler(system, "trtllm")
    _draft_refused(system, "trtllm")
    _load_time_quant(system, "trtllm")
    if system.dp_attention > 1 and system.tp > 1:
        raise ProfileError(
            f"TensorRT-LLM's attention DP runs attention at TP 1 on every GPU: use --tp 1 --dp-attention "
            f"{system.tp * system.dp_attention}"
        )
    kv_cache = {
        "enable_block_reuse": system.prefix_caching,
        "tokens_per_block": system.block_size,
        "max_tokens": _kv_tokens(system),
    }
    if system.kv_cache_dtype == "fp8":
        kv_cache["dtype"] = "fp8"
    options: dict = {"kv_cache_config": kv_cache}
    if system.dp_attention > 1:
        options["enable_attention_dp"] = True
    if system.spec_tokens:
        options["speculative_config"] = (
            {"decoding_type": "MTP", "num_nextn_predict_layers": system.spec_tokens}
            if system.spec_method == "mtp"
            else {"decoding_type": "NGram", "max_draft_len": system.spec_tokens}
        )
    if dummy_weights:
        options["load_format"] = "dummy"
    argv = ["trtllm-serve", hf_model_id(system.model), "--host", host, "--port", str(port), "--backend", "pytorch"]
    argv += ["--tp_size", str(system.tp * system.dp_attention), "--pp_size", str(system.pp)]
    if system.ep > 1:
        argv += ["--ep_size", str(system.ep)]
    argv += [
        "--max_batch_size",
        str(system.max_batch_size),
        "--max_num_tokens",
        str(_budget(system)),
        "--max_seq_len",
        str(system.model_len),
        "--kv_cache_free_gpu_memory_fraction",
        f"{system.memory_utilization:.3g}",
        "--config",
        TRTLLM_OPTIONS,
    ]
    text = yaml.dump(options, Dumper=_PlainDumper, sort_keys=False)
    return Launch(
        "trtllm", argv, files={TRTLLM_OPTIONS: text}, notes=[f"written for {ENGINE_VERSIONS['trtllm']}'s trtllm-serve"]
    )


# --- Kubernetes -------------------------------------------------------------------------------


def _name(system: SystemSpec) -> str:
    """A DNS-1123 name for the deployment: capsim-<model>-<engine>."""
    raw = f"capsim-{get_model(system.model).name}-{system.engine}".lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in raw)
    return "-".join(part for part in cleaned.split("-") if part)[:63].rstrip("-")


def kubernetes_manifests(system: SystemSpec, port: int = 8000, dummy_weights: bool = False) -> list[dict]:
    """A Deployment of `system.replicas` pods, each one replica with its GPUs (TP x PP x DP), and
    a Service in front (a ConfigMap too for TensorRT-LLM's options file)."""
    run = launch(system, port, "0.0.0.0", dummy_weights)
    name, labels = _name(system), {"app.kubernetes.io/name": _name(system), "app.kubernetes.io/part-of": "capsim"}
    gpus = str(system.gpus_per_replica)
    argv = run.argv
    container = {
        "name": run.engine,
        "image": IMAGES[run.engine],
        "command": argv[:1] if run.engine != "sglang" else argv[:3],
        "args": argv[1:] if run.engine != "sglang" else argv[3:],
        "ports": [{"name": "http", "containerPort": port}],
        "env": [{"name": k, "value": v} for k, v in run.environment.items()]
        + [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}}],
        "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 180,  # weights load and graphs capture: up to 30 minutes
        },
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    volumes = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_BYTES >> 30}Gi"}}]
    manifests = []
    if run.files:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-options", "labels": labels},
                "data": run.files,
            }
        )
        container["workingDir"] = "/capsim"
        container["volumeMounts"].append({"name": "options", "mountPath": "/capsim"})
        volumes.append({"name": "options", "configMap": {"name": f"{name}-options"}})
    manifests.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": system.replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], "volumes": volumes},
                },
            },
        }
    )
    manifests.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
        }
    )
    return manifests


def llmd_values(system: SystemSpec, dummy_weights: bool = False) -> dict:
    """Values for llm-d's ModelService Helm chart (llm-d-modelservice): the decode pods run
    `vllm serve` (modelCommand vllmServe) with the system's flags; no prefill pool (aggregated)."""
    if system.engine != "vllm":
        raise ProfileError("llm-d's ModelService runs vLLM: use --engine vllm, or the plain Kubernetes manifest")
    run = launch(system, 8000, "0.0.0.0", dummy_weights)
    argv = run.argv[3:]  # vllm serve <model> ...: the chart gives the model, host and port
    flags = []
    skip = {"--host", "--port"}
    index = 0
    while index < len(argv):
        if argv[index] in skip:
            index += 2
            continue
        flags.append(argv[index])
        index += 1
    gpus = str(system.gpus_per_replica)
    model = hf_model_id(system.model)
    return {
        "multinode": False,
        "modelArtifacts": {"name": model, "uri": f"hf://{model}"},
        "routing": {"servicePort": 8000},
        "decode": {
            "create": True,
            "replicas": system.replicas,
            "parallelism": {"tensor": system.tp, "data": system.dp_attention},
            "containers": [
                {
                    "name": "vllm",
                    "image": IMAGES["vllm"],
                    "modelCommand": "vllmServe",
                    "args": flags,
                    "env": [{"name": k, "value": v} for k, v in run.environment.items()],
                    "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
                    "mountModelVolume": True,
                }
            ],
        },
        "prefill": {"create": False},
    }


def manifest_text(documents: list[dict]) -> str:
    return yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False)


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases: a manifest a reader (and kubectl) takes as written."""

    def ignore_aliases(self, data) -> bool:
        return True
