"""Decode stretches against the iteration-by-iteration path: the same trial, bit for bit, for
every policy, light load and overload, preemption storms, prefix caching, replicas and routers,
pipeline stages, early stops and time limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsim.sim import POLICIES, SystemSpec, simulate
from capsim.sim.early_stop import EarlyStop
from capsim.traces import Workload, WorkloadSpec

CHAT = WorkloadSpec("chat", num_requests=300, seed=5, max_total_tokens=4096)


def same_trial(a, b) -> None:
    for name in a.requests.column_names:
        if name == "token_times":
            assert all(np.array_equal(x, y) for x, y in zip(a.token_times, b.token_times)), "token times differ"
        else:
            x, y = a.column(name), b.column(name)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{name} differs"
    assert a.batches.num_rows == b.batches.num_rows
    for name in a.batches.column_names:
        assert np.array_equal(a.batches.column(name).to_numpy(), b.batches.column(name).to_numpy()), (
            f"batches: {name} differ"
        )
    assert a.info == b.info


def both(system, workload, **options):
    fast = simulate(system, workload, **options)
    slow = simulate(system, workload, decode_stretches=False, **options)
    same_trial(fast, slow)
    return fast


@pytest.mark.parametrize(
    "scheduler, budget",
    [
        ("vllm_v0", None),
        ("orca", None),
        ("sarathi", 512),
        ("vllm_v1", None),
        ("faster_transformer", None),
        ("sglang", 2048),
        ("trtllm", 8192),
    ],
)
@pytest.mark.parametrize("qps", [0.5, 4.0, 40.0])
def test_every_policy_light_to_overloaded(scheduler, budget, qps):
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler=scheduler, token_budget=budget)
    both(system, CHAT.at_qps(qps))


@pytest.mark.parametrize("scheduler", ["vllm_v0", "sarathi", "vllm_v1"])
def test_a_preemption_storm(scheduler):
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler=scheduler, num_kv_blocks=400)
    result = both(system, CHAT.at_qps(20.0))
    assert result.column("preemptions").sum() > 10


@pytest.mark.parametrize("scheduler", ["vllm_v0", "sarathi", "orca"])
def test_past_completions_into_a_preemption(scheduler):
    """Nothing waits once all have arrived: stretches go on past completions, and the KV blocks
    the finished requests free put off the preemption that the growing decodes bring."""
    rng = np.random.default_rng(2)
    n = 40
    workload = Workload.from_arrays(
        rng.integers(100, 400, n), rng.integers(200, 3000, n), np.cumsum(rng.exponential(0.02, n))
    )
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler=scheduler, num_kv_blocks=2500)
    result = both(system, workload)
    assert (result.column("preemptions").sum() > 5) == (scheduler != "orca")  # orca reserves the whole length up front


def test_a_segments_blocks_are_the_per_iteration_counts():
    from capsim.sim.decode_stretch import Segment

    rng = np.random.default_rng(4)
    for _ in range(200):
        phases = rng.integers(0, 5, 16).tolist()
        segment = Segment(int(rng.integers(1, 80)), 10, False, phases, int(rng.integers(0, 1000)))
        each = [phases[-(segment.first_iteration + i) % 16] for i in range(segment.count)]
        assert (
            segment.appends() == sum(each)
            and segment.appends(skip=1) == sum(each[1:])
            and segment.first_appends() == each[0]
        )


def test_prefix_caching():
    rng = np.random.default_rng(0)
    n = 300
    prompt = rng.integers(600, 2000, n)
    workload = Workload.from_arrays(
        prompt,
        rng.integers(50, 400, n),
        np.cumsum(rng.exponential(0.3, n)),
        prefix_group=rng.integers(0, 8, n),
        prefix_tokens=np.minimum(prompt, 512),
    )
    system = SystemSpec(
        model="Llama-3-8B", hardware="H100-SXM", scheduler="vllm_v1", prefix_caching=True, num_kv_blocks=1500
    )
    both(system, workload)


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding", "least_kv"])
def test_replicas_and_routers(router):
    system = SystemSpec(
        model="Llama-3-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512, replicas=3, router=router
    )
    both(system, CHAT.at_qps(3.0))


@pytest.mark.parametrize("scheduling", ["one_scheduler", "virtual_engines"])
def test_pipeline_stages(scheduling):
    system = SystemSpec(
        model="Llama-2-70B",
        hardware="A100-80GB-SXM",
        tp=4,
        pp=2,
        scheduler="sarathi",
        token_budget=512,
        pipeline_scheduling=scheduling,
    )
    both(system, CHAT.at_qps(1.0))


@pytest.mark.parametrize(
    "rule",
    [
        EarlyStop(max_tbt=0.03, max_tbt_violations=500),
        EarlyStop(max_wait=0.5, max_wait_violations=5),
        EarlyStop(max_tbt=0.05, max_tbt_violations=2000, max_wait=2.0, max_wait_violations=3),
    ],
)
@pytest.mark.parametrize("qps", [2.0, 30.0])
def test_early_stops(rule, qps):
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="vllm_v0")
    both(system, CHAT.at_qps(qps), early_stop=rule)


def test_early_stop_with_replicas_and_a_time_limit():
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512, replicas=2)
    both(system, CHAT.at_qps(8.0), early_stop=EarlyStop(max_tbt=0.03, max_tbt_violations=100))
    result = both(system, CHAT.at_qps(1.0), time_limit_s=60.0)
    assert (result.column("status") == "unfinished").any()


def test_a_light_load_trial_takes_few_events():
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512)
    result = simulate(system, CHAT.at_qps(0.5))
    assert result.batches.num_rows > 20 * 300  # many iterations a request, replayed in stretches: the same rows


def test_a_callers_latency_function_skips_events_the_same_way():
    """No stretches for a caller's function, but batches that end before every queued event move
    the clock without one (Clock.advance): ties with arrivals included, the same trial."""

    def coarse(tokens, *rest):
        return 0.001 * (1 + tokens // 64)  # whole milliseconds: batch ends often meet arrival times

    arrivals = np.round(np.cumsum(np.random.default_rng(1).exponential(0.05, 200)), 3)
    workload = Workload.from_arrays(np.full(200, 700), np.full(200, 40), arrivals)
    for scheduler in ("sarathi", "vllm_v0"):
        system = SystemSpec(
            model="Llama-3-8B", hardware="H100-SXM", scheduler=scheduler, replicas=2, router="least_outstanding"
        )
        both(system, workload, batch_seconds=coarse)


def test_stretches_are_checked_against_the_profile_as_their_rows_would_be():
    """A stretch's extrapolation count and peaks come from two summary rows; they must equal what
    its every iteration's row gives, at the coverage boundary too."""
    from capsim.sim.decode_stretch import Segment, StretchRun, stretch_features, stretch_rows

    model = SystemSpec(model="Llama-3.1-8B", hardware="H100-SXM").latency_model()
    coverage = model.predictor.coverage
    rng = np.random.default_rng(3)
    stretches = []
    for _ in range(200):
        m = int(rng.integers(1, 300))
        tokens = m if rng.random() < 0.9 else int(coverage[0]) + 5  # some batches wider than the profile
        count = int(rng.integers(8, 400))
        kv0 = int(coverage[5] * 1.0001) - int(rng.integers(-m * 5, m * count + 1))  # crossing the boundary, or not
        ends = np.cumsum(rng.random(count))
        stretches.append(StretchRun(0, 0, 0.0, ends, tokens, max(kv0, 0), m, 10, Segment(count, m, False, None, 0), -1))
    rows = stretch_rows(stretches)[:, 4:10]
    summary, weights = stretch_features(stretches, coverage)
    expected = model.extrapolation(rows)
    assert expected is not None and model.extrapolation(summary, weights) == expected
    assert weights.sum() == len(rows)


