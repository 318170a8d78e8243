import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capsim.capsearch.capacity.jobs import JobTrials, SearchJob, run_job, run_jobs
from capsim.capsearch.capacity.search import Capacity, find_capacity, grid_qps
from capsim.capsearch.capacity.slo import TbtTtft
from capsim.capsearch.capacity.trials import TrialCache, run_trial
from capsim.capsearch.capacity.workers import start_fork_server
from capsim.capsearch.experiments.config import ConfigError, load_config
from capsim.sim import SystemSpec, simulate
from capsim.sim.compact import read_compact
from capsim.traces import WorkloadSpec

CAPSIM = str(Path(sys.executable).parent / "capsim")
SYSTEM = SystemSpec(model="Mistral-7B", hardware="A100-80GB-SXM", scheduler="sarathi", token_budget=512)
WORKLOAD = WorkloadSpec("chat", num_requests=300, seed=1, max_total_tokens=8192)
SLO = TbtTtft(tbt=0.1)


def test_search_brackets_the_true_capacity_at_the_granularity():
    seen = []

    def trial(qps):
        seen.append(qps)
        return qps <= 7.3, {}

    capacity, failing, trials = find_capacity(trial, SLO, start_qps=1.0, granularity=0.025)
    assert capacity <= 7.3 < failing and failing / capacity <= 1.025 + 1e-6
    assert len(trials) == len(seen) <= 12


@pytest.mark.parametrize("true", [7.3, 6.0, 9.0, 3.0, 30.0])
def test_a_search_from_an_estimate_gallops_to_the_same_bracket_in_fewer_trials(true):
    """Started at an estimate (a neighbour's capacity, R x one replica's), the first move is small
    and each further one doubles: the same grid bracket as a doubling search from 1 QPS, in fewer
    trials when the estimate is near, and never many more when it is far."""
    oracle = lambda qps: (qps <= true, {})  # noqa: E731
    plain = find_capacity(oracle, SLO, start_qps=1.0)
    near = find_capacity(oracle, SLO, start_qps=7.0, expand=1.1, gallop=True)
    assert near[:2] == plain[:2]  # the same bracket, exact
    assert near[0] <= true < near[1]
    if 0.8 * 7.0 <= true <= 1.25 * 7.0:
        assert len(near[2]) < len(plain[2])
    assert len(near[2]) <= len(plain[2]) + 2


def test_trials_known_from_another_slo_open_the_bracket_at_no_cost():
    """Trials run in full for an earlier SLO are scored again, not run: their highest pass and the
    lowest fail above it open the search, and are listed among its trials."""
    ran = []

    def oracle(qps):
        ran.append(qps)
        return qps <= 7.3, {}

    plain = find_capacity(oracle, SLO, start_qps=1.0)
    ran.clear()
    seeded = find_capacity(oracle, SLO, start_qps=1.0, known=[t["qps"] for t in plain[2]] + [7.123456])
    assert seeded[:2] == plain[:2] and [t["qps"] for t in seeded[2]] == list(plain[:2])
    assert set(ran) == {t["qps"] for t in plain[2]}  # scored again, none run anew; an off-grid QPS is no trial
    # a known pass far below does not turn a search started near the capacity into a long bisection
    ran.clear()
    near = find_capacity(oracle, SLO, start_qps=7.5, expand=1.025, gallop=True, known=[1.0])
    assert near[:2] == plain[:2] and len(ran) <= 1 + 4  # the known one, scored, and four new trials


def test_a_known_fail_below_a_known_pass_at_1_qps_does_not_close_the_bracket():
    """Grid index 0 is 1 QPS: a known pass there is a pass, and a fail below it (not monotone) is
    left out, so the search goes on above it instead of reporting a bracket upside down."""
    below = grid_qps(-28, 0.025)  # 0.5009 QPS
    capacity, failing, _ = find_capacity(
        lambda qps: (qps != below and qps <= 3.0, {}), SLO, start_qps=1.0, known=[below, 1.0]
    )
    assert capacity <= 3.0 < failing and failing / capacity <= 1.025 + 1e-6


def test_a_passing_qps_is_never_lost_even_when_results_are_not_monotone():
    def trial(qps):  # passes low, fails in a window, passes again above it: noise of a real system
        return (qps < 4.0) or (5.0 < qps < 6.0), {}

    capacity, failing, trials = find_capacity(trial, SLO, start_qps=1.0)
    passed = [t["qps"] for t in trials if t["passed"]]
    assert capacity == max(passed)
    assert all(t["qps"] < failing or not t["passed"] for t in trials)


