"""Latency against load in vLLM's vocabulary: closed loops in the simulator, vLLM's figures by
hand, and the `simulate` command's sweeps, result files and familiar flags."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from capsim.capsearch.capacity.slo import Goodput, SLOError
from capsim.capsearch.cli import main
from capsim.capsearch.load.metrics import MetricsError, parse_goodput, parse_percentiles, serving_metrics
from capsim.capsearch.load.sweep import parse_qps
from capsim.sim import SystemSpec, simulate
from capsim.sim.result import RunResult, requests_table, to_microseconds
from capsim.traces import WorkloadSpec

SYSTEM = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="sarathi", token_budget=512)
CHAT = WorkloadSpec("chat", num_requests=200, seed=3, max_total_tokens=4096)


def in_flight_at_most(result: RunResult) -> int:
    """The most requests between their send and their end at any moment."""
    sent, ended = result.column("arrival_s"), result.column("finish_s")
    events = sorted([(t, 1) for t in sent] + [(t, -1) for t in ended])  # an end before a send at the same time
    return max(np.cumsum([change for _, change in events]))


def same_tokens(a: RunResult, b: RunResult) -> bool:
    return (
        np.array_equal(a.token_times[0], b.token_times[0])
        and np.array_equal(a.column("arrival_s"), b.column("arrival_s"))
        and a.batches.num_rows == b.batches.num_rows
    )


@pytest.mark.parametrize("qps, cap", [(math.inf, 1), (math.inf, 8), (6.0, 4), (40.0, 16)])
def test_a_concurrency_cap_holds_and_matches_the_per_iteration_path(qps, cap):
    workload = CHAT.at_qps(qps)
    fast = simulate(SYSTEM, workload, max_concurrency=cap)
    assert same_tokens(fast, simulate(SYSTEM, workload, max_concurrency=cap, decode_stretches=False))
    assert fast.finished().all()
    assert in_flight_at_most(fast) <= cap
    planned = to_microseconds(np.array(workload.arrival_s))  # results keep whole microseconds
    assert (fast.column("arrival_s") >= planned).all()  # sent at its time, or later when a slot freed
    late = fast.column("arrival_s") > planned
    assert np.isin(fast.column("arrival_s")[late], fast.column("finish_s")).all()  # ... exactly when a request ended


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding"])
def test_users_on_replicas_match_the_per_iteration_path(router):
    system = SystemSpec(model="Llama-3-8B", hardware="H100-SXM", scheduler="vllm_v0", replicas=2, router=router)
    workload = CHAT.at_qps(math.inf)
    fast = simulate(system, workload, max_concurrency=12)
    assert same_tokens(fast, simulate(system, workload, max_concurrency=12, decode_stretches=False))
    assert in_flight_at_most(fast) <= 12


def test_one_user_sends_each_request_when_the_last_ends():
    result = simulate(SYSTEM, CHAT.at_qps(math.inf), max_concurrency=1)
    sent, ended = result.column("arrival_s"), result.column("finish_s")
    assert sent[0] == 0 and np.array_equal(sent[1:], ended[:-1])
    assert result.info["max_concurrency"] == 1


def test_an_infinite_rate_sends_everything_at_once():
    result = simulate(SYSTEM, CHAT.at_qps(math.inf))
    assert (result.column("arrival_s") == 0).all()


SENT_S = [0.0, 1.0, 1.5]  # requests A, B, C
TOKENS_S = [0.5, 0.6, 0.8, 1.3]  # A's three, B's one


def three_requests() -> RunResult:
    """Sent at 0, 1 and 1.5 s. A: tokens at 0.5, 0.6, 0.8 (TTFT 0.5, ITL 0.1 and 0.2, TPOT 0.15,
    E2E 0.8). B: one token at 1.3 (TTFT 0.3, TPOT 0 as vLLM counts it). C never finished."""
    tokens = np.array(TOKENS_S)
    return RunResult(
        requests_table(
            [0, 1, 2],
            [0, 0, 0],
            SENT_S,
            [0.1, 1.1, np.nan],
            [0.5, 1.3, np.nan],
            [0.8, 1.3, np.nan],
            ["finished", "finished", "unfinished"],
            ["", "", "time limit"],
            [100, 50, 70],
            [3, 1, 5],
            [3, 1, 0],
            [0, 0, 0],
            tokens,
            np.array([0, 3, 4, 4]),
        )
    )


def test_vllm_figures_by_hand():
    result = three_requests()
    figures = serving_metrics(result, percentiles=(50, 100), goodput_ms={"ttft": 400})
    assert figures["completed"] == 2 and figures["failed"] == 1
    # The figures are over the table's own span, A's send to B's last token: 4 output tokens in it
    assert figures["output_throughput"] * (TOKENS_S[-1] - SENT_S[0]) == pytest.approx(figures["total_output_tokens"])
    assert figures["total_input_tokens"] == 150 and figures["total_output_tokens"] == 4
    assert figures["request_throughput"] == pytest.approx(2 / 1.3)
    assert figures["request_goodput"] == pytest.approx(1 / 1.3)  # B alone has TTFT <= 400 ms
    assert figures["goodput_fraction"] == pytest.approx(1 / 3)  # of every request sent
    assert figures["total_token_throughput"] == pytest.approx(154 / 1.3)
    assert figures["mean_ttft_ms"] == pytest.approx(400) and figures["p100_ttft_ms"] == pytest.approx(500)
    assert figures["mean_tpot_ms"] == pytest.approx(75) and figures["median_itl_ms"] == pytest.approx(150)
    assert figures["p50_e2el_ms"] == pytest.approx(550)
    assert (
        figures["max_output_tokens_per_s"] == 3 and figures["max_concurrent_requests"] == 1
    )  # seconds 0 and 1: one each


def test_the_goodput_slo_counts_requests_within_every_limit():
    result = three_requests()
    assert Goodput(ttft=0.4, attainment=33).score(result)["passed"]  # B alone: 1 of 3
    assert not Goodput(ttft=0.4, attainment=0.5).score(result)["passed"]
    assert Goodput(ttft=0.6, e2el=1.0, attainment=66).score(result)["attainment"] == pytest.approx(200 / 3)
    assert Goodput(ttft=0.6, tpot=0.1).score(result)["attainment"] == pytest.approx(100 / 3)  # A's TPOT is 0.15 s
    with pytest.raises(SLOError):
        Goodput(attainment=90)


def test_a_search_under_a_goodput_slo(tmp_path):
    done = CliRunner().invoke(
        main,
        [
            "search",
            "--model",
            "Llama-3-8B",
            "--scheduler",
            "sarathi",
            "--trace",
            "chat",
            "-n",
            "150",
            "--goodput",
            "ttft:500 tpot:30",
            "--goodput-attainment",
            "0.9",
            "-o",
            str(tmp_path / "s"),
        ],
    )
    assert done.exit_code == 0, done.output
    row = json.loads((tmp_path / "s" / "capacity.json").read_text())[0]
    assert row["slo"]["kind"] == "goodput" and row["slo"]["ttft"] == 0.5 and row["slo"]["attainment"] == 90
    assert row["capacity_qps"] > 0


def test_limits_and_lists_are_read_as_vllm_writes_them():
    assert parse_goodput(["ttft:200 tpot:50", "e2el:3000"]) == {"ttft": 200, "tpot": 50, "e2el": 3000}
    assert parse_goodput(["ttft:200,tpot:50"]) == {"ttft": 200, "tpot": 50}
    assert parse_percentiles("50,99.9") == (50, 99.9)
    assert parse_qps("1,2.5,inf") == [1, 2.5, math.inf] and parse_qps("auto") == "auto"
    for bad in (["ttft=200"], ["itl:10"], ["ttft:-1"], ["ttft:1 ttft:2"]):
        with pytest.raises(MetricsError):
            parse_goodput(bad)
    for bad in ("0,1", "fast", "2,2"):
        with pytest.raises(MetricsError):
            parse_qps(bad)


def run(*args):
    return CliRunner().invoke(main, ["simulate", "--model", "Llama-3-8B", *map(str, args)])


def test_a_load_sweep_writes_a_row_a_load_plots_and_vllm_result_files(tmp_path):
    out = tmp_path / "sweep"
    done = run(
        "--qps",
        "2,8",
        "-n",
        120,
        "--goodput",
        "ttft:500 tpot:50",
        "--metric-percentiles",
        "50,99.9",
        "--save-result",
        "--label",
        "mine",
        "--metadata",
        "gpu=h100",
        "-o",
        out,
    )
    assert done.exit_code == 0, done.output
    rows = json.loads((out / "load_sweep.json").read_text())["loads"]
    assert [r["load"] for r in rows] == ["2 QPS", "8 QPS"]
    assert rows[0]["request_goodput"] is not None and "p99.9_itl_ms" in rows[0]
    assert (out / "load_curves.png").stat().st_size > 0 and (out / "cdf.png").stat().st_size > 0
    assert (out / "qps-2" / "requests.parquet").is_file() and (out / "qps-8" / "serving.json").is_file()
    saved = sorted(out.glob("mine-*qps-Llama-3-8B-*.json"))
    assert len(saved) == 2
    result = json.loads(saved[0].read_text())
    for key in (
        "date",
        "label",
        "model_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "completed",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "total_token_throughput",
        "mean_ttft_ms",
        "median_tpot_ms",
        "std_itl_ms",
        "p99.9_e2el_ms",
        "duration",
    ):
        assert key in result, key
    assert result["gpu"] == "h100" and result["num_prompts"] == 120 and result["capsim"]["kind"] == "simulated"
    assert "TTFT P99.9" in done.output and "good req/s" in done.output


def test_users_and_the_automatic_sweep(tmp_path):
    done = run("--concurrency", "1,4", "-n", 60, "-o", tmp_path / "users")
    assert done.exit_code == 0, done.output
    rows = json.loads((tmp_path / "users" / "load_sweep.json").read_text())["loads"]
    assert [r["load"] for r in rows] == ["1 users", "4 users"] and rows[1]["request_throughput"] > rows[0][
        "request_throughput"
    ]
    done = run("--qps", "auto", "--sweep-points", 3, "-n", 60, "-o", tmp_path / "auto")
    assert done.exit_code == 0, done.output
    rows = json.loads((tmp_path / "auto" / "load_sweep.json").read_text())["loads"]
    assert [r["kind"] for r in rows] == ["synchronous", "rate", "rate", "rate", "throughput"]
    rates = [r["request_rate"] for r in rows[1:4]]
    assert rates == sorted(rates) and rates[-1] > rows[-1]["request_throughput"]  # past saturation


def test_familiar_flags_apply(tmp_path):
    done = run(
        "--request-rate",
        3,
        "--num-prompts",
        40,
        "--random-input-len",
        300,
        "--random-output-len",
        20,
        "--burstiness",
        0.25,
        "--max-num-seqs",
        7,
        "--max-num-batched-tokens",
        256,
        "-o",
        tmp_path / "a",
    )
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())["info"]
    assert summary["system"]["max_batch_size"] == 7 and summary["system"]["token_budget"] == 256
    assert summary["workload"]["trace"] == "random" and summary["workload"]["arrival"] == "gamma"
    import pyarrow.parquet as pq

    requests = pq.read_table(tmp_path / "a" / "requests.parquet")
    assert set(requests.column("prompt_tokens").to_pylist()) == {300} and requests.num_rows == 40


def test_warm_up_and_cool_down_requests_are_left_out_of_the_figures(tmp_path):
    args = ("--concurrency", 4, "--random-input-len", 512, "--random-output-len", 32, "-n", 40)
    whole = run(*args, "-o", tmp_path / "whole")
    window = run(*args, "--warmup-requests", 8, "--cooldown-requests", 4, "-o", tmp_path / "window")
    assert whole.exit_code == 0 and window.exit_code == 0, window.output
    assert "the first 8 and the last 4 requests sent" in window.output
    figures = {name: json.loads((tmp_path / name / "serving.json").read_text()) for name in ("whole", "window")}
    assert figures["whole"]["completed"] == 40 and figures["window"]["completed"] == 28
    import pyarrow.parquet as pq

    ids = pq.read_table(tmp_path / "window" / "requests.parquet").column("id").to_pylist()
    assert sorted(ids) == list(range(8, 36))  # the same trial; only what is measured differs


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["--qps", "1", "-n", "10", "--warmup-requests", "6", "--cooldown-requests", "4"],
            "leave none of the 10 requests",
        ),
        (["--qps", "2", "--concurrency", "4"], "drop --qps"),
        (["--qps", "2", "--sweep-points", "4"], "--sweep-points"),
        (["--qps", "1,2", "--save-result", "--result-filename", "x.json"], "several loads"),
        (["--qps", "1", "--result-dir", "x"], "add --save-result"),
        (["--qps", "1", "--goodput", "ttft=1"], "METRIC:MILLISECONDS"),
        (["--qps", "1", "--goodput", "ttft:200", "tpot:50"], "one value"),
        (["--qps", "1", "--random-input-len", "10", "--trace", "chat"], "drop --trace"),
        (["--qps", "1", "--burstiness", "2", "--arrival", "constant"], "--burstiness"),
        (["-n", "5"], "say the load"),
        (["--qps", "0"], "positive"),
    ],
)
def test_options_that_cannot_apply_are_refused(args, words, tmp_path):
    done = run(*args, "-o", tmp_path / "x")
    assert done.exit_code == 2 and words in done.output, done.output
    assert len(done.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content", ['{"info": {}, "loads": [1]}', '{"info": {}, "loads": []}', '{"info": 3, "loads": [{}]}', "[1", "{}"]
)
def test_compare_refuses_folders_that_hold_no_sweep(content, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "load_sweep.json").write_text(content)
    (tmp_path / "b").mkdir()
    done = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c")])
    assert done.exit_code == 2 and "not a readable capsim result" in done.output, done.output


def test_arrivals_are_described_as_the_loads_sent_them_and_burstiness_is_written_plainly(tmp_path):
    users = run(
        "--concurrency", "1,4", "-n", 16, "--random-input-len", 64, "--random-output-len", 8, "-o", tmp_path / "u"
    )
    assert users.exit_code == 0, users.output
    assert "closed loop" in users.output.splitlines()[0] and "poisson" not in users.output.splitlines()[0]
    info = json.loads((tmp_path / "u" / "users-4" / "summary.json").read_text())["info"]
    assert info["workload"]["arrival"] == "closed loop"
    bursty = run(
        "--request-rate",
        3,
        "--num-prompts",
        20,
        "--random-input-len",
        64,
        "--random-output-len",
        8,
        "--burstiness",
        0.5,
        "--save-result",
        "--result-filename",
        "r.json",
        "-o",
        tmp_path / "b",
    )
    assert bursty.exit_code == 0, bursty.output
    assert json.loads((tmp_path / "b" / "r.json").read_text())["burstiness"] == 0.5  # not 0.4999999999999999


def test_compare_says_when_the_runs_are_of_different_deployments(tmp_path):
    small = ["--qps", 2, "-n", 16, "--random-input-len", 64, "--random-output-len", 8]
    assert run(*small, "-o", tmp_path / "a").exit_code == 0
    other = CliRunner().invoke(main, ["simulate", "--model", "Mistral-7B", *map(str, small), "-o", str(tmp_path / "b")])
    assert other.exit_code == 0, other.output
    compared = CliRunner().invoke(
        main, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c")]
    )
    assert compared.exit_code == 0, compared.output
    assert "different deployments" in compared.output and "nan" not in compared.output.lower()
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["same_deployment"] is False


def simulate_cli(*args):
    return CliRunner().invoke(main, ["simulate", *map(str, args)])


def test_against_replays_a_folder_s_requests_and_loads_bit_for_bit(tmp_path):
    """A result folder records its workload, warm-up and loads; `simulate --against` runs them
    again on the deployment given: on the same deployment every figure comes out the same, and
    an automatic sweep replays the rates it ran, not a plan of its own."""
    workload = ["-n", 24, "--random-input-len", 64, "--random-output-len", 8, "--seed", 5, "--warmup-requests", 4]
    first = simulate_cli("--model", "Mistral-7B", "--qps", "auto", "--sweep-points", 2, *workload, "-o", tmp_path / "a")
    assert first.exit_code == 0, first.output
    again = simulate_cli("--model", "Mistral-7B", "--against", tmp_path / "a", "-o", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert "workload and loads: " in again.output and "left out of every figure: the first 4" in again.output
    before = json.loads((tmp_path / "a" / "load_sweep.json").read_text())["loads"]
    after = json.loads((tmp_path / "b" / "load_sweep.json").read_text())["loads"]
    assert after == before and [r["kind"] for r in after] == ["synchronous", "rate", "rate", "throughput"]
    compared = json.loads((tmp_path / "b" / "compare.json").read_text())
    rows = compared["errors"]["simulated: b"]
    assert len(rows) == 4 and all(v == 0 for row in rows for k, v in row.items() if k != "load")
    # the model is the folder's unless said; a faster GPU is slower nowhere
    other = simulate_cli("--hardware", "H200", "--against", tmp_path / "b", "-o", tmp_path / "c")
    assert other.exit_code == 0 and "model: Mistral-7B" in other.output, other.output
    rows = json.loads((tmp_path / "c" / "compare.json").read_text())["errors"]["simulated: c"]
    assert all(row["p50_tpot_ms"] < 0 for row in rows if row["load"] != "throughput")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--qps", "3"], "drop --qps"),
        (["-n", "5", "--trace", "chat"], "drop --trace, --num-requests"),
        (["--model", "Llama-3-8B"], "measured Mistral-7B, and --model says Llama-3-8B"),
        (["-o", "{a}", "--overwrite"], "is the folder --against replays"),
    ],
)
def test_against_refuses_what_would_not_replay_the_folder(args, words, tmp_path):
    assert simulate_cli("--model", "Mistral-7B", "--concurrency", 2, "-n", 6, "-o", tmp_path / "a").exit_code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    args = [str(a).format(a=tmp_path / "a") for a in args]
    done = simulate_cli("--against", tmp_path / "a", *args, *(["-o", tmp_path / "b"] if "-o" not in args else []))
    assert done.exit_code == 2 and words in done.output, done.output
    assert not (tmp_path / "b").exists()
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before  # the measured folder as it was


def test_against_a_folder_that_does_not_record_its_workload(tmp_path):
    assert simulate_cli("--concurrency", 2, "-n", 6, "-o", tmp_path / "a").exit_code == 0
    summary = tmp_path / "a" / "summary.json"
    document = json.loads(summary.read_text())
    del document["info"]["replay"]
    summary.write_text(json.dumps(document))
    done = simulate_cli("--against", tmp_path / "a", "-o", tmp_path / "b")
    assert done.exit_code == 2 and "does not record its workload" in done.output, done.output


def test_every_load_option_is_either_replayed_or_applied_with_against():
    """A new load option must say which it is: one --against takes from the folder (LOAD_PARAMS,
    refused alongside it) or one that shapes the report (applied); never dropped in silence."""
    from capsim.capsearch.cli.options.load import LOAD_PARAMS, load_options

    reported = {"goodput", "percentile_metrics", "metric_percentiles", "save_result", "result_dir"}
    reported |= {"result_filename", "label", "metadata"}
    names = {p.name for p in load_options(lambda **_: None).__click_params__}
    assert set(LOAD_PARAMS) <= names and names - set(LOAD_PARAMS) == reported


def test_against_a_folder_of_the_same_name_keeps_both_series(tmp_path):
    small = ["--model", "Mistral-7B", "--qps", 2, "-n", 12, "--random-input-len", 64, "--random-output-len", 8]
    assert simulate_cli(*small, "-o", tmp_path / "a" / "run").exit_code == 0
    done = simulate_cli("--against", tmp_path / "a" / "run", "-o", tmp_path / "b" / "run")
    assert done.exit_code == 0, done.output
    errors = json.loads((tmp_path / "b" / "run" / "compare.json").read_text())["errors"]
    assert list(errors) == ["simulated: run (replay)"] and len(errors["simulated: run (replay)"]) == 1