@pytest.mark.parametrize("link", ["identity", "exp"])
@pytest.mark.parametrize("shape", ["bent decode_kv", "linear and steps"])
@pytest.mark.parametrize("host", [False, True])
def test_runs_of_decode_batches_are_predicted_as_one_by_one(link, shape, host):
    """LatencyPredictor.decode_iterations against the per-batch predictor, bit for bit: runs of
    decode batches, token counts past the table's end included."""
    from capsim.profiles.predictor import LatencyPredictor

    rng = np.random.default_rng(7)
    knots = np.sort(rng.random(6)) * 4e5

    def curve():
        return knots, rng.random(6) * 1e-3

    if shape == "bent decode_kv":
        linear, bent, steps = {1: 0.0, 3: 0.0, 4: 2e-6}, {2: curve(), 5: curve()}, {}
    else:
        linear, bent, steps = (
            {1: 1e-4, 2: 1e-9, 3: 0.0, 5: 3e-9},
            {},
            {4: (np.array([8.5, 64.5, 200.5]), rng.random(4) * 1e-3)},
        )
    predictor = LatencyPredictor(1e-3, rng.random(16386) * 1e-2, linear, bent, steps, link, np.ones(6))
    predictor = predictor.with_host_time(1.7e-3, 5e-5) if host else predictor
    for tokens, counts in [([40], [50]), ([40, 39, 31], [20, 30, 5]), ([300, 17000], [9, 12])]:
        kv0 = [int(v) for v in rng.integers(1000, 300000, len(tokens))]
        kv = np.concatenate([k + t * np.arange(c, dtype=np.int64) for k, t, c in zip(kv0, tokens, counts)])
        expected = [predictor(t, 0, 0, 0, t, k) for t, k in zip(np.repeat(tokens, counts).tolist(), kv.tolist())]
        assert np.array_equal(predictor.decode_iterations(tokens, tokens, kv, counts), np.array(expected))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    scheduler=st.sampled_from(list(POLICIES)),  # every policy: a new one is checked too
    seed=st.integers(0, 2**16),
    requests=st.integers(5, 60),
    qps=st.sampled_from([0.3, 2.0, 8.0, 50.0]),
    blocks=st.sampled_from([300, 800, 5000]),
    early_stop=st.booleans(),
    cap=st.sampled_from([None, 3]),
    replicas=st.sampled_from([1, 1, 2]),
    router=st.sampled_from(["round_robin", "least_outstanding", "least_kv"]),
    time_limit=st.sampled_from([None, 5.0]),
)
def test_random_trials_are_the_per_iteration_ones(
    scheduler, seed, requests, qps, blocks, early_stop, cap, replicas, router, time_limit
):
    """Small random trials, often of long outputs in little KV: completions, preemptions and
    admissions in every order, with and without replicas, an early stop, a concurrency cap or a
    time limit (prefix caching where vllm_v1 runs)."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(16, 1200, requests)
    prefix = scheduler == "vllm_v1" and bool(seed % 2)
    shared = {"prefix_group": rng.integers(0, 4, requests), "prefix_tokens": np.minimum(prompt, 300)} if prefix else {}
    workload = Workload.from_arrays(
        prompt, rng.integers(1, 1500, requests), np.cumsum(rng.exponential(1 / qps, requests)), **shared
    )
    system = SystemSpec(
        model="Llama-3-8B",
        hardware="H100-SXM",
        scheduler=scheduler,
        num_kv_blocks=blocks,
        max_batch_size=16,
        token_budget=256 if scheduler in ("sarathi", "vllm_v1", "sglang") else None,
        max_model_len=4096,
        replicas=replicas,
        router=router,
        prefix_caching=prefix,
    )
    rule = EarlyStop(max_tbt=0.03, max_tbt_violations=200, max_wait=3.0, max_wait_violations=3) if early_stop else None
    both(system, workload, early_stop=rule, max_concurrency=cap, time_limit_s=time_limit)
