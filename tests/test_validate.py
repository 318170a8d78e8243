"""capsim held to real runs: the silicon sample NVIDIA ships with its kernel database, the
benchmark clients that measured it, host time, and `capsim validate`."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("aiconfigurator_core")

from capsim.capsearch.load.validate import client_of, engine_system, replay  # noqa: E402
from capsim.profiles.errors import ProfileError  # noqa: E402
from capsim.profiles.host_time import host_time, training_rows  # noqa: E402
from capsim.profiles.measurements import read_silicon_sample, silicon_sample_path  # noqa: E402
from capsim.sim import SimulationError, SystemSpec, simulate  # noqa: E402
from capsim.traces import TraceError  # noqa: E402
from capsim.traces.client import ClosedLoop  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return read_silicon_sample()


def test_every_row_is_replayed_or_counted_with_its_reason(sample):
    measurements, skipped = sample
    with open(silicon_sample_path(), encoding="utf-8") as f:
        rows = sum(1 for _ in f) - 1
    assert len(measurements) + sum(skipped.values()) == rows
    assert skipped["disaggregated (separate prefill and decode pools)"] > 0 and skipped["int4 weights"] > 0
    engines = {m.engine for m in measurements}
    assert engines == {"vllm", "sglang", "trtllm"}
    assert {m.quant for m in measurements} == {"bf16", "fp8", "nvfp4", "auto"}  # auto: a MoE checkpoint's own
    assert {m.client for m in measurements} == {"aiperf", "inferencemax"}
    inferencemax = [m for m in measurements if m.client == "inferencemax"]
    assert all((m.isl, m.osl) in {(1024, 1024), (1024, 8192), (8192, 1024)} for m in inferencemax)
    assert {"Llama-3.1-70B", "gpt-oss-120b", "DeepSeek-R1"} <= {m.model for m in inferencemax}


def test_a_file_that_is_not_a_silicon_sample_is_refused(tmp_path, sample):
    bad = tmp_path / "runs.csv"
    bad.write_text("model,ttft\nx,1\n")
    with pytest.raises(ProfileError, match="lacks the columns"):
        read_silicon_sample(bad)
    header = open(silicon_sample_path(), encoding="utf-8").readline()
    damaged = tmp_path / "damaged.csv"
    line = open(silicon_sample_path(), encoding="utf-8").readlines()[1]
    damaged.write_text(header + line.replace(",agg,", ",agg,").replace(line.split(",")[-1], "not-a-number\n"))
    measurements, skipped = read_silicon_sample(damaged)
    assert not measurements and sum(skipped.values()) == 1


def test_the_clients_send_as_their_tools_do():
    aiperf = ClosedLoop.aiperf(8)
    assert (aiperf.requests, aiperf.warmup, aiperf.simulated_requests) == (160, 16, 160)  # the warm-up drains first
    workload = aiperf.workload(1024, 128)
    assert (workload.arrival_s == 0).all() and (workload.prompt_tokens == 1024).all()
    staggered = ClosedLoop(4, 40, warmup=4, start="staggered", start_s=0.5)
    assert staggered.first_sends().tolist() == [0.0, 0.5, 1.0, 1.5]
    assert staggered.measured() == slice(4, 44) and staggered.simulated_requests == 44
    assert ClosedLoop(5, 10, start="ramp", start_s=2.0).first_sends().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    inferencemax = ClosedLoop.inferencemax(16).workload(1024, 8192)
    assert int(0.8 * 1024) <= inferencemax.prompt_tokens.min() and inferencemax.prompt_tokens.max() <= 1024
    assert 0.88 < inferencemax.output_tokens.mean() / 8192 < 0.92  # lengths uniform in 0.8 L .. L: the mean is 0.9 L
    reused = ClosedLoop.aiperf(
        4, dataset_entries=10
    )  # the warm-up fills the prefix cache: it runs, and is not measured
    assert reused.simulated_requests == 88 and reused.measured() == slice(8, 88)
    groups = reused.workload(256, 8).table.column("prefix_group").to_numpy()
    assert groups[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    for bad in (
        dict(start="staggered"),
        dict(dataset_entries=0),
        dict(start="together", start_s=1.0),
        dict(length_ratio=0.0),
        dict(start="ramp!", start_s=1),
    ):
        with pytest.raises(TraceError):
            ClosedLoop(4, 8, **bad)


def test_host_time_is_added_to_kernel_times_and_named():
    with_host = SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="vllm", scheduler="vllm_v1")
    without = SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="vllm", scheduler="vllm_v1", host_time=False)
    vllm = host_time("vllm")
    a, b = with_host.latency_model(), without.latency_model()
    assert "vLLM host time" in a.source_words and "host time" not in b.source_words
    for features in [(1, 0, 0, 0, 1, 100), (2048, 1, 2048**2, 0, 0, 0), (600, 1, 512**2, 0, 88, 90000)]:
        sequences = features[1] + features[4]
        assert a(*features) == pytest.approx(b(*features) + vllm.step_s + vllm.per_sequence_s * sequences, rel=1e-12)
    roofline = SystemSpec(model="Mistral-7B", hardware="A100-PCIe")  # no kernel data: the roofline calibrated to vLLM's
    assert roofline.latency_model().source == "analytic" and "vLLM host time" in roofline.latency_model().source_words
    # measured profiles hold their host time already: none is added
    measured = SystemSpec(model="tiny", hardware="cpu", engine="reference")
    assert "host time" not in measured.latency_model().source_words


def test_the_frontend_takes_one_request_at_a_time():
    """Four users send at once: the API server hands their requests to the engine one frontend
    time apart, so the k-th cannot have its first token before k frontend times."""
    system = SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="sglang")
    assert system.scheduler == "sarathi"  # the class default; the CLI picks the engine's own policy
    workload = ClosedLoop.aiperf(4).workload(512, 16)
    on = simulate(
        SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="sglang", scheduler="sglang"),
        workload,
        max_concurrency=4,
    )
    off = simulate(
        SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="sglang", scheduler="sglang", host_time=False),
        workload,
        max_concurrency=4,
    )
    frontend = host_time("sglang").frontend_s
    assert frontend > 0 and on.info["frontend_s"] == frontend and off.info["frontend_s"] == 0.0
    first_wave = np.sort(on.column("first_token_s")[:4])
    assert (first_wave >= frontend * np.arange(1, 5) - 1e-6).all()
    assert np.ptp(off.column("first_token_s")[:4]) < frontend  # without a frontend they share their prefill batches
    assert (
        simulate(
            SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM", engine="sglang", scheduler="sglang"),
            workload,
            max_concurrency=4,
            frontend_s=0.0,
        ).info["frontend_s"]
        == 0.0
    )


@pytest.mark.parametrize("engine, model", [("vllm", "Qwen3-32B"), ("sglang", "Qwen3-32B"), ("trtllm", "Llama-3.1-8B")])
def test_replays_of_the_training_runs_meet_their_tpot(sample, engine, model):
    """The runs the host time was fitted on, a few of each engine at low and high load: TPOT
    within 12% of the real engine's (the validation page gives the whole set)."""
    measurements, _ = sample
    chosen = [
        m
        for m in measurements
        if m.engine == engine
        and m.model == model
        and m.quant == "bf16"
        and m.hardware == "H100-SXM"
        and m.isl == 1024
        and m.osl == 512
        and m.tp in (2, 4)
    ]
    assert chosen and all(m.id in training_rows() for m in chosen)
    errors = [replay(m).tpot_error for m in chosen]
    assert all(e is not None for e in errors)
    assert np.median(np.abs(errors)) < 0.12, errors


