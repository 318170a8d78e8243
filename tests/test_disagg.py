"""Disaggregated serving (xPyD): hand-checked timelines, the link's contention, KV conservation,
determinism, and the command line."""

import subprocess
import sys

import numpy as np
import pytest

from capsim.profiles.models import get_model
from capsim.sim import DisaggSpec, SimulationError, SystemSpec, simulate
from capsim.sim.compact import read_compact, write_compact
from capsim.traces import Workload, WorkloadSpec

PREFILL, DECODE = 0.1, 0.01  # seconds a batch with a prompt in it, and one with decodes only
KV_BYTES = get_model("Llama-3.1-8B").kv_bytes_per_token


def near(values):
    """Simulated times are kept in whole microseconds."""
    return pytest.approx(values, abs=1e-6)


def two_speeds(tokens, prefill_seqs, *rest):
    return PREFILL if prefill_seqs else DECODE


def deployment(prefills=1, decodes=1, link=None, **pools):
    pool = dict(model="Llama-3.1-8B", hardware="H100", scheduler="vllm_v0") | pools
    return DisaggSpec(SystemSpec(replicas=prefills, **pool), SystemSpec(replicas=decodes, **pool), link)


def token_times(result, i):
    values, offsets = result.token_times
    return values[offsets[i] : offsets[i + 1]]


def test_kv_link_seconds_follow_the_catalog():
    system = deployment()
    assert system.kv_link == "nvlink"  # 2 GPUs: one HGX board
    assert system.link().seconds(1000) == pytest.approx(10e-6 + 1000 * KV_BYTES / 450e9)
    wide = deployment(4, 4, tp=2)  # 16 GPUs: past one board, so the NICs, two lanes a transfer
    assert wide.kv_link == "ib" and wide.link().lanes == 2
    assert wide.link().seconds(1000) == pytest.approx(30e-6 + 1000 * KV_BYTES / (2 * 50e9))
    assert KV_BYTES == 2 * 32 * 8 * 128 * 2


def test_two_requests_by_hand():
    """r0 (t=0) and r1 (t=0.05), 1000-token prompts: prefill, move the KV, then decode."""
    system = deployment()
    move = system.link().seconds(1000)
    workload = Workload.from_arrays([1000, 1000], [3, 2], [0.0, 0.05])
    result = simulate(system, workload, batch_seconds=two_speeds)
    assert token_times(result, 0) == near([0.1, 0.1 + move + 0.01, 0.1 + move + 0.02])
    assert token_times(result, 1) == near([0.2, 0.2 + move + 0.01])  # prefilled after r0's batch
    assert result.ttft() == near([0.1, 0.15])
    assert result.tbt() == near([move + 0.01, 0.01, move + 0.01])  # the move is in the second token's gap
    assert list(result.column("replica")) == [1, 1]  # decoded on instance 1, the decode pool's first
    disagg = result.info["disagg"]
    assert disagg["transfers"] == 2 and disagg["transfer_s"]["max"] == near(move)
    assert disagg["kv_blocks_in_use_at_end"] == {"prefill": 0, "decode": 0}
    assert "1P1D" in disagg["words"] and "NVLink" in disagg["kv_link"]


def test_the_frontend_hands_requests_to_the_prefill_pool_one_at_a_time():
    """The engine's host time brings its API server: requests sent together reach the prefill pool
    one frontend time apart (a caller's step function has none)."""
    from capsim.profiles.host_time import host_time

    workload = Workload.from_arrays([200] * 4, [4] * 4, [0.0] * 4)
    result = simulate(deployment(), workload)
    frontend = host_time("vllm").frontend_s
    assert result.info["frontend_s"] == frontend > 0
    assert (np.sort(result.column("first_token_s")) >= frontend * np.arange(1, 5) - 1e-6).all()
    assert simulate(deployment(), workload, batch_seconds=two_speeds).info["frontend_s"] == 0.0


def test_transfers_from_one_prefill_instance_take_turns():
    """Two prompts prefilled in one batch leave for two decode instances: the prefill instance's
    lanes move one KV cache at a time, so the second waits for the first."""
    system = deployment(1, 2)
    move = system.link().seconds(1000)
    result = simulate(system, Workload.from_arrays([1000, 1000], [2, 2], [0.0, 0.0]), batch_seconds=two_speeds)
    assert token_times(result, 0) == near([0.1, 0.1 + move + 0.01])
    assert token_times(result, 1) == near([0.1, 0.1 + 2 * move + 0.01])
    assert sorted(result.column("replica")) == [1, 2]  # one on each decode instance
    assert result.info["disagg"]["link_wait_s"]["max"] == near(move)


def test_a_one_token_request_never_moves():
    result = simulate(deployment(), Workload.from_arrays([500], [1], [0.0]), batch_seconds=two_speeds)
    assert token_times(result, 0) == near([0.1])
    assert result.info["disagg"]["transfers"] == 0 and result.column("replica")[0] == 0


