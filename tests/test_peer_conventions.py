"""The peers' configs, flags and SLO semantics as they are, and no option silently dropped."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from capsim.capsearch.capacity.slo import Deadline, TbtTtft
from capsim.capsearch.cli import main
from capsim.capsearch.experiments.config import load_config
from capsim.sim import SystemSpec, simulate
from capsim.sim.policies import Orca, VllmV0
from capsim.sim.request import Request
from capsim.sim.scheduler import KVPool, SchedulerConfig
from capsim.traces import Workload

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
ONE_SYSTEM = [
    "--model",
    "Mistral-7B",
    "--hardware",
    "A100-80GB-SXM",
    "--scheduler",
    "sarathi",
    "--trace",
    "chat",
    "-n",
    "200",
    "--start-qps",
    "2",
    "--executor",
    "serial",
]


def run(args, tmp_path, name="out"):
    result = CliRunner().invoke(
        main, ["search", *map(str, args), "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / name)]
    )
    return result


def rows(tmp_path, name="out"):
    with open(tmp_path / name / "capacity.csv") as f:
        return list(csv.DictReader(f))


def reference(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} not found (../shared is absent)")
    return path


# ---- percentiles and flags --------------------------------------------------------------------


def test_fractions_and_percentages_give_the_same_search(tmp_path):
    deadline = ["--slo-type", "deadline", "--tbt-slo", "0.1", "--ttft-slack-slo", "0.5"]
    fraction = run([*ONE_SYSTEM, *deadline, "--deadline-miss-rate-percentile", "0.99"], tmp_path, "a")
    percent = run([*ONE_SYSTEM, *deadline, "--deadline-miss-rate-percentile", "99"], tmp_path, "b")
    assert fraction.exit_code == 0 and percent.exit_code == 0, fraction.output + percent.output
    a, b = rows(tmp_path, "a")[0], rows(tmp_path, "b")[0]
    assert a["capacity_qps"] == b["capacity_qps"] and a["slo"] == b["slo"]
    assert a["slo"].startswith("P99 miss") and "P99 deadline miss rate" in a["slo_clauses"]


def test_sarathi_flags_as_they_are(tmp_path):
    result = run(
        [
            *ONE_SYSTEM,
            "--tbt-slo-value",
            "0.1",
            "--tbt-slo-quantile",
            "0.99",
            "--scheduling-delay-slo-value",
            "2",
            "--scheduling-delay-slo-quantile",
            "0.5",
            "--min-search-granularity",
            "5",
            "--time-limit",
            "30",
        ],
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    row = rows(tmp_path)[0]
    assert row["slo_clauses"] == "P99 TBT <= 0.1 s; P50 sched delay <= 2 s"
    assert "trial time limit: 1800 s simulated" in result.output and "finished ones only" in row["conventions"]
    trials = [float(t) for t in (row["capacity_qps"], row["failing_qps"])]
    assert trials[1] / trials[0] == pytest.approx(1.05, rel=1e-3)  # one grid step of 5%


def test_the_clauses_decide_the_slo_type_and_the_output_names_each_default(tmp_path):
    plain = run([*ONE_SYSTEM, "--tbt-slo", "0.1"], tmp_path, "plain")  # a TBT clause: tbt_ttft, capsim's defaults
    sarathi = run([*ONE_SYSTEM, "--tbt-slo-value", "0.1"], tmp_path, "sarathi")
    etalon = run(
        [
            *ONE_SYSTEM,
            "--slo-type",
            "tbt_ttft",
            "--tbt-slo",
            "0.1",
            "--tbt-percentile",
            "99",
            "--slo-defaults",
            "etalon",
        ],
        tmp_path,
        "etalon",
    )  # Etalon's defaults fill only the fields of the type asked, and are named
    slack = run(
        [*ONE_SYSTEM, "--tbt-slo", "0.1", "--ttft-slack-slo", "0.5"], tmp_path, "slack"
    )  # a slack clause: deadline
    assert all(r.exit_code == 0 for r in (plain, sarathi, etalon, slack)), plain.output + etalon.output + slack.output
    assert rows(tmp_path, "plain")[0]["slo"] == "P99 TBT<=0.1s, P50 sched<=2s"
    assert (
        "from capsim's defaults: first-token limit 2 s, first-token percentile 50"
        in rows(tmp_path, "plain")[0]["conventions"]
    )
    assert rows(tmp_path, "sarathi")[0]["slo"] == "P99 TBT<=0.1s, P50 sched<=2s"
    assert rows(tmp_path, "etalon")[0]["slo"] == "P99 TBT<=0.1s, P90 TTFT<=0.1s"
    assert (
        "from Etalon's defaults: first-token limit 0.1 s, first-token percentile 90"
        in rows(tmp_path, "etalon")[0]["conventions"]
    )
    assert rows(tmp_path, "slack")[0]["slo"].startswith("P99 miss<=0.1 (TBT 0.1s, slack 0.5s)")
    mixed = run([*ONE_SYSTEM, "--tpot-slo", "0.1", "--ttft-slack-slo", "0.5"], tmp_path, "mixed")
    assert mixed.exit_code == 2 and "clauses of different SLO types" in mixed.output
    both = run([*ONE_SYSTEM, "--tbt-slo", "0.1", "--tbt-slo-value", "0.2"], tmp_path, "both")
    assert both.exit_code == 2 and "set the same field" in both.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--slo-type", "ttft_tpot", "--deadline-miss-rate-slo", "0.2"], "does not use --deadline-miss-rate-slo"),
        (["--slo-type", "tbt_ttft", "--tpot-slo", "0.1"], "does not use --tpot-slo"),
        (["--slo-type", "tbt_ttft", "--ttft-slack-slo", "0.3"], "does not use --ttft-slack-slo"),
        (["--tbt-percentile", "25"], "P25 read as a percentage"),
        (["--tbt-percentile", "0.3"], "P30 read as a fraction, P0.3 as a percentage"),
        (["--pipeline-scheduling", "virtual_engines"], "--pipeline-scheduling applies with --pp > 1"),
        (["--slo-type", "tbt_ttft", "--tbt-percentile", "0"], "fraction in (0, 1] or a percentage"),
        (["--tbt-slo-quantile", "150"], "fraction in (0, 1] or a percentage"),
        (["--profile", "nope.parquet"], "does not exist"),
        (["--granularity", "0"], "--granularity must be a fraction"),
    ],
)
def test_bad_slo_and_search_flags_are_refused(tmp_path, args, message):
    result = run([*ONE_SYSTEM, *args], tmp_path)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


# ---- configs: overrides applied or refused -------------------------------------------------------


def test_an_option_with_a_config_is_applied_and_said(tmp_path):
    result = run(
        [
            "--config-path",
            "mistral7b_strict",
            "--hardware",
            "H100",
            "-n",
            "150",
            "--seed",
            "3",
            "--start-qps",
            "2",
            "--executor",
            "serial",
        ],
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    table = rows(tmp_path)
    assert {r["hardware"] for r in table} == {"H100-SXM"}
    assert "150 requests" in table[0]["conventions"] and "seed 3" in table[0]["conventions"]
    for flag in (
        "--hardware H100-SXM: applied",
        "--num-requests 150: applied",
        "--seed 3: applied",
        "--start-qps 2: applied",
    ):
        assert flag in result.output


def test_vllms_burstiness_with_a_config_is_applied_and_said(tmp_path):
    result = run(
        [
            "--config-path",
            "mistral7b_strict",
            "-n",
            "60",
            "--burstiness",
            "0.25",
            "--max-iterations",
            "1",
            "--executor",
            "serial",
        ],
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert "--burstiness: gamma arrivals (cv 2) applied" in result.output
    assert all(
        r["workload"]["arrival"] == "gamma" and r["workload"]["cv"] == 2.0
        for r in json.loads((tmp_path / "out" / "capacity.json").read_text())
    )


def test_random_lengths_with_a_config_are_refused(tmp_path):
    result = run(["--config-path", "mistral7b_strict", "--random-input-len", "100"], tmp_path)
    assert result.exit_code == 2 and "--random-input-len" in result.output and "names its own traces" in result.output


@pytest.mark.parametrize(
    "flag",
    [["--scheduler", "orca"], ["--trace", "arxiv"], ["--tp", "2"], ["--chunk-size", "256"], ["--model", "Yi-34B"]],
)
def test_an_option_that_names_a_configs_jobs_is_refused(tmp_path, flag):
    result = run(["--config-path", "mistral7b_strict", *flag], tmp_path)
    assert result.exit_code == 2 and flag[0] in result.output and "cannot apply to a config" in result.output


def test_the_bare_command_takes_workload_options(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "search",
            "-n",
            "120",
            "--arrival",
            "gamma",
            "--cv",
            "2",
            "--start-qps",
            "3",
            "--max-iterations",
            "2",
            "--executor",
            "serial",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = rows(tmp_path)
    assert len(table) == 12 and all("120 requests" in r["conventions"] and "gamma" in r["conventions"] for r in table)
    assert all(int(r["trials"]) <= 2 for r in table)


# ---- results that tell the truth --------------------------------------------------------------------


def test_a_search_that_finds_nothing_says_so(tmp_path):
    high = run([*ONE_SYSTEM, "--start-qps", "1e300", "--max-iterations", "2"], tmp_path, "high")
    short = run([*ONE_SYSTEM, "--start-qps", "0.5", "--max-iterations", "2"], tmp_path, "short")
    assert high.exit_code == 0 and short.exit_code == 0
    found = rows(tmp_path, "high")[0]
    assert (
        found["capacity_qps"] == "" and found["outcome"].startswith("not found below") and found["converged"] == "False"
    )
    assert found["failed_first"]  # which clause failed
    above = rows(tmp_path, "short")[0]
    assert (
        above["outcome"].startswith("above ") and above["bracket"].startswith(">= ") and above["converged"] == "False"
    )
    assert "not found below" in high.output


def test_rows_show_the_tail_at_capacity(tmp_path):
    result = run([*ONE_SYSTEM, "--tbt-slo-value", "0.1"], tmp_path)
    assert result.exit_code == 0
    row = rows(tmp_path)[0]
    assert row["converged"] == "True" and row["outcome"] == "converged"
    assert float(row["tbt_max_s"]) >= float(row["tbt_p99.9_s"]) >= float(row["tbt_p99_s"]) > 0
    assert row["hardware"] == "A100-80GB-SXM" and row["scheduler_policy"] == "sarathi" and row["chunk_size"] == ""


# ---- the peers' configs, read unchanged -------------------------------------------------------------


def test_every_etalon_config_loads():
    folder = reference("etalon-configs")
    for path in sorted(folder.glob("*.yml")):
        experiment = load_config(path)
        assert experiment.jobs and experiment.convention == "etalon", path.name
        assert experiment.slo_source == "Etalon's defaults"
        assert experiment.jobs[0].slos == (Deadline(tbt=0.03, ttft_slack=0.3, miss_rate=0.1, miss_rate_percentile=99),)
        for job in experiment.jobs:
            assert job.system.max_batch_size == 256 and job.system.hardware == "H100-SXM"
            assert job.workload.cap_gaps and job.workload.shuffle and job.workload.seed == 42
            assert job.trial.completed_only and job.trial.send_window_s == 1200
            assert job.workload.num_requests == 1000
    llama = load_config(folder / "llama_8b.yml")
    kinds = {(dict(j.labels)["scheduler"], dict(j.labels)["trace"]): j for j in llama.jobs}
    assert set(kinds) == {("vllm", "sharegpt"), ("sarathi", "sharegpt"), ("vllm", "arxiv"), ("sarathi", "arxiv")}
    vllm, sarathi = kinds[("vllm", "arxiv")].system, kinds[("sarathi", "arxiv")].system
    assert (vllm.scheduler, vllm.token_budget, vllm.max_model_len) == ("vllm_v0", None, 4 * 8192)
    assert (sarathi.scheduler, sarathi.token_budget) == ("sarathi", 512)
    assert kinds[("vllm", "sharegpt")].workload.max_total_tokens == 8192  # Etalon pairs sharegpt with 8192 max tokens
    assert any("open-loop" in note for note in llama.notes)
    mixtral = load_config(folder / "mixtral.yml")
    assert {j.system.model for j in mixtral.jobs} == {"Mixtral-8x7B"} and {j.system.tp for j in mixtral.jobs} == {4}


def test_the_osdi_configs_run_on_the_papers_gpus_with_the_papers_workload():
    folder = reference("sarathi-osdi-configs")
    gpus = {"mistral7b": "A100-80GB-PCIe", "yi34": "A100-80GB-PCIe", "falcon180b": "A100-80GB-PCIe", "llama70b": "A40"}
    for path in sorted(folder.glob("*.yml")):
        experiment = load_config(path)
        assert {j.system.hardware for j in experiment.jobs} == {gpus[path.stem.split("_")[0]]}, path.name
        assert experiment.slo_source == "Sarathi-Serve's defaults"
        assert experiment.jobs[0].slos == (TbtTtft(tbt=0.2, tbt_percentile=99, ttft=2.0, ttft_percentile=50),)
        assert all(j.workload.cap_gaps and j.workload.seed == 42 for j in experiment.jobs)
        assert any("Sarathi-Serve paper's GPU" in note for note in experiment.notes)
    shipped = Path(__file__).resolve().parents[1] / "capsearch" / "experiments" / "configs"
    for path in sorted(shipped.glob("*.yml")):  # the shipped copies are the OSDI experiments, SLOs added
        mine, theirs = load_config(path), load_config(folder / path.name)
        assert [(j.labels, j.system, j.start_qps) for j in mine.jobs] == [
            (j.labels, j.system, j.start_qps) for j in theirs.jobs
        ]


def test_a_missing_trace_file_is_a_clear_error(tmp_path):
    config = tmp_path / "exp.yml"
    config.write_text(
        (Path(__file__).resolve().parents[1] / "capsearch" / "experiments" / "configs" / "mistral7b_strict.yml")
        .read_text()
        .replace("trace_file: chat", "trace_file: ./mine/requests.csv")
    )
    result = run(["--config-path", config], tmp_path)
    assert result.exit_code == 2 and "trace file ./mine/requests.csv not found" in result.output


# ---- the simulator as Sarathi-Serve and vLLM v0 schedule ---------------------------------------------


def requests(n, prompt=64, output=32):
    return [Request(i, float(i), prompt, output) for i in range(n)]


def test_pipeline_slots_share_one_batch_limit_and_kv_pool():
    config = SchedulerConfig(max_batch_size=4, block_size=16, num_blocks=1000, watermark=0.0, max_model_len=4096)
    pool = KVPool(config.num_blocks)
    first, second = VllmV0(config, pool), VllmV0(config, pool)
    for r in requests(10):
        first.add(r)
    assert len(second.waiting) == 10  # one queue
    assert len(first.schedule(0.0).prefills) == 4
    assert second.schedule(0.0) is None and first.running == second.running == 4  # the limit covers both slots
    assert first.free_blocks == second.free_blocks == 1000 - 4 * 4
    apart = [VllmV0(config), VllmV0(config)]  # vLLM's virtual engines: a limit and a pool each
    for engine in apart:
        for r in requests(10):
            engine.add(r)
        engine.schedule(0.0)
    assert [e.running for e in apart] == [4, 4]


@pytest.mark.parametrize("mode", ["one_scheduler", "virtual_engines"])
def test_pipeline_modes_finish_every_request_within_the_batch_limit(mode):
    arrivals = np.arange(300) * 0.02
    workload = Workload.from_arrays([200] * 300, [50] * 300, arrivals)
    system = SystemSpec(
        model="Llama-2-70B",
        hardware="A40",
        tp=4,
        pp=2,
        scheduler="orca",
        max_batch_size=8,
        max_model_len=4096,
        pipeline_scheduling=mode,
    )
    result = simulate(system, workload)
    assert result.finished().all()
    batches = result.batches
    sizes = batches.column("prefill_seqs").to_numpy() + batches.column("decode_seqs").to_numpy()
    engines = batches.column("engine").to_numpy()
    # in flight together: a batch and the other slot's batch just before it
    pairs = [sizes[i] + sizes[i - 1] for i in range(1, len(sizes)) if engines[i] != engines[i - 1]]
    if mode == "one_scheduler":
        assert max(pairs) <= 8
    else:
        assert max(pairs) > 8 and sizes.max() <= 8


def test_the_victim_is_the_latest_arrival_not_the_last_to_start_decoding():
    config = SchedulerConfig(max_batch_size=8, block_size=16, num_blocks=100, watermark=0.0, max_model_len=4096)
    scheduler = VllmV0(config)
    late, early = Request(0, 5.0, 32, 100), Request(1, 1.0, 32, 100)
    scheduler.add(late)  # re-admitted requests join ahead of newer ones: arrival order and decode order differ
    scheduler.add(early)
    batch = scheduler.schedule(0.0)
    scheduler.complete(batch, 1.0)
    assert list(scheduler.decoding) == [0, 1]  # late joined the decode set first
    scheduler.free_blocks = 0  # no room for the next tokens: someone must go
    batch = scheduler.schedule(1.0)
    assert batch.preempted == [late] and early.id in scheduler.decoding


def test_orca_keeps_no_watermark():
    assert (
        SystemSpec(scheduler="orca", model="Mistral-7B", hardware="A100-80GB-SXM").scheduler_config().watermark == 0.0
    )
    assert (
        SystemSpec(scheduler="vllm_v0", model="Mistral-7B", hardware="A100-80GB-SXM").scheduler_config().watermark
        == 0.01
    )
    assert Orca.default_watermark == 0.0


def test_etalons_default_config_with_a_tbt_ttft_command_runs_to_the_end(tmp_path):
    """Llama-3-8B TP1, Mixtral-8x7B TP4 and Llama-3-70B TP8 at up to 16k tokens: once a latency model
    priced a batch below zero there and SimPy died on a negative delay."""
    config = reference("etalon-configs") / "default.yml"
    result = run(
        [
            "--config-path",
            config,
            "--slo-type",
            "tbt_ttft",
            "--tbt-slo",
            "0.03",
            "--tbt-percentile",
            "0.9",
            "--ttft-slo",
            "0.3",
            "--ttft-percentile",
            "0.9",
            "--max-iterations",
            "3",
            "-n",
            "64",
        ],
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert len(rows(tmp_path, "out/tbt_ttft")) == 12 and (tmp_path / "out" / "tbt_ttft" / "capacity.png").is_file()


def test_etalons_num_clients_and_its_commands_sharing_one_output_dir(tmp_path):
    config = tmp_path / "llama_8b.yml"
    config.write_text(
        (reference("etalon-configs") / "llama_8b.yml").read_text().replace("num_ray_clients", "num_clients")
    )
    base = ["--config-path", config, "-n", "32", "--max-iterations", "1"]
    deadline = run([*base, "--slo-type", "deadline", "--tbt-slo", "0.03"], tmp_path)
    ttft_tpot = run([*base, "--slo-type", "ttft_tpot", "--ttft-slo", "0.3", "--tpot-slo", "0.03"], tmp_path)
    assert deadline.exit_code == 0 and ttft_tpot.exit_code == 0, deadline.output + ttft_tpot.output
    assert (tmp_path / "out" / "deadline" / "capacity.csv").is_file() and (
        tmp_path / "out" / "ttft_tpot" / "capacity.csv"
    ).is_file()


def test_pool_keys_without_disagg_are_refused(tmp_path):
    import yaml

    from capsim.capsearch.cli.search import builtin_config

    data = yaml.safe_load(builtin_config("mistral7b_strict").read_text())
    data["parallel_spec"][0]["prefill_tp"] = 2
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump(data))
    refused = run(["--config-path", config, "-n", "16"], tmp_path)
    assert refused.exit_code == 2 and "add disagg" in refused.output
