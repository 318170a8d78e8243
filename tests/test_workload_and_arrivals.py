import numpy as np
import pytest

from capsim.traces import TraceError, Workload, WorkloadSpec, arrival_times
from capsim.traces.arrivals import unit_rate_arrivals


def test_cap_shrinks_prompt_and_output_in_proportion():
    w = Workload.from_arrays([100, 6000, 9000], [50, 4000, 1])
    capped = w.capped(8192)
    assert list(capped.prompt_tokens) == [100, 4915, 8191]
    assert list(capped.output_tokens) == [50, 3277, 1]
    assert (capped.prompt_tokens + capped.output_tokens).max() == 8192


def test_scale_head_and_shuffle():
    w = Workload.from_arrays([10, 20, 30, 40], [1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0])
    scaled = w.scaled(prompt_scale=0.5, output_scale=2)
    assert list(scaled.prompt_tokens) == [5, 10, 15, 20] and list(scaled.output_tokens) == [2, 4, 6, 8]
    assert list(w.head(2).prompt_tokens) == [10, 20]
    with pytest.raises(TraceError, match="has only 4 requests"):
        w.head(5)
    shuffled = w.shuffled(seed=3)
    assert sorted(shuffled.prompt_tokens) == [10, 20, 30, 40]
    assert list(shuffled.arrival_s) == [0.0, 1.0, 2.0, 3.0]  # arrivals stay, requests move
    assert shuffled.table.equals(w.shuffled(seed=3).table)
    assert list(shuffled.prompt_tokens // 10) == list(shuffled.output_tokens)  # rows move whole


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "w.parquet"
    Workload.from_arrays([1], [1]).to_parquet(target)
    before = target.read_bytes()

    bad = Workload.from_arrays([1], [1])
    bad.table = None  # writing fails half-way through
    with pytest.raises(AttributeError):
        bad.to_parquet(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.parquet"]


def test_same_seed_same_requests_at_every_qps():
    spec = WorkloadSpec("chat", num_requests=500, seed=7)
    slow, fast = spec.at_qps(1.0), spec.at_qps(4.0)
    assert np.array_equal(slow.prompt_tokens, fast.prompt_tokens)
    assert np.array_equal(slow.output_tokens, fast.output_tokens)
    assert np.array_equal(slow.arrival_s / 4.0, fast.arrival_s)
    assert fast.arrival_s[0] == 0.0
    other = WorkloadSpec("chat", num_requests=500, seed=8).at_qps(1.0)
    assert not np.array_equal(slow.prompt_tokens, other.prompt_tokens)


@pytest.mark.parametrize(
    "process, kwargs, cv", [("poisson", {}, 1.0), ("gamma", {"cv": 3.0}, 3.0), ("constant", {}, 0.0)]
)
def test_arrival_processes_have_the_asked_rate_and_burstiness(process, kwargs, cv):
    times = arrival_times(process, 200_000, qps=5.0, seed=1, **kwargs)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(0.2, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.08 * max(cv, 1))


def test_poisson_gap_cap_is_three_mean_gaps():
    capped = np.diff(arrival_times("poisson", 100_000, qps=2.0, seed=0, cap_gaps=True))
    assert capped.max() <= 1.5 + 1e-9
    plain = np.diff(arrival_times("poisson", 100_000, qps=2.0, seed=0))
    assert plain.max() > 1.5
    assert capped.mean() < plain.mean()


def test_replay_rescales_the_trace_timestamps_to_the_target_qps():
    own = np.array([0.0, 1.0, 1.5, 10.0])
    times = arrival_times("replay", 4, qps=3.0, timestamps=own)
    assert times == pytest.approx(own * (3 / 10.0) / 3.0)
    assert (len(times) - 1) / times[-1] == pytest.approx(3.0)
    with pytest.raises(TraceError, match="has no timestamps|own timestamps"):
        unit_rate_arrivals("replay", 4)


def test_replay_of_a_file_through_a_spec(reference_traces):
    spec = WorkloadSpec(str(reference_traces / "splitwise_conv.csv"), num_requests=1000, arrival="replay")
    w = spec.at_qps(2.0)
    assert (len(w) - 1) / w.arrival_s[-1] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: arrival_times("poisson", 10, qps=0), "QPS must be a positive"),
        (lambda: arrival_times("poisson", 10, qps=-1), "QPS must be a positive"),
        (lambda: arrival_times("weibull", 10, qps=1), "unknown arrival process"),
        (lambda: arrival_times("gamma", 10, qps=1), "needs a positive --cv"),
        (lambda: arrival_times("constant", 10, qps=1, cv=2), "gamma process only"),
        (lambda: WorkloadSpec("nosuch-trace").requests(), "neither a trace file nor a built-in"),
        (lambda: WorkloadSpec("chat", num_requests=0), "must be a whole number from 1"),
    ],
)
def test_bad_arrival_and_spec_options(call, message):
    with pytest.raises(TraceError, match=message):
        call()