def test_kv_is_conserved_across_pools_under_pressure():
    """A decode pool with little KV: requests queue for it, some are preempted and recomputed
    there; every block comes back, every token is made once, no pool ever holds more than it has."""
    blocks = 600
    system = deployment(2, 1, scheduler="sarathi", num_kv_blocks=blocks)
    spec = WorkloadSpec(trace="chat", num_requests=120, max_total_tokens=4000)
    result = simulate(system, spec.at_qps(20), batch_seconds=two_speeds)
    disagg = result.info["disagg"]
    assert result.finished().all()
    assert disagg["kv_blocks_in_use_at_end"] == {"prefill": 0, "decode": 0}
    assert disagg["transfers"] == int((result.column("output_tokens") > 1).sum())
    assert disagg["decode_queue_s"]["max"] > 0  # the decode pool's KV was the limit
    assert result.column("preemptions").sum() > 0  # and decodes outgrew it: recomputed on the decode instance
    assert (result.column("generated_tokens") == result.column("output_tokens")).all()
    assert (
        np.diff(result.requests.column("token_times").combine_chunks().offsets.to_numpy())
        == result.column("output_tokens")
    ).all()
    used = result.batches.column("kv_blocks_used").to_numpy()
    assert used.max() <= blocks and used.min() >= 0


def test_same_inputs_same_result_and_the_cache_keeps_it(tmp_path):
    system = deployment(2, 3, scheduler="sarathi")
    workload = WorkloadSpec(trace="arxiv", num_requests=200).at_qps(4)
    first, second = simulate(system, workload), simulate(system, workload)
    assert first.requests.equals(second.requests) and first.batches.equals(second.batches)
    write_compact(first, tmp_path / "trial")
    assert read_compact(tmp_path / "trial").requests.equals(first.requests)
    assert first.info["extrapolation"] is None and "kernel database" in first.info["latency_source_words"]


def test_pools_may_differ_in_gpu_and_tp():
    system = DisaggSpec(
        SystemSpec(model="Llama-3.1-8B", hardware="H200", replicas=1),
        SystemSpec(model="Llama-3.1-8B", hardware="H100", tp=2, replicas=2),
    )
    assert system.kv_link == "ib" and system.gpus == 5 and system.link().lanes == 1
    result = simulate(system, WorkloadSpec(trace="chat", num_requests=64).at_qps(2))
    assert result.finished().all()
    assert result.info["system"]["hardware"] == "H200 (prefill), H100-SXM (decode)"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: deployment(link="nvlink", tp=8), "NVLink domain"),
        (
            lambda: DisaggSpec(
                SystemSpec(model="Llama-3.1-8B", hardware="H200"),
                SystemSpec(model="Llama-3.1-8B", hardware="H100"),
                "nvlink",
            ),
            "use --kv-link ib",
        ),
        (lambda: deployment(hardware="RTX-PRO-6000", link="nvlink"), "no NVLink"),
        (lambda: deployment(pp=2), "TP only"),
        (lambda: deployment(scheduler="faster_transformer"), "cannot split"),
        (lambda: DisaggSpec(SystemSpec(model="Llama-3.1-8B"), SystemSpec(model="Mistral-7B")), "one model"),
    ],
)
def test_deployments_that_cannot_be_are_refused(make, words):
    with pytest.raises(SimulationError, match=words):
        make()


def test_too_long_for_the_decode_pool_is_rejected():
    system = deployment(scheduler="sarathi", num_kv_blocks=100)  # 1,600 tokens of KV an instance
    result = simulate(system, Workload.from_arrays([1000, 1200], [10, 800], [0.0, 0.0]), batch_seconds=two_speeds)
    assert list(result.column("status")) == ["finished", "rejected"]


