import numpy as np
import pytest

from capsim.capsearch.slo import Deadline, SLOError, TbtTtft, TtftTpot, deadline_miss_rates, slo_from_dict
from capsim.sim.result import RunResult, requests_table


def result_of(token_lists, arrivals, output=None, status=None, scheduled=None):
    n = len(token_lists)
    output = output or [len(t) for t in token_lists]
    status = status or ["finished"] * n
    counts = [len(t) for t in token_lists]
    offsets = np.concatenate(([0], np.cumsum(counts)))
    values = np.concatenate([np.asarray(t, dtype=float) for t in token_lists]) if sum(counts) else np.zeros(0)
    first = [t[0] if len(t) else np.nan for t in token_lists]
    finish = [t[-1] if len(t) and s == "finished" else np.nan for t, s in zip(token_lists, status)]
    return RunResult(requests_table(range(n), [0] * n, arrivals, scheduled or arrivals, first, finish, status, [""] * n,
                                    [100] * n, output, counts, [0] * n, values, offsets))


def test_tbt_ttft_by_hand():
    # 100 requests, each 11 tokens 10 ms apart, first token 50 ms after arrival; one has a 300 ms gap
    tokens = [[i + 0.05 + 0.01 * j for j in range(11)] for i in range(100)]
    tokens[7] = tokens[7][:5] + [t + 0.29 for t in tokens[7][5:]]
    result = result_of(tokens, [float(i) for i in range(100)])
    score = TbtTtft(tbt=0.02, tbt_percentile=99, ttft=0.06, ttft_percentile=50, ttft_metric="ttft").score(result)
    assert score["tbt"] == pytest.approx(0.01) and score["ttft"] == pytest.approx(0.05) and score["passed"]
    strict = TbtTtft(tbt=0.02, tbt_percentile=99.95, ttft=1, ttft_metric="ttft").score(result)
    assert strict["tbt"] == pytest.approx(0.3) and not strict["passed"]


def test_unfinished_requests_are_violations_not_missing_data():
    tokens = [[0.1, 0.2, 0.3]] * 9 + [[0.1]]
    result = result_of(tokens, [0.0] * 10, output=[3] * 10, status=["finished"] * 9 + ["unfinished"])
    # 18 real gaps of 0.1 s plus 2 tokens never made: the top 10% of the 20 are infinite
    assert TbtTtft(tbt=0.2, tbt_percentile=95, ttft=5).score(result)["tbt"] == np.inf
    assert TbtTtft(tbt=0.2, tbt_percentile=85, ttft=5).score(result)["passed"]
    assert TtftTpot(ttft=1, ttft_percentile=95, tpot=1).score(result)["ttft"] == np.inf


def test_ttft_tpot():
    tokens = [[1.0, 1.1, 1.2, 1.3], [2.5, 2.9]]
    score = TtftTpot(ttft=1.0, ttft_percentile=100, tpot=0.3, tpot_percentile=100).score(result_of(tokens, [0.5, 2.0]))
    assert score["ttft"] == pytest.approx(0.5) and score["tpot"] == pytest.approx(0.4) and not score["passed"]


def reference_miss_rate(times, due, tbt, output):
    missed = 0
    for t in times:
        if t > due:
            missed += int(np.floor((t - due) / tbt)) + 1
            due = t + tbt
        else:
            due += tbt
    return min(1.0, (missed + output - len(times)) / output)


def test_deadline_slack_carries_forward_and_late_tokens_count_what_they_missed():
    # due at 1.0, then every 0.1 s; tokens early bank slack, a 0.35 s late token misses 4
    tokens = [[0.5, 0.6, 0.7, 1.65, 1.7]]
    rates = deadline_miss_rates(result_of(tokens, [0.0]), tbt=0.1, ttft_slack=1.0)
    assert rates[0] == pytest.approx(reference_miss_rate(tokens[0], 1.0, 0.1, 5))
    assert rates[0] == pytest.approx(4 / 5)


def test_vectorized_deadline_scoring_matches_the_definition():
    rng = np.random.default_rng(0)
    tokens, arrivals, outputs = [], [], []
    for _ in range(300):
        arrival = rng.uniform(0, 100)
        count = int(rng.integers(0, 40))
        tokens.append(np.sort(arrival + rng.uniform(0, 4, count)).tolist())
        arrivals.append(arrival)
        outputs.append(max(1, count + int(rng.integers(0, 3))))
    result = result_of(tokens, arrivals, output=outputs)
    got = deadline_miss_rates(result, tbt=0.1, ttft_slack=0.3)
    want = [reference_miss_rate(t, a + 0.3, 0.1, o) for t, a, o in zip(tokens, arrivals, outputs)]
    assert got == pytest.approx(want, abs=1e-12)
    assert Deadline(tbt=0.1, ttft_slack=0.3, miss_rate=0.5, miss_rate_percentile=50).score(result)["passed"] == (np.median(want) <= 0.5)


@pytest.mark.parametrize("data, message", [
    ({"kind": "tbt_ttft", "tbt": 0}, "tbt must be a positive"),
    ({"kind": "tbt_ttft", "tbt_percentile": 120}, "percentile in"),
    ({"kind": "deadline", "miss_rate": 1.5}, "miss rate must be in"),
    ({"kind": "latency"}, "an SLO needs kind"),
    ({"kind": "ttft_tpot", "tbt": 0.1}, "unexpected keyword"),
])
def test_impossible_slos_are_refused(data, message):
    with pytest.raises(SLOError, match=message):
        slo_from_dict(data)