def test_nothing_passes_is_not_found_never_zero():
    capacity, failing, _ = find_capacity(lambda q: (False, {}), SLO, start_qps=2.0, max_trials=50)
    assert capacity is None and failing <= 0.0011
    result = Capacity({}, {}, "slo", capacity, failing)
    assert result.outcome == f"not found below {failing:.3g} QPS" and result.bracket.startswith("< ")
    assert not result.converged


def test_bad_search_arguments():
    with pytest.raises(ValueError, match="start QPS must be positive"):
        find_capacity(lambda q: (True, {}), SLO, start_qps=0)


def test_failing_trials_stop_early_and_passing_ones_never_do(tmp_path):
    cache = TrialCache(tmp_path)
    requests = WORKLOAD.requests()
    rule = SLO.early_stop(len(requests), int(requests.output_tokens.sum()))
    failing, _ = run_trial(SYSTEM, WORKLOAD, 40.0, cache, rule)
    assert failing.info["stopped_early"] and not SLO.score(failing)["passed"]
    assert "stopped early" in failing.column("reason")[failing.column("status") == "unfinished"][0]
    passing, _ = run_trial(SYSTEM, WORKLOAD, 1.0, cache, rule)
    assert passing.info["stopped_early"] is None and SLO.score(passing)["passed"]
    # the cut trial serves only its own rule: another SLO runs it again in full
    again, cached = run_trial(SYSTEM, WORKLOAD, 40.0, cache, None)
    assert not cached and again.info["stopped_early"] is None


def test_a_queue_that_moves_but_starts_requests_late_stops_the_trial_early():
    """Past capacity the queue drains in order, so few requests are ever waiting long at once, yet
    each starts later than the last: those first scheduled past the limit count as violations too."""
    workload = WorkloadSpec("arxiv", num_requests=300, seed=42)
    requests = workload.requests()
    rule = SLO.early_stop(len(requests), int(requests.output_tokens.sum()))
    cut = simulate(SYSTEM, workload.at_qps(1.5), early_stop=rule)
    assert cut.info["stopped_early"] == "more than 150 requests waited over 2 s"
    full = simulate(SYSTEM, workload.at_qps(1.5))
    assert full.info["stopped_early"] is None and "P50 sched delay" in SLO.score(full)["failed_clauses"][0]
    assert (full.column("scheduled_s") - full.column("arrival_s") > 2.0).sum() > 150  # all scheduled, late


def test_a_cut_trial_fails_the_clause_that_cut_it_and_no_other(tmp_path):
    """Scored as it stands, a trial cut short would fail its TBT too (its unfinished requests'
    tokens count as violations): the cut decides the waiting clause only, and says so."""
    workload = WorkloadSpec("arxiv", num_requests=300, seed=42)
    job = SearchJob(SYSTEM, workload, (SLO,), 1.5, ())
    trials = JobTrials(job, workload, TrialCache(tmp_path), SYSTEM.latency_model(), early_stop=True)
    trial, _ = trials.for_slo(SLO, {})
    passed, details = trial(1.5)
    assert not passed and details["stopped_early"]
    assert details["failed_clauses"] == ["P50 sched delay <= 2 s not met (cut short)"]
    assert details["stopped_early"] == "more than 150 requests waited over 2 s"


def test_a_trial_cut_by_one_clause_serves_every_slo_that_has_it(tmp_path):
    cache = TrialCache(tmp_path)
    workload = WorkloadSpec("arxiv", num_requests=300, seed=42)
    requests = workload.requests()

    def trial(slo):
        return run_trial(SYSTEM, workload, 1.5, cache, slo.early_stop(len(requests), int(requests.output_tokens.sum())))

    cut, cached = trial(TbtTtft(tbt=0.1))
    assert not cached and cut.info["stopped_early"] == "more than 150 requests waited over 2 s"
    again, cached = trial(TbtTtft(tbt=0.5))  # another TBT limit, the same P50 scheduling delay <= 2 s
    assert cached and again.requests.num_rows == cut.requests.num_rows and not SLO.score(again)["passed"]
    other, cached = trial(TbtTtft(tbt=0.1, ttft=30.0))  # a waiting clause the cut trial does not decide
    assert not cached and other.info["stopped_early"] is None


