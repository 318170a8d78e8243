import numpy as np
import pytest

from capsim.capsearch.capacity.slo import (
    Deadline,
    SLOError,
    TbtTtft,
    TtftTpot,
    deadline_miss_rates,
    fluidity_figures,
    min_tbt_deadlines,
    slo_from_dict,
)
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
    return RunResult(
        requests_table(
            range(n),
            [0] * n,
            arrivals,
            scheduled or arrivals,
            first,
            finish,
            status,
            [""] * n,
            [100] * n,
            output,
            counts,
            [0] * n,
            values,
            offsets,
        )
    )


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


def reference_miss_rate(times, due, tbt, output, denominator="deadlines"):
    """The definition, token by token: a late token misses every deadline that passed before it."""
    missed = on_time = 0
    for t in times:
        if t > due:
            missed += int(np.floor((t - due) / tbt)) + 1
            due = t + tbt
        else:
            on_time += 1
            due += tbt
    missed += output - len(times)
    if denominator == "tokens":
        return min(1.0, missed / output)
    return missed / (missed + on_time) if missed + on_time else 0.0


def test_deadline_slack_carries_forward_and_late_tokens_count_what_they_missed():
    # due at 1.0, then every 0.1 s; tokens early bank slack; the fourth token, due at 1.3, comes
    # at 1.65 and misses the deadlines at 1.3, 1.4, 1.5 and 1.6; the fifth is due at 1.75: on time
    tokens = [[0.5, 0.6, 0.7, 1.65, 1.7]]
    result = result_of(tokens, [0.0])
    etalon = deadline_miss_rates(result, tbt=0.1, ttft_slack=1.0)
    strict = deadline_miss_rates(result, tbt=0.1, ttft_slack=1.0, denominator="tokens")
    # Etalon: 4 missed / (4 on-time tokens + 4 missed deadlines); per token: 4 / 5 tokens
    assert etalon[0] == pytest.approx(4 / 8) == pytest.approx(reference_miss_rate(tokens[0], 1.0, 0.1, 5))
    assert strict[0] == pytest.approx(4 / 5) == pytest.approx(reference_miss_rate(tokens[0], 1.0, 0.1, 5, "tokens"))
    assert Deadline(tbt=0.1, ttft_slack=1.0, miss_rate=0.6, miss_rate_percentile=99).score(result)["passed"]
    assert not Deadline(tbt=0.1, ttft_slack=1.0, miss_rate=0.6, denominator="tokens").score(result)["passed"]


@pytest.mark.parametrize("denominator", ["deadlines", "tokens"])
def test_vectorized_deadline_scoring_matches_the_definition(denominator):
    rng = np.random.default_rng(0)
    tokens, arrivals, outputs = [], [], []
    for _ in range(300):
        arrival = rng.uniform(0, 100)
        count = int(rng.integers(0, 40))
        tokens.append(np.sort(arrival + rng.uniform(0, 4, count)).tolist())
        arrivals.append(arrival)
        outputs.append(max(1, count + int(rng.integers(0, 3))))
    result = result_of(tokens, arrivals, output=outputs)
    got = deadline_miss_rates(result, tbt=0.1, ttft_slack=0.3, denominator=denominator)
    want = [reference_miss_rate(t, a + 0.3, 0.1, o, denominator) for t, a, o in zip(tokens, arrivals, outputs)]
    assert got == pytest.approx(want, abs=1e-12)
    slo = Deadline(tbt=0.1, ttft_slack=0.3, miss_rate=0.5, miss_rate_percentile=50, denominator=denominator)
    assert slo.score(result)["passed"] == (np.percentile(want, 50, method="higher") <= 0.5)


def test_etalon_fluidity_figures_by_hand():
    # gaps 0.01, 0.01, 0.05, 0.01: at a 0.0125 s deadline the 0.05 s gap misses 3 of 6 deadlines;
    # the smallest deadline with <= 10% missed lets no gap be late: 0.03 s (0.05 banked from two early)
    tokens = [[1.0, 1.01, 1.02, 1.07, 1.08]] * 4
    result = result_of(tokens, [0.5] * 4)
    minimum = min_tbt_deadlines(result, 0.1)
    # at d the schedule after 1.02 is 1.0 + 3d; on time if 1.07 <= 1.0 + 3d: d >= 0.0233
    assert minimum == pytest.approx([0.07 / 3] * 4, abs=2e-4)
    figures = fluidity_figures(result, tbt=0.02, ttft_slack=0.5)
    # first due at 1.0, then every 0.02 s: 1.07 is due at 1.06, late by 0.01: one missed; 4 on time
    assert figures["service_miss_rate"] == pytest.approx(1 / 5)
    assert figures["deadline_based_throughput"] == pytest.approx(3 / 0.07, rel=0.01)
    assert figures["tpot_based_throughput"] == pytest.approx(1 / 0.02)


def test_percentiles_as_fractions_and_percentages_agree():
    assert TbtTtft(tbt=0.1, tbt_percentile=0.99, ttft_percentile=0.5) == TbtTtft(
        tbt=0.1, tbt_percentile=99, ttft_percentile=50
    )
    assert Deadline(miss_rate_percentile=0.999).name.startswith("P99.9 ")
    assert TtftTpot(ttft_percentile=0.9, tpot_percentile=90).name == "P90 TTFT<=2s, P90 TPOT<=0.1s"
    for bad in (0, -1, 100.5, True, "99"):
        with pytest.raises(SLOError, match="fraction in|a number"):
            TbtTtft(tbt_percentile=bad)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"kind": "tbt_ttft", "tbt": 0}, "tbt must be a positive"),
        ({"kind": "tbt_ttft", "tbt_percentile": 120}, "or a percentage in"),
        ({"kind": "deadline", "miss_rate": 1.5}, "miss rate must be in"),
        ({"kind": "latency"}, "an SLO needs kind"),
        ({"kind": "ttft_tpot", "tbt": 0.1}, "unexpected keyword"),
    ],
)
def test_impossible_slos_are_refused(data, message):
    with pytest.raises(SLOError, match=message):
        slo_from_dict(data)


def test_a_fraction_of_exactly_one_is_a_hundred_percent_and_below_the_median_is_refused():
    from capsim.capsearch.capacity.slo import SLOError, as_percentile

    assert (
        as_percentile(1) == 100 and as_percentile(1.0) == 100 and as_percentile(0.99) == 99 and as_percentile(99) == 99
    )
    assert as_percentile(50) == 50 and as_percentile(0.5) == 50
    for value in (0.3, 25, 1.5):
        with pytest.raises(SLOError, match="below the median"):
            as_percentile(value)
