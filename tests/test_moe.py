"""Mixtures of experts: the catalog from NVIDIA's model configs, expert and attention-data
parallelism, MLA and 4-bit precisions, priced from the kernel database and simulated."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from capsim.capsearch.cli.main import main as cli
from capsim.profiles.batch import BatchShape
from capsim.profiles.errors import ProfileError
from capsim.profiles.hardware import GIB, get_hardware
from capsim.profiles.memory import kv_capacity, weight_bytes_per_gpu
from capsim.profiles.models import MODELS, get_model, load_model_file
from capsim.sim import SimulationError, SystemSpec, simulate
from capsim.traces.workload import Workload

kernel_db = pytest.importorskip("capsim.profiles.kernel_db")
try:
    import aiconfigurator_core  # noqa: F401
except ImportError:
    pytest.skip("the kernel-db extra is not installed", allow_module_level=True)


def test_the_shipped_catalog_is_the_installed_package_s():
    """profiles/data/model_catalog.json holds every config the package ships (scripts/make_model_catalog.py)."""
    models, aliases, unread = kernel_db.package_catalog()
    for spec in models:
        assert MODELS[spec.name] == spec, spec.name
    for hf_id, name in aliases.items():
        assert get_model(hf_id).name == name
    assert len(models) + len(unread) + sum(1 for n in aliases.values() if n not in {m.name for m in models}) >= 80
    assert all("lacks" in why for why in unread.values())  # read or named with the reason


def test_catalog_fields_agree_with_the_package_s_own_reading():
    from aiconfigurator_core.sdk.utils import get_model_config_from_model_path

    checked, mismatches = 0, []
    for hf_id, name in kernel_db.package_catalog()[1].items():
        spec = get_model(name)
        if not spec.hf_id or hf_id not in __import__("aiconfigurator_core.sdk.common").sdk.common.DefaultHFModels:
            continue
        theirs = get_model_config_from_model_path(hf_id)
        if theirs["num_experts"] and theirs["topk"]:  # (the package reads Kimi-K3's top-k as 0)
            mismatches += [name] * ((spec.experts, spec.active_experts) != (theirs["num_experts"], theirs["topk"]))
            mismatches += [name] * (spec.expert_ffn != theirs["moe_inter_size"])
        mismatches += [name] * ((spec.hidden, spec.vocab) != (theirs["hidden_size"], theirs["vocab"]))
        checked += 1
    assert checked >= 40 and not mismatches


@pytest.mark.parametrize(
    "name, params_b, active_b",
    [("gpt-oss-120b", 116.8, 5.7), ("DeepSeek-R1", 670.9, 37.4), ("Qwen3-235B-A22B-FP8", 235.0, 22.1)],
)
def test_parameter_counts_match_the_published_ones(name, params_b, active_b):
    m = get_model(name)
    assert m.params / 1e9 == pytest.approx(params_b, abs=0.1) and m.active_params / 1e9 == pytest.approx(active_b, 0.01)


def test_precision_and_attention_come_from_the_checkpoint():
    oss, r1 = get_model("openai/gpt-oss-120b"), get_model("DeepSeek-R1")
    assert (oss.dtype, oss.moe_dtype, oss.sliding_window, oss.sliding_layers) == ("bfloat16", "mxfp4", 128, 18)
    assert oss.kv_bytes_per_token == 18 * 2 * 8 * 64 * 2  # the windowed half keeps 128 tokens, not a token's cost
    assert (r1.dtype, r1.is_mla, r1.kv_bytes_per_token) == ("fp8", True, 61 * (512 + 64) * 2)
    assert get_model("nvidia/Qwen3-235B-A22B-NVFP4").dtype == "nvfp4"


def test_a_user_moe_config_json_is_read_and_priced(tmp_path):
    source = kernel_db.package_model_files()["Qwen/Qwen3-30B-A3B"]
    folder = tmp_path / "my-moe"
    folder.mkdir()
    shutil.copy(source, folder / "config.json")
    spec = load_model_file(folder / "config.json")
    assert (spec.experts, spec.active_experts, spec.expert_ffn) == (128, 8, 768)
    database = kernel_db.KernelDatabase(spec, "H100-SXM", "vllm", tp=2)
    shape = BatchShape(decode_contexts=(1024,) * 32)
    assert database.latency(shape) == pytest.approx(database.package_decode_s(32, 1024), rel=1e-3)


@pytest.mark.parametrize(
    "name, hardware, engine, tp, ep, dp",
    [
        ("gpt-oss-120b", "H200", "vllm", 8, 1, 1),
        ("gpt-oss-120b", "H200", "vllm", 1, 8, 8),
        ("Qwen3-235B-A22B-FP8", "H200", "vllm", 4, 4, 1),
        ("DeepSeek-R1", "B200", "trtllm", 8, 1, 1),
        ("DeepSeek-R1", "H200", "sglang", 8, 8, 1),
    ],
)
def test_moe_steps_agree_with_the_package_s_own_estimates(name, hardware, engine, tp, ep, dp):
    """Composed per batch as dense steps are; where the package prices a shape itself, within 1%."""
    db = kernel_db.KernelDatabase(get_model(name), get_hardware(hardware).name, engine, None, tp, 1, ep, dp)
    for batch, prompt in ((1, 1024), (4, 2048)):
        shape = BatchShape(prefill_chunks=(prompt,) * batch, prefill_contexts=(0,) * batch)
        assert db.latency(shape) == pytest.approx(db.package_prefill_s(batch, prompt), rel=0.01)
    for batch, kv in ((1, 1024), (64, 2048), (256, 1024)):
        shape = BatchShape(decode_contexts=(kv,) * batch)
        assert db.latency(shape) == pytest.approx(db.package_decode_s(batch, kv), rel=0.01)


def test_expert_parallel_memory_spreads_the_experts_only():
    r1 = get_model("DeepSeek-R1")
    tp8 = weight_bytes_per_gpu(r1, tp=8, pp=1)
    dp8 = weight_bytes_per_gpu(r1, tp=1, pp=1, dp=8)
    assert tp8 < dp8 < tp8 + (r1.weight_bytes - r1.expert_weight_bytes)  # attention is whole on every DP rank
    assert dp8 == pytest.approx((r1.weight_bytes - r1.expert_weight_bytes) + r1.expert_weight_bytes / 8)
    with pytest.raises(ProfileError, match=r"does not fit on H200 with TP=1 PP=1: .* GiB more per GPU .* Try TP=8"):
        kv_capacity(r1, get_hardware("H200"), tp=1)
    assert kv_capacity(r1, get_hardware("H200"), tp=1, dp=8).num_blocks > 0
    assert kv_capacity(r1, get_hardware("H200"), tp=8).weight_bytes_per_gpu < 90 * GIB


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model="Llama-3.1-8B", ep=2, tp=2), "dense"),
        (dict(tp=4, ep=3), "must divide"),
        (dict(tp=8, ep=4, engine="vllm"), "--ep 1 or --ep 8"),
        (dict(tp=1, dp_attention=8, ep=8, engine="reference"), "reference"),
        (dict(quant="nvfp4", hardware="H200"), "FP4"),
        (dict(tp=2, dp_attention=2, pp=2), "pipeline"),
    ],
)
def test_layouts_the_engines_refuse_are_refused(overrides, message):
    base = dict(model="gpt-oss-120b", hardware="H200", tp=8, engine="vllm")
    with pytest.raises(SimulationError, match=message):
        SystemSpec(**(base | overrides))


def test_bad_moe_options_exit_2_with_one_line():
    runner = CliRunner()
    for args, words in (
        (["--model", "gpt-oss-120b", "--tp", "2", "--ep", "3"], "EP=3 must divide"),
        (["--model", "Mistral-7B", "--ep", "2", "--tp", "2"], "dense"),
        (["--model", "gpt-oss-120b", "--tp", "2", "--ep", "4", "--enable-expert-parallel"], "drop --ep 4"),
        (["--model", "gpt-oss-120b", "--kv-cache-dtype", "nvfp4"], "nvfp4"),
    ):
        result = runner.invoke(cli, ["simulate", *args, "--hardware", "H200", "--qps", "1", "-n", "8"])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output


def test_attention_dp_ranks_schedule_their_own_requests():
    """DP8 x EP8 on 8 GPUs: each rank batches its own requests, stepped at the kernel database's
    balanced-rank price; the deployment counts 8 GPUs; the same seed gives the same result."""
    system = SystemSpec(model="gpt-oss-120b", hardware="H200", tp=1, dp_attention=8, ep=8, engine="vllm")
    assert system.gpus_per_replica == 8 and system.parallel_label == "tp_1_pp_1_dp_8_ep_8"
    rng = np.random.default_rng(1)
    workload = Workload.from_arrays(
        rng.integers(64, 1024, 256), rng.integers(8, 128, 256), np.cumsum(rng.exponential(1 / 8, 256))
    )
    first, second = simulate(system, workload), simulate(system, workload)
    assert np.array_equal(first.ttft(), second.ttft())
    assert "TP1 x DP8 attention, EP8" in first.info["latency_source_words"]
    batches = first.batches
    assert len(np.unique(np.asarray(batches.column("engine")))) == 8  # every rank stepped
    assert first.finished().all()


def test_silicon_sample_moe_rows_are_replayed_with_their_layout():
    from capsim.profiles.measurements import read_silicon_sample

    rows, skipped = read_silicon_sample()
    moe = [m for m in rows if get_model(m.model).is_moe]
    assert {m.model for m in moe} >= {"gpt-oss-120b", "Qwen3-235B-A22B-FP8", "DeepSeek-R1"}
    assert any(m.dp > 1 and m.ep > 1 for m in moe)
    assert all(m.dp >= 1 for m in rows)  # some rows write attention_dp_size 0 for one rank
    assert "mixture of experts" not in skipped


def test_catalog_json_is_valid():
    from importlib import resources

    data = json.loads(resources.files("capsim.profiles").joinpath("data", "model_catalog.json").read_text())
    assert data["provenance"]["package"] == "aiconfigurator-core" and len(data["models"]) >= 70


def test_the_planner_weighs_moe_layouts(tmp_path):
    import csv

    out = tmp_path / "plan"
    args = ["plan", "--model", "gpt-oss-120b", "--hardware", "H200", "--target-qps", "4", "--tp", "2"]
    args += ["--scheduler", "vllm_v1", "--chunk-size", "8192", "--max-batch-size", "64", "-n", "400"]
    args += ["--ttft-metric", "ttft", "-o", str(out)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(open(out / "plan.csv")))
    layouts = {(r["tp"], r["dp_attention"], r["ep"]) for r in rows}
    assert layouts == {("2", "1", "1"), ("2", "1", "2"), ("1", "2", "2")}
    assert all(r["gpus_per_replica"] == "2" for r in rows)
    assert any(r["status"] == "recommended" for r in rows)
    dense = CliRunner().invoke(cli, ["plan", "--model", "Llama-3.1-8B", "--target-qps", "4", "--moe-layout", "dp_ep"])
    assert dense.exit_code == 2 and "dense" in dense.output


def test_config_files_take_moe_layouts_and_speculation(tmp_path):
    from capsim.capsearch.errors import ConfigError
    from capsim.capsearch.experiments.config import load_config

    text = """