def test_trials_are_cached_by_content_not_by_slo(tmp_path):
    job = SearchJob(
        SYSTEM, WORKLOAD, (TbtTtft(tbt=0.1), TbtTtft(tbt=0.5)), 2.0, (("scheduler", "sarathi"),), early_stop=False
    )
    first = run_job(job, str(tmp_path))
    second = run_job(job, str(tmp_path))
    assert [c.capacity_qps for c in first] == [c.capacity_qps for c in second]
    assert all(t["cached"] for c in second for t in c.trials)
    shared = {t["qps"] for t in first[0].trials} & {t["qps"] for t in first[1].trials}
    assert shared  # the second SLO landed on QPS values the first one had run
    assert all(t["cached"] for t in first[1].trials if t["qps"] in shared)
    # the second search opened with the first one's full trials: fewer new trials than alone
    alone = run_job(dataclasses.replace(job, slos=job.slos[1:]), str(tmp_path / "alone"))[0]
    assert sum(not t["cached"] for t in first[1].trials) < len(alone.trials)
    assert first[1].capacity_qps == alone.capacity_qps


def test_short_trials_place_the_search_and_full_ones_decide_it(tmp_path):
    """With a screen, trials of a quarter of the requests place the capacity to 10%, and full
    trials decide it: the same capacity and failing QPS as a search of full trials alone, fewer
    full trials, and the short ones marked, listed first and counted apart."""
    workload = WorkloadSpec("chat", num_requests=1024, seed=1, max_total_tokens=8192)
    job = SearchJob(SYSTEM, workload, (SLO,), 2.0, (("scheduler", "sarathi"),))
    screened = run_job(job, str(tmp_path / "a"))[0]
    plain = run_job(dataclasses.replace(job, screen=False), str(tmp_path / "b"))[0]
    assert (screened.capacity_qps, screened.failing_qps) == (plain.capacity_qps, plain.failing_qps)
    assert screened.converged and plain.converged
    short = [t for t in screened.trials if t.get("screen")]
    full = [t for t in screened.trials if not t.get("screen")]
    assert short and screened.trials[: len(short)] == short and all(t["requests"] == 256 for t in short)
    assert {screened.capacity_qps, screened.failing_qps} <= {t["qps"] for t in full}
    assert len(full) < len(plain.trials)
    assert "decided by full ones" in screened.conventions["search"] and "search" not in plain.conventions
    # a workload too short to screen (a quarter under 256 requests) is searched on full trials only
    small = run_job(dataclasses.replace(job, workload=WORKLOAD), str(tmp_path / "a"))[0]
    assert not any(t.get("screen") for t in small.trials)


def test_workers_run_under_the_search_s_environment_and_folder(tmp_path, monkeypatch):
    """Workers fork from a fork server that may have started earlier, under another $CAPSIM_CACHE
    and working folder (an earlier search of this process): each job runs under the search's own."""
    start_fork_server()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPSIM_CACHE", str(tmp_path / "home-cache"))
    jobs = [SearchJob(SYSTEM, WORKLOAD, (slo,), 2.0, (("scheduler", "sarathi"),)) for slo in (SLO, TbtTtft(tbt=0.5))]
    run_jobs(jobs, executor="process", workers=2)  # the cache $CAPSIM_CACHE names
    assert list((tmp_path / "home-cache" / "trials").glob("*.trial.parquet"))
    run_jobs(jobs, executor="process", workers=2, cache_dir="relative")  # a folder relative to this one
    assert list((tmp_path / "relative").glob("*.trial.parquet"))


SEARCH = [
    CAPSIM,
    "search",
    "--model",
    "Mistral-7B",
    "--hardware",
    "A100-80GB-SXM",
    "--scheduler",
    "sarathi",
    "--chunk-size",
    "512",
    "--trace",
    "chat",
    "-n",
    "300",
    "--start-qps",
    "0.5",
    "--tbt-slo-value",
    "0.1",
    "--executor",
    "serial",
]


