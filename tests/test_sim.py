import numpy as np
import pytest

from capsim.sim import RunResult, SimulationError, SystemSpec, simulate
from capsim.traces import Workload, WorkloadSpec

STEP = 0.01


def constant(*features):
    return STEP


def one_request(prompt, output, **system):
    workload = Workload.from_arrays([prompt], [output], [0.0])
    return simulate(SystemSpec(**system), workload, batch_seconds=constant)


def token_times(result, i=0):
    values, offsets = result.token_times
    return values[offsets[i] : offsets[i + 1]]


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm_v0", "orca", "vllm_v1", "faster_transformer"])
def test_one_request_by_hand(scheduler):
    result = one_request(100, 5, scheduler=scheduler)
    assert result.ttft()[0] == pytest.approx(STEP)  # one prefill batch
    assert token_times(result) == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert result.tbt() == pytest.approx([STEP] * 4)
    assert result.column("finish_s")[0] == pytest.approx(0.05)
    assert result.column("scheduled_s")[0] == 0.0


def test_chunked_prefill_takes_one_batch_a_chunk():
    result = one_request(1000, 3, scheduler="sarathi", token_budget=256)  # 4 chunks
    assert result.ttft()[0] == pytest.approx(4 * STEP)
    assert token_times(result) == pytest.approx([0.04, 0.05, 0.06])


def test_a_one_token_request_finishes_at_its_prefill():
    result = one_request(50, 1)
    assert result.column("status")[0] == "finished" and token_times(result) == pytest.approx([STEP])


def run_chat(qps=4.0, n=300, **system):
    workload = WorkloadSpec("chat", num_requests=n, seed=3).at_qps(qps)
    return simulate(SystemSpec(**system), workload)


def check_every_token_once(result: RunResult):
    finished = result.finished()
    assert finished.all()
    values, offsets = result.token_times
    counts = np.diff(offsets)
    assert (counts == result.column("output_tokens")).all()
    assert (result.column("generated_tokens") == result.column("output_tokens")).all()
    for i in range(len(counts)):
        assert (np.diff(values[offsets[i] : offsets[i + 1]]) > 0).all()


@pytest.mark.parametrize("scheduler", ["sarathi", "vllm_v0", "orca", "vllm_v1", "faster_transformer"])
def test_every_output_token_is_produced_exactly_once(scheduler):
    check_every_token_once(run_chat(scheduler=scheduler, max_batch_size=32))


def test_kv_never_over_capacity_and_preemption_recomputes():
    # Llama-2-13B keeps 800 KB of KV a token: an A40 holds few sequences, so decodes preempt.
    result = run_chat(qps=3.0, n=120, model="Llama-2-13B", hardware="A40", scheduler="vllm_v0", max_model_len=4096)
    capacity = result.info["kv_blocks_per_engine"]
    assert result.batches.column("kv_blocks_used").to_numpy().max() <= capacity
    assert result.summary()["preemptions"] > 0
    ok = result.column("status") != "rejected"
    values, offsets = result.token_times
    assert (np.diff(offsets)[ok] == result.column("output_tokens")[ok]).all()


def test_policy_rules_hold():
    v0 = run_chat(qps=6.0, scheduler="vllm_v0").batches
    assert ((v0.column("prefill_seqs").to_numpy() == 0) | (v0.column("decode_seqs").to_numpy() == 0)).all()
    sarathi = run_chat(qps=6.0, scheduler="sarathi", token_budget=512).batches
    assert sarathi.column("tokens").to_numpy().max() <= 512
    mixed = (sarathi.column("prefill_seqs").to_numpy() > 0) & (sarathi.column("decode_seqs").to_numpy() > 0)
    assert mixed.any()
    workload = WorkloadSpec("chat", num_requests=200, seed=3).at_qps(6.0)
    orca = simulate(SystemSpec(scheduler="orca", max_batch_size=16), workload, batch_seconds=constant)
    assert orca.column("first_token_s") - orca.column("scheduled_s") == pytest.approx(
        np.full(200, STEP)
    )  # whole prompts
    assert orca.batches.column("decode_seqs").to_numpy().max() <= 16


def test_saturation_shows_growing_queueing_delay():
    result = run_chat(qps=60.0, n=400, scheduler="sarathi", token_budget=512)
    delay = result.scheduling_delay()
    quarters = [q.mean() for q in np.array_split(delay, 4)]
    assert quarters == sorted(quarters) and quarters[-1] > 5 * quarters[0]