def test_each_engine_replays_with_its_own_batching(sample):
    measurements, _ = sample
    for engine, policy in (("vllm", "vllm_v1"), ("sglang", "sglang"), ("trtllm", "trtllm")):
        m = next(m for m in measurements if m.engine == engine and m.client == "aiperf")
        system = engine_system(m)
        assert system.scheduler == policy and system.host_time
        assert client_of(m).tool == "aiperf"
    vllm_h100 = engine_system(
        next(m for m in measurements if m.engine == "vllm" and m.hardware == "H100-SXM" and m.client == "aiperf")
    )
    assert (vllm_h100.token_budget, vllm_h100.max_batch_size) == (8192, 1024)  # `vllm serve` on a 70 GiB+ GPU


def test_fp8_halves_the_weights_and_the_kv_cache_where_asked():
    base = SystemSpec(model="Llama-3.1-70B", hardware="H200", tp=2, engine="vllm", scheduler="vllm_v1")
    fp8 = SystemSpec(model="Llama-3.1-70B", hardware="H200", tp=2, engine="vllm", scheduler="vllm_v1", quant="fp8")
    fp8_kv = SystemSpec(
        model="Llama-3.1-70B",
        hardware="H200",
        tp=2,
        engine="vllm",
        scheduler="vllm_v1",
        quant="fp8",
        kv_cache_dtype="fp8",
    )
    blocks = [s.scheduler_config().num_blocks for s in (base, fp8, fp8_kv)]
    assert blocks[0] < blocks[1] < blocks[2] and blocks[2] > 1.9 * blocks[1]
    assert fp8.model_spec.name == "Llama-3.1-70B-FP8" and fp8_kv.model_spec.kv_dtype_bytes == 1
    assert "FP8 weights" in fp8.latency_model().source_words
    decode = (64, 0, 0, 0, 64, 64 * 2000)
    assert fp8.latency_model()(*decode) < base.latency_model()(*decode)  # half the weight bytes to read a step
    # The roofline (GPUs without kernel data): one byte a weight and FP8 GEMM rates, 16-bit activations
    pcie = [SystemSpec(model="Llama-3.1-8B", hardware="H100-PCIe", quant=q).latency_model() for q in ("auto", "fp8")]
    assert pcie[0].source == pcie[1].source == "analytic"
    assert 0.5 < pcie[1](*decode) / pcie[0](*decode) < 0.95
    assert 0.5 < pcie[1](2048, 1, 2048**2, 0, 0, 0) / pcie[0](2048, 1, 2048**2, 0, 0, 0) < 0.95
    with pytest.raises(SimulationError, match="no FP8 tensor cores"):
        SystemSpec(model="Llama-3.1-8B", hardware="A100-80GB-SXM", quant="fp8")
    with pytest.raises(SimulationError, match="unknown quant"):
        SystemSpec(model="Llama-3.1-8B", quant="int3")
    from capsim.sim.system import precision_words

    assert precision_words(fp8_kv.to_dict()) == "FP8 weights, FP8 KV cache" and precision_words(base.to_dict()) == ""
    from capsim.real.vllm import vllm_command

    argv, _ = vllm_command(fp8_kv)
    assert "--quantization fp8" in " ".join(argv) and "--kv-cache-dtype fp8" in " ".join(argv)
    with pytest.raises(SimulationError, match="reference engine runs the model's own precision"):
        SystemSpec(model="tiny", hardware="H100-SXM", engine="reference", quant="fp8")