hardware: H200
engine: vllm
spec_tokens: 3
acceptance: [0.8, 0.6, 0.4]
schedulers:
  - {name: v1, scheduler: vllm_v1, batch_size: 128, chunk_size: 8192}
traces:
  - {name: chat, trace_file: chat, num_requests: 512, max_seq_len: 8192}
parallel_spec:
  - {name: dp8ep8, tp_dimension: 1, attention_dp_dimension: 8, ep_dimension: 8}
models:
  - {name: gpt-oss-120b, identifier: openai/gpt-oss-120b}
"""
    path = tmp_path / "moe.yml"
    path.write_text(text)
    (job,) = load_config(path).jobs
    assert (job.system.tp, job.system.dp_attention, job.system.ep) == (1, 8, 8)
    assert (job.system.spec_tokens, job.system.acceptance) == (3, (0.8, 0.6, 0.4))
    path.write_text(text.replace("ep_dimension: 8", "ep_dimension: 3"))
    with pytest.raises(ConfigError, match="EP=3 must divide"):
        load_config(path)


def test_disaggregated_pools_run_wide_ep_decode():
    from capsim.sim.disagg import disaggregate

    base = SystemSpec(model="gpt-oss-120b", hardware="H200", tp=2, engine="vllm")
    system = disaggregate(base, "1P1D", decode_tp=1, decode_dp_attention=4, decode_ep=4)
    assert system.gpus == 2 + 4 and system.parallel_label == "1P1D_tp2_tp1_dp4_ep4"
    assert "decode 1 x H200 TP1 x DP4 attention, EP4" in system.words()
    rng = np.random.default_rng(2)
    workload = Workload.from_arrays(
        rng.integers(64, 1024, 120), rng.integers(8, 128, 120), np.cumsum(rng.exponential(1 / 4, 120))
    )
    result = simulate(system, workload)
    assert result.finished().all()
    replicas = np.asarray(result.batches.column("replica"))
    assert set(np.unique(replicas)) == {0, 1, 2, 3, 4}  # the prefill instance, then the four decode ranks
    assert "an attention-DP rank each" in result.info["disagg"]["instances"]
    with pytest.raises(SimulationError, match="speculative decoding is not modelled in disaggregated"):
        disaggregate(dataclasses.replace(base, spec_tokens=2, acceptance=(0.7,)), "1P1D")


def test_the_disaggregated_planner_tries_wide_ep_decode_pools():
    from capsim.capsearch.plan.disagg import splits

    base = SystemSpec(model="gpt-oss-120b", hardware="H200", engine="vllm")
    words = [s.words for s in splits(base, "H200", 4, [1, 2], 2048, [128])]
    assert "1P1D H200 TP2/TP1 x DP2 EP2, decode batch 128" in words
    dense = [s.words for s in splits(SystemSpec(model="Llama-3.1-8B"), "H100-SXM", 4, [1, 2], 2048, [128])]
    assert not any("DP" in w for w in dense)