def test_same_inputs_same_files(tmp_path):
    for name in ("a", "b"):
        run_chat(qps=5.0, scheduler="sarathi", token_budget=512).write(tmp_path / name)
    for file in ("requests.parquet", "batches.parquet", "summary.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_time_limit_leaves_requests_unfinished_and_counted():
    result = simulate(SystemSpec(), WorkloadSpec("chat", num_requests=300, seed=1).at_qps(30.0), time_limit_s=5.0)
    status = result.column("status")
    assert (status == "unfinished").sum() > 0 and (status == "finished").sum() > 0
    assert result.summary()["requests"]["unfinished"] == (status == "unfinished").sum()
    assert set(result.column("reason")[status == "unfinished"]) == {"time limit"}
    partial = np.diff(result.token_times[1])[status == "unfinished"]
    assert (partial <= result.column("output_tokens")[status == "unfinished"]).all()


def test_too_long_requests_are_rejected():
    workload = Workload.from_arrays([100, 9000], [10, 10], [0.0, 0.1])
    result = simulate(SystemSpec(max_model_len=8192), workload, batch_seconds=constant)
    assert list(result.column("status")) == ["finished", "rejected"]


def test_pipeline_parallel_keeps_stages_busy():
    one = run_chat(
        qps=4.0, model="Llama-2-70B", hardware="A100-80GB-SXM", tp=4, pp=1, max_model_len=8192, rope_scaling=2.0
    )
    two = run_chat(
        qps=4.0, model="Llama-2-70B", hardware="A100-80GB-SXM", tp=4, pp=2, max_model_len=8192, rope_scaling=2.0
    )
    check_every_token_once(two)
    assert set(two.batches.column("engine").to_numpy()) == {0, 1}
    starts = two.batches.column("start_s").to_numpy()
    ends = two.batches.column("end_s").to_numpy()
    overlapping = sum(1 for i in range(1, len(starts)) if starts[i] < ends[i - 1])
    assert overlapping > 0  # micro-batches in flight together
    assert one.summary()["e2e_s"]["mean"] > 0


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding", "least_kv"])
def test_routers_spread_requests_over_replicas(router):
    result = run_chat(qps=8.0, replicas=3, router=router)
    counts = np.bincount(result.column("replica"), minlength=3)
    assert counts.min() > 60
    check_every_token_once(result)


@pytest.mark.parametrize("scheduler", ["vllm_v1", "sglang", "trtllm"])
def test_prefix_caching_skips_shared_prefixes(scheduler):
    n = 200
    groups = np.arange(n) % 10
    workload = Workload.from_arrays(
        np.full(n, 2000), np.full(n, 20), np.arange(n) * 0.05, prefix_group=groups, prefix_tokens=np.full(n, 1536)
    )
    plain = simulate(SystemSpec(scheduler=scheduler), workload)
    cached = simulate(SystemSpec(scheduler=scheduler, prefix_caching=True), workload)
    prefill = lambda r: (r.batches.column("tokens").to_numpy() - r.batches.column("decode_seqs").to_numpy()).sum()  # noqa: E731
    assert prefill(plain) == n * 2000
    assert prefill(cached) < 0.4 * prefill(plain)
    check_every_token_once(cached)
    assert cached.ttft().mean() < plain.ttft().mean()


def test_bad_system_and_workload():
    with pytest.raises(SimulationError, match="unknown scheduler 'fcfs'"):
        SystemSpec(scheduler="fcfs")
    with pytest.raises(SimulationError, match="prefix caching is modelled for the vllm_v1, sglang, trtllm"):
        SystemSpec(scheduler="sarathi", prefix_caching=True)
    with pytest.raises(SimulationError, match="no arrival times"):
        simulate(SystemSpec(), WorkloadSpec("chat", num_requests=5).requests())


def test_least_outstanding_counts_the_requests_still_in_a_frontend():
    """A burst sent at once waits in the replicas' API servers: the router must count those too,
    or every request of the burst would go to the first replica."""
    burst = Workload.from_arrays(np.full(40, 300), np.full(40, 20), np.zeros(40))
    system = SystemSpec(model="Llama-3.1-8B", hardware="H100", replicas=4, router="least_outstanding")
    result = simulate(system, burst)
    assert result.info["frontend_s"] > 0
    assert np.bincount(result.column("replica"), minlength=4).tolist() == [10, 10, 10, 10]