def test_search_killed_with_sigkill_resumes_from_its_cache(tmp_path):
    cache = tmp_path / "cache"
    victim = subprocess.Popen(
        [*SEARCH, "--cache-dir", cache, "-o", tmp_path / "a"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline and len([p for p in cache.glob("*.trial.parquet") if not p.name.startswith(".")]) < 2:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    kept = [p for p in cache.glob("*.trial.parquet") if not p.name.startswith(".")]
    assert len(kept) >= 2
    assert all(read_compact(p).requests.num_rows == 300 for p in kept)  # whole entries only
    subprocess.run([*SEARCH, "--cache-dir", cache, "-o", tmp_path / "b"], check=True, capture_output=True)
    subprocess.run([*SEARCH, "--cache-dir", tmp_path / "fresh", "-o", tmp_path / "c"], check=True, capture_output=True)
    resumed = json.loads((tmp_path / "b" / "capacity.json").read_text())[0]
    fresh = json.loads((tmp_path / "c" / "capacity.json").read_text())[0]
    assert resumed["capacity_qps"] == fresh["capacity_qps"]
    assert sum(t["cached"] for t in resumed["trials"]) >= len(kept) - 1


def test_the_cli_writes_the_capacity_table_and_plot(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [*SEARCH, "--tbt-slo-value", "0.5", "--cache-dir", tmp_path / "cache", "-o", out],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = (out / "capacity.csv").read_text().splitlines()
    assert rows[0].startswith("model,scheduler,trace") and len(rows) == 3
    assert (out / "capacity.png").stat().st_size > 1000
    assert "capacity" in result.stdout


def test_the_cli_screens_unless_told_not_to(tmp_path):
    """`--no-screen` is applied, not ignored: the same capacity from full trials only."""
    longer = [*SEARCH[:-2], "-n", "1024", "--executor", "serial", "--cache-dir", tmp_path / "cache"]
    runs = {}
    for flag in ("--screen", "--no-screen"):
        done = subprocess.run([*longer, flag, "-o", tmp_path / flag], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[flag] = json.loads((tmp_path / flag / "capacity.json").read_text())[0], done.stdout
    (screened, words), (plain, plain_words) = runs["--screen"], runs["--no-screen"]
    assert any(t.get("screen") for t in screened["trials"]) and not any(t.get("screen") for t in plain["trials"])
    assert screened["capacity_qps"] == plain["capacity_qps"]
    assert "placed by short trials of 256 requests" in words and "placed by short" not in plain_words


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--start-qps", "0"], "--start-qps must be a positive number"),
        (["--tbt-slo-value", "0.0001"], "below one decode step"),
        (["--model", "Llama-2-70B"], "does not fit"),
        (["--config-path", "nosuch.yml"], "no such config file"),
        (["--max-model-len", "4096"], "longer than the max model length 4096"),
    ],
)
def test_bad_search_input_fails_before_any_trial(tmp_path, extra, message):
    result = subprocess.run(
        [*SEARCH, *extra, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "out"], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_the_sarathi_osdi_configs_load_as_they_are():
    folder = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "sarathi-osdi-configs"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (../shared is absent)")
    for path in sorted(folder.glob("*.yml")):
        experiment = load_config(path, slos=[SLO])
        assert len(experiment.jobs) == 6, path.name
        assert {j.system.scheduler for j in experiment.jobs} == {"vllm_v0", "orca", "sarathi"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("schedulers: [", "invalid YAML"),
        ("schedulers: []\n", "'schedulers' must be a non-empty list"),
        ("bogus: 1\n", "unknown key(s) bogus in the top level"),
    ],
)
def test_bad_configs_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "exp.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, slos=[SLO])
    assert str(path) in str(error.value) and message in str(error.value)


def test_unknown_key_inside_a_section(tmp_path):
    good = (
        Path(__file__).resolve().parents[1] / "capsearch" / "experiments" / "configs" / "mistral7b_strict.yml"
    ).read_text()
    path = tmp_path / "exp.yml"
    path.write_text(good.replace("chunk_size: 512", "chunk_size: 512\n    chunk_sise: 9"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) chunk_sise in schedulers entry 'sarathi_512'"):
        load_config(path)


def test_sweep_on_a_local_ray(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'capsim[ray]')")
    out = tmp_path / "sweep"
    env = os.environ | {"RAY_DISABLE_USAGE_STATS": "1"}
    result = subprocess.run(
        [
            CAPSIM,
            "sweep",
            "--model",
            "Mistral-7B",
            "--hardware",
            "A100-80GB-SXM",
            "--scheduler",
            "sarathi",
            "--chunk-size",
            "512",
            "--trace",
            "chat",
            "-n",
            "200",
            "--start-qps",
            "1",
            "--values",
            "0.05,0.5",
            "--executor",
            "ray",
            "--cache-dir",
            tmp_path / "cache",
            "-o",
            out,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out / "sweep.csv") as f:
        capacities = {row["slo"]: float(row["capacity_qps"]) for row in csv.DictReader(f)}
    assert len(capacities) == 2
    assert capacities["P99 TBT<=0.05s, P50 sched<=2s"] <= capacities["P99 TBT<=0.5s, P50 sched<=2s"]
    assert (out / "sweep.png").is_file()