def capsim(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "capsim.capsearch.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_simulate_and_search_a_disaggregated_deployment(tmp_path):
    run = capsim(
        "simulate",
        "--model",
        "Llama-3.1-8B",
        "--disagg",
        "1P2D",
        "--decode-tp",
        "2",
        "--num-requests",
        "64",
        "--qps",
        "2",
        "-o",
        str(tmp_path / "sim"),
    )
    assert run.returncode == 0, run.stderr
    assert (
        "1P2D: prefill 1 x H100-SXM TP1" in run.stdout
        and "decode 2 x H100-SXM TP2" in run.stdout
        and "KV link: NVLink" in run.stdout
    )
    search = capsim(
        "search",
        "--model",
        "Llama-3.1-8B",
        "--disagg",
        "1P1D",
        "--num-requests",
        "64",
        "--cache-dir",
        str(tmp_path / "cache"),
        "-o",
        str(tmp_path / "search"),
    )
    assert search.returncode == 0, search.stderr
    csv = (tmp_path / "search" / "capacity.csv").read_text()
    assert "1P1D: prefill 1 x H100-SXM TP1" in csv and "KV over nvlink" in csv and ",2," in csv  # 2 GPUs


@pytest.mark.parametrize(
    "args, words",
    [
        (["--disagg", "2X4D"], "xPyD"),
        (["--disagg", "1P1D", "--replicas", "2"], "--replicas does not apply"),
        (["--prefill-tp", "2"], "add --disagg"),
        (["--disagg", "8P8D", "--kv-link", "nvlink"], "NVLink domain"),
    ],
)
def test_bad_disaggregation_flags_get_one_line_and_exit_2(args, words, tmp_path):
    run = capsim("simulate", "--model", "Llama-3.1-8B", "--num-requests", "8", *args, "-o", str(tmp_path / "out"))
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_config_splits_a_parallel_spec_into_pools(tmp_path):
    from capsim.capsearch.experiments.config import load_config

    config = tmp_path / "disagg.yml"
    config.write_text("""
schedulers:
  - {name: sarathi_512, scheduler: sarathi, chunk_size: 512, batch_size: 64}
traces:
  - {name: chat, trace_file: chat, num_requests: 64}
parallel_spec:
  - {name: tp1, tp_dimension: 1}
  - {name: 2p1d, tp_dimension: 1, disagg: 2P1D, decode_tp: 2, prefill_chunk_size: 2048, kv_link: ib}
models:
  - {name: Llama-3.1-8B, hardware: H100}
""")
    aggregated, disaggregated = (job.system for job in load_config(config).jobs)
    assert isinstance(aggregated, SystemSpec)
    assert disaggregated.shape == "2P1D" and disaggregated.kv_link == "ib" and disaggregated.gpus == 4
    assert (disaggregated.prefill.token_budget, disaggregated.decode.token_budget) == (2048, 512)
    assert (disaggregated.decode.tp, disaggregated.decode.max_batch_size) == (2, 64)
    config.write_text(config.read_text().replace("kv_link: ib", "kv_link: ib, prefill_pp: 2"))
    with pytest.raises(Exception, match="unknown key"):
        load_config(config)


def test_plan_sets_the_best_split_beside_the_best_aggregated_deployment(tmp_path):
    run = capsim(
        "plan",
        "--model",
        "Llama-3.1-8B",
        "--gpus",
        "2",
        "--hardware",
        "H100",
        "--disagg",
        "--tp",
        "1",
        "--scheduler",
        "sarathi",
        "--chunk-size",
        "512",
        "--max-batch-size",
        "128",
        "--num-requests",
        "128",
        "--ttft-slo",
        "0.1",  # trials long enough
        "--cache-dir",
        str(tmp_path / "cache"),
        "-o",
        str(tmp_path / "plan"),
    )
    assert run.returncode == 0, run.stderr
    assert (
        "best aggregated: 2 x H100-SXM TP1" in run.stdout and "best disaggregated: 1P1D H100-SXM TP1/TP1" in run.stdout
    )
    import csv

    rows = list(csv.DictReader((tmp_path / "plan" / "disagg.csv").open()))
    assert [(r["status"], r["split"], r["kv_link"], r["gpus"]) for r in rows] == [
        ("best", "1P1D H100-SXM TP1/TP1, decode batch 128", "nvlink", "2")
    ]
    assert (tmp_path / "plan" / "disagg.png").stat().st_size > 0
    refused = capsim(
        "plan",
        "--model",
        "Llama-3.1-8B",
        "--target-qps",
        "5",
        "--hardware",
        "H100",
        "--disagg",
        "-o",
        str(tmp_path / "no"),
    )
    assert refused.returncode == 2 and "--gpus N" in refused.stderr and not (tmp_path / "no").exists()
    no_gpu_kind = capsim("plan", "--model", "Llama-3.1-8B", "--gpus", "2", "--disagg", "-o", str(tmp_path / "no"))
    assert no_gpu_kind.returncode == 2 and "give --hardware" in no_gpu_kind.stderr and not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "prefill_router, decode_router", [("round_robin", "round_robin"), ("least_tokens", "least_outstanding")]
)
def test_routers_spread_requests_over_the_instances(prefill_router, decode_router):
    pool = dict(model="Llama-3.1-8B", hardware="H100", scheduler="sarathi")
    system = DisaggSpec(
        SystemSpec(replicas=2, **pool), SystemSpec(replicas=3, **pool), None, prefill_router, decode_router
    )
    result = simulate(system, WorkloadSpec(trace="chat", num_requests=60).at_qps(6))
    assert result.finished().all() and sorted(set(result.column("replica"))) == [2, 3, 4]
    prefilled_on = (
        result.batches.filter(result.batches.column("prefill_seqs").to_numpy() > 0).column("replica").to_numpy()
    )
    assert set(prefilled_on) == {0, 1}
    assert decode_router in result.info["disagg"]["words"]
    if decode_router == "round_robin":  # request i to decode instance i mod 3, in the order their prompts finish
        assert sorted(np.bincount(result.column("replica"))[2:]) == [20, 20, 20]


def test_an_override_of_both_pools_keeps_a_chosen_link_and_redoes_a_default_one():
    system = deployment()  # nvlink by default: 2 GPUs on one board
    assert system.with_pools(hardware="RTX-PRO-6000").kv_link == "ib"  # no NVLink on that card
    assert system.with_pools(tp=8).kv_link == "ib"  # 16 GPUs: past one board
    assert deployment(link="pcie").with_pools(max_batch_size=64).kv_link == "pcie"
    with pytest.raises(SimulationError, match="does not apply"):
        system.with_pools(replicas=2)