def run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "capsim.capsearch.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_validate_writes_rows_groups_and_the_plot(tmp_path):
    done = run(
        "validate",
        "--engine",
        "vllm",
        "--model",
        "Qwen3-32B",
        "--limit",
        "4",
        "-o",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "left out" in done.stdout and "vLLM host time" in done.stdout
    document = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert len(document["rows"]) == 4 and document["skipped"]["disaggregated (separate prefill and decode pools)"] > 0
    assert all(row["simulated_tpot_ms"] > 0 and row["fitted_on"] for row in document["rows"])
    assert (tmp_path / "out" / "validation.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "validation.csv").read_text().startswith("id,engine,")
    lines = open(silicon_sample_path(), encoding="utf-8").readlines()
    (tmp_path / "disagg.csv").write_text(lines[0] + "".join(line for line in lines if ",disagg," in line))
    none = run("validate", "--measurements", str(tmp_path / "disagg.csv"), "-o", str(tmp_path / "none"), cwd=tmp_path)
    assert none.returncode == 2 and "no run capsim can replay" in none.stderr and "disaggregated" in none.stderr
    bad = run("validate", "--engine", "tgi", "-o", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--engine tgi" in bad.stderr
    assert not (tmp_path / "bad").exists()
    folder = run("validate", "--measurements", str(tmp_path / "out"), "-o", str(tmp_path / "f"), cwd=tmp_path)
    assert folder.returncode == 2 and "simulate --against" in folder.stderr, folder.stderr


def test_repeated_prompts_are_served_from_the_prefix_cache(sample):
    """aiperf's prompt reuse, asked for: the engine computes each prompt once, so the TTFT falls."""
    measurements, _ = sample
    m = next(
        m
        for m in measurements
        if m.engine == "vllm" and m.model == "Qwen3-32B" and m.concurrency >= 64 and m.isl == 1024 and m.tp == 4
    )
    fresh, reused = replay(m), replay(m, client=client_of(m, dataset_entries=100))
    assert reused.ttft_ms < 0.7 * fresh.ttft_ms


def test_a_config_sets_precision_and_host_time(tmp_path):
    from capsim.capsearch.experiments.config import ConfigError, load_config

    text = """schedulers: [{name: s, scheduler: sarathi, batch_size: 128, chunk_size: 512}]
traces: [{name: chat, trace_file: chat, num_requests: 64}]
parallel_spec: [{name: tp_1, tp_dimension: 1, pp_dimension: 1}]
models: [{name: llama, identifier: Llama-3.1-8B, quant: fp8}]
hardware: H100
kv_cache_dtype: fp8
host_time: false
"""
    path = tmp_path / "c.yml"
    path.write_text(text)
    (job,) = load_config(path).jobs
    assert (job.system.quant, job.system.kv_cache_dtype, job.system.host_time) == ("fp8", "fp8", False)
    path.write_text(text.replace("host_time: false", "host_time: sometimes"))
    with pytest.raises(ConfigError, match="host_time must be true or false"):
        load_config(path)
    path.write_text(text.replace("H100", "A100-SXM"))
    with pytest.raises(ConfigError, match="no FP8 tensor cores"):
        load_config(path)
